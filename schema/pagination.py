"""Relay-style connections whose cursors reveal nothing and cannot be forged.

A cursor is a position in one list (the sort key of a row: for the panel by urgency, its open
alert's severity and deadline; for the change feed, a place in the commit order), so a readable
one would tell a viewer what the list was sorted by. Each cursor is sealed with authenticated
encryption: AES-SIV (RFC 5297) under a key derived from `SECRET_KEY` by HKDF-SHA256, a fresh
random nonce every time, the list's name bound in as associated data, the position padded to a
multiple of 32 bytes. So a cursor:

- says nothing about the row it points at, nor whether two cursors point at the same row;
- cannot be made, edited, or moved to another list: anything but a cursor this server sealed for
  this list is refused with "after is not a cursor this list issued";
- stays valid across requests, replicas and restarts, and through a key rotation (keys listed in
  `PREVIOUS_SECRET_KEYS` still open cursors): a stored change-feed cursor resumes where it stopped.

Cursors are sealed only when a client selects them (`cursor`, `startCursor`, `endCursor`).

Every list pages the same way (`paginate`): read the `after` cursor back into the domain's position
(`Listing.open`), fetch one row more than the page, build the connection from the page. A list
says only what is its own (a `Listing`: its name, how its cursor's values read back, a row's values).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import strawberry
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schema.errors import BadUserInput, refusals_as_errors

NodeType = TypeVar("NodeType")
Row = TypeVar("Row")
Key = TypeVar("Key")
DEFAULT_PAGE_SIZE = 20

NOT_A_CURSOR = "after is not a cursor this list issued"
# A sealed patient position with two 100-character names in any script stays well under this.
MAX_CURSOR_LENGTH = 2048
_VERSION = b"\x01"
_NONCE_BYTES = 16
_TAG_BYTES = 16
_PADDING = 32
_KEY_PURPOSE = b"ketafollow cursors v1"


def _cursor_key(secret: str) -> AESSIV:
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_KEY_PURPOSE).derive(secret.encode())
    return AESSIV(key)


class CursorCodec:
    """Seals positions into cursors and opens them: the first secret seals, every one opens."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("cursors need at least one secret")
        self._keys = [_cursor_key(secret) for secret in secrets]

    def at(self, kind: str, values: Sequence[str]) -> Position:
        return Position(self, kind, tuple(values))

    def seal(self, kind: str, values: Sequence[str]) -> str:
        plain = json.dumps(list(values), ensure_ascii=False, separators=(",", ":")).encode()
        plain += b" " * (-len(plain) % _PADDING)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[0].encrypt(plain, [_VERSION, kind.encode(), nonce])
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode().rstrip("=")

    def open(self, kind: str, cursor: str, length: int) -> list[str]:
        """The `length` values sealed in `cursor` for the list `kind`, or `BadUserInput`."""
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise BadUserInput(NOT_A_CURSOR)
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as error:
            raise BadUserInput(NOT_A_CURSOR) from error
        if len(raw) <= 1 + _NONCE_BYTES + _TAG_BYTES or raw[:1] != _VERSION:
            raise BadUserInput(NOT_A_CURSOR)
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        for key in self._keys:
            try:
                plain = key.decrypt(sealed, [_VERSION, kind.encode(), nonce])
            except InvalidTag:
                continue
            values = json.loads(plain)
            if isinstance(values, list) and len(values) == length and all(isinstance(v, str) for v in values):
                return values
            break  # sealed by this server, for this list, but by code with another layout
        raise BadUserInput(NOT_A_CURSOR)


@dataclass(frozen=True)
class Position:
    """Where a row sits in its list; sealed into a cursor only when a client asks for one."""

    codec: CursorCodec
    kind: str
    values: tuple[str, ...]

    def cursor(self) -> str:
        return self.codec.seal(self.kind, self.values)


def _start_cursor(root: strawberry.Parent[PageInfo]) -> str | None:
    return root.start.cursor() if root.start else None


def _end_cursor(root: strawberry.Parent[PageInfo]) -> str | None:
    return root.end.cursor() if root.end else None


