"""Hot reads whose SQL Tortoise writes once per shape, then runs with each request's values.

Building a query costs Tortoise far more than running it: resolving filters, cloning querysets and
writing the SQL text took about 0.7 ms of CPU per query on the patient's home screen, against
0.1 ms to run it (issue #18). A read that every request makes (the viewer) or that every screen
makes (a page of check-ins) is therefore declared once as a builder, a function from its values
to a Tortoise query marked with the model it reads, and run through `prepared`:

    @prepared_read(User)
    def _viewer_rows(user_id: UUID) -> ValuesListQuery[Any]:
        return User.filter(id=user_id, is_active=True).values_list(...)

    rows = await prepared(_viewer_rows, user_id=user_id)

The first call of a shape builds the query with stand-in values, finds each stand-in among the
statement's parameters and keeps the SQL text; later calls put the new values where the stand-ins
were and let the query turn the rows into models or values exactly as it would have. The query is
still written once, in Tortoise, with its filters and access conditions where they always were:
only the SQL text is reused.

A shape is the builder, the database's dialect, and for each value its kind: a value the
statement binds (a UUID, text, a number, a time; a list of them counts its length), or one that
changes the statement and is part of the shape itself (None, a bool, an enum member, a list of
enum members). A shape whose statement cannot be matched to its values (a value
Tortoise rewrote, a query with prefetches or related selects) is run as a plain query every time
and logged once: slower, never wrong.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from tortoise.models import Model
from tortoise.queryset import AwaitableQuery

log = logging.getLogger(__name__)

# A function from a read's values to its Tortoise query (a queryset, values or values_list).
Builder = Callable[..., Any]
B = TypeVar("B", bound=Builder)

# Values a statement binds as parameters: each gets a stand-in of its own type.
_BOUND = (uuid.UUID, str, int, float, datetime, date)
# Values that change the statement's text (IS NULL, a bool's test, IN with enum members).
_SHAPING = (type(None), bool, Enum)
# Shapes kept per process; a builder has a handful (first page or later, a list's length).
MAX_SHAPES = 512


@dataclass(frozen=True)
class _Bound:
    """A parameter of the statement that takes a value of the call: `name`, or its `index`-th
    item when the value is a list, converted by `convert` as Tortoise converted the stand-in."""

    name: str
    index: int | None
    convert: Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Statement:
    query: AwaitableQuery[Any]  # built with the stand-ins; its own _execute turns rows into results
    sql: str
    parameters: tuple[Any, ...]  # a constant, or a `_Bound`


class _Fixed:
    """What a query asks its pypika builder for at execution: the kept SQL and this call's values."""

    __slots__ = ("sql", "values")

    def __init__(self, sql: str, values: list[Any]) -> None:
        self.sql = sql
        self.values = values

    def get_parameterized_sql(self) -> tuple[str, list[Any]]:
        return self.sql, self.values


_statements: dict[Hashable, _Statement | None] = {}
_MISSING: Any = object()  # a shape not met yet (None: met, and not preparable)


async def prepared(build: Builder, **values: Any) -> Any:
    """What `await build(**values)` answers, without building the query again for a known shape."""
    shape = _shape(values)
    if shape is None:
        return await build(**values)
    model: type[Model] | None = getattr(build, "model", None)
    if model is None:  # not marked with @prepared_read: nothing says which database it reads
        return await build(**values)
    db = model._choose_db()
    key = (build, db.capabilities.dialect, shape)
    statement = _statements.get(key, _MISSING)
    if statement is _MISSING:
        statement = _prepare(build, values)
        if len(_statements) >= MAX_SHAPES:
            _statements.clear()
        _statements[key] = statement
        if statement is None:
            log.warning("the read %s runs unprepared: its statement does not match its values", build.__name__)
    if statement is None:
        return await build(**values)
    assert isinstance(statement, _Statement)
    run = copy.copy(statement.query)
    run._db = db
    run.query = _Fixed(statement.sql, [_value(parameter, values) for parameter in statement.parameters])  # type: ignore[assignment]
    return await run._execute()


def _value(parameter: Any, values: dict[str, Any]) -> Any:
    if not isinstance(parameter, _Bound):
        return parameter
    value = values[parameter.name]
    if parameter.index is not None:
        value = value[parameter.index]
    return parameter.convert(value) if parameter.convert is not None else value