def _edge_cursor(root: strawberry.Parent[Edge[Any]]) -> str:
    return root.position.cursor()


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None = strawberry.field(resolver=_start_cursor)
    end_cursor: str | None = strawberry.field(resolver=_end_cursor)
    start: strawberry.Private[Position | None] = None
    end: strawberry.Private[Position | None] = None


@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str = strawberry.field(resolver=_edge_cursor)
    node: NodeType
    position: strawberry.Private[Position]


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo

    @classmethod
    def build(
        cls, nodes: list[NodeType], positions: list[Position], *, has_next_page: bool, after: str | None
    ) -> Connection[NodeType]:
        edges = [Edge(position=position, node=node) for node, position in zip(nodes, positions, strict=True)]
        return cls(
            edges=edges,
            page_info=PageInfo(
                has_next_page=has_next_page,
                has_previous_page=after is not None,
                start=positions[0] if positions else None,
                end=positions[-1] if positions else None,
            ),
        )


def page_size(first: int | None, maximum: int) -> int:
    if first is None:
        return min(DEFAULT_PAGE_SIZE, maximum)
    if not 1 <= first <= maximum:
        raise BadUserInput(f"first must be between 1 and {maximum}")
    return first


def moment(raw: str) -> datetime:
    """A time inside a cursor: always with its offset (a naive one is not a time this server sealed)."""
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise ValueError("a cursor's time has its offset")
    return value


@dataclass(frozen=True)
class Listing(Generic[Row, Key]):
    """What is a list's own in its cursors: its name (a cursor opens only in the list it was made
    for), how each value sealed in a cursor reads back (`int`, `moment`, `UUID`..., a `ValueError`
    when it does not), the domain's position made of them, and the values of a row."""

    kind: str
    fields: tuple[Callable[[str], Any], ...]
    position: Callable[..., Key]
    values: Callable[[Row], Sequence[str]]

    def open(self, cursors: CursorCodec, cursor: str) -> Key:
        raw = cursors.open(self.kind, cursor, len(self.fields))
        try:
            return self.position(*(read(value) for read, value in zip(self.fields, raw, strict=True)))
        except ValueError:
            raise BadUserInput(NOT_A_CURSOR) from None

    def at(self, cursors: CursorCodec, row: Row) -> Position:
        return cursors.at(self.kind, self.values(row))


def newest_first(kind: str, moment_field: str) -> Listing[Any, tuple[datetime, UUID]]:
    """A patient's record list, newest first: a cursor holds a row's time (`moment_field`) and id,
    read back as the `before` position the models' list functions take."""
    return Listing(
        kind,
        (moment, UUID),
        lambda at, row_id: (at, row_id),
        lambda row: [getattr(row, moment_field).isoformat(), str(row.id)],
    )


class Paging(Protocol):
    """What paging needs of the request's context (schema.context.Context)."""

    @property
    def cursors(self) -> CursorCodec: ...

    @property
    def max_page_size(self) -> int: ...


def each(convert: Callable[[Row], NodeType]) -> Callable[[list[Row]], Awaitable[list[NodeType]]]:
    """A converter of one row, as `paginate` takes it (a page's rows, converted together)."""

    async def nodes(rows: list[Row]) -> list[NodeType]:
        return [convert(row) for row in rows]

    return nodes


async def paginate(
    context: Paging,
    listing: Listing[Row, Key],
    first: int | None,
    after: str | None,
    fetch: Callable[[int, Key | None], Awaitable[list[Row]]],
    nodes: Callable[[list[Row]], Awaitable[list[NodeType]]],
) -> Connection[NodeType]:
    """One page of a list: `fetch(limit, position)` reads up to `limit` rows after the position (None:
    from the start), one more than the page so the page knows whether another follows; a domain
    refusal is the request-level error of the same meaning (`refusals_as_errors`)."""
    limit = page_size(first, context.max_page_size)
    position = listing.open(context.cursors, after) if after is not None else None
    with refusals_as_errors():
        rows = await fetch(limit + 1, position)
    page = rows[:limit]
    return Connection[NodeType].build(
        await nodes(page),
        [listing.at(context.cursors, row) for row in page],
        has_next_page=len(rows) > limit,
        after=after,
    )