def _shape(values: dict[str, Any]) -> tuple[Any, ...] | None:
    """Each value's part of the shape, or None when a value is of no kind this module knows."""
    parts: list[Any] = []
    for name in sorted(values):
        value = values[name]
        if isinstance(value, _SHAPING):
            parts.append((name, "=", value))
        elif isinstance(value, _BOUND):
            parts.append((name, _kind(value)))
        elif isinstance(value, list | tuple):
            if all(isinstance(item, Enum) for item in value):
                parts.append((name, "=", tuple(value)))
            elif value and all(_binds(item) and _kind(item) == _kind(value[0]) for item in value):
                parts.append((name, _kind(value[0]), len(value)))
            else:
                return None
        else:
            return None
    return tuple(parts)


def _binds(value: Any) -> bool:
    return isinstance(value, _BOUND) and not isinstance(value, bool)


def _kind(value: Any) -> Any:
    """A bound value's kind: its type, a UUID of any class (asyncpg has its own), a time with or
    without its zone."""
    if isinstance(value, uuid.UUID):
        return uuid.UUID
    if isinstance(value, datetime):
        return (datetime, value.tzinfo is not None)
    return type(value)


def prepared_read(model: type[Model]) -> Callable[[B], B]:
    """Declares the model a builder reads (its database is the one the statement runs on)."""

    def mark(build: B) -> B:
        build.model = model  # type: ignore[attr-defined]
        return build

    return mark


def _prepare(build: Builder, values: dict[str, Any]) -> _Statement | None:
    stand_ins = {name: _stand_in(value) for name, value in values.items()}
    try:
        query = build(**stand_ins)
        if getattr(query, "_prefetch_map", None) or getattr(query, "_select_related", None):
            return None
        query._choose_db_if_not_chosen()
        query._make_query()
        sql, parameters = query.query.get_parameterized_sql()
    except Exception:  # a stand-in the query refused (text where an enum member goes): run it plain
        log.debug("the read %s cannot be built with stand-ins", build.__name__, exc_info=True)
        return None
    plan = tuple(_match(parameter, stand_ins) for parameter in parameters)
    used = {(p.name, p.index) for p in plan if isinstance(p, _Bound)}
    wanted = {
        (name, index)
        for name, value in stand_ins.items()
        if not isinstance(value, _SHAPING) and not _is_enum_list(value)
        for index in (range(len(value)) if isinstance(value, list) else (None,))
    }
    if used != wanted:
        return None
    return _Statement(query, sql, plan)


def _is_enum_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, Enum) for item in value)


def _match(parameter: Any, stand_ins: dict[str, Any]) -> Any:
    """The stand-in `parameter` was made from, and how Tortoise converted it; else a constant."""
    for name, value in stand_ins.items():
        items: Sequence[Any] = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if not isinstance(item, _BOUND) or isinstance(item, bool):
                continue
            convert = _conversion(parameter, item)
            if convert is not _NO_MATCH:
                return _Bound(name, index if isinstance(value, list) else None, convert)
    return parameter


_NO_MATCH: Any = object()


def _conversion(parameter: Any, stand_in: Any) -> Any:
    """None when Tortoise bound the stand-in as it was, `str` when it bound its text (a UUID on
    SQLite), else `_NO_MATCH`. A time must come back as it went (the same text), or it was
    converted in a way this module does not repeat and the shape stays unprepared."""
    if type(parameter) is type(stand_in) and parameter == stand_in:
        if isinstance(stand_in, datetime) and parameter.isoformat() != stand_in.isoformat():
            return _NO_MATCH
        return None
    if isinstance(stand_in, uuid.UUID) and isinstance(parameter, str) and parameter == str(stand_in):
        return str
    return _NO_MATCH


def _stand_in(value: Any) -> Any:
    """A value of the same kind that no real call and no constant of a statement can equal."""
    if isinstance(value, _SHAPING) or _is_enum_list(value):
        return value
    if isinstance(value, list | tuple):
        return [_stand_in(item) for item in value]
    marker = uuid.uuid4()
    if isinstance(value, uuid.UUID):
        return marker
    if isinstance(value, str):
        return f"\x00stand-in {marker.hex}"
    if isinstance(value, int):
        return 10**15 + marker.int % 10**15
    if isinstance(value, float):
        return float(10**12 + marker.int % 10**12) + 0.5
    if isinstance(value, datetime):
        moment = datetime(1901, 1, 1, tzinfo=UTC) + timedelta(microseconds=marker.int % 10**15)
        return moment if value.tzinfo is not None else moment.replace(tzinfo=None)
    return date(1901, 1, 1) + timedelta(days=marker.int % 30_000)
