"""Pages of a patient's records, newest first: the query side of keyset pagination (the cursors
that carry a position are `schema.pagination`'s). A position is the last record's (time, id), so
a page is stable while new records arrive; the id breaks ties between records of the same time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from models.kernel.prepared import prepared, prepared_read

RecordT = TypeVar("RecordT", bound=Model)

Position = tuple[datetime, UUID]


async def newest_first(
    model: type[RecordT], field: str, *, limit: int, before: Position | None, **filters: Any
) -> list[RecordT]:
    """`limit` records of `model` matching `filters`, the latest `field` first, after the position
    `before`. A prepared read (models.kernel.prepared): the statement is written once per shape."""
    moment, record_id = before if before is not None else (None, None)
    return list(await prepared(_page_query(model, field), limit=limit, moment=moment, record_id=record_id, **filters))


@functools.cache
def _page_query(model: type[RecordT], field: str) -> Callable[..., QuerySet[RecordT]]:
    @prepared_read(model)
    def page(limit: int, moment: datetime | None, record_id: UUID | None, **filters: Any) -> QuerySet[RecordT]:
        query = model.filter(**filters)
        if moment is not None:
            earlier: dict[str, Any] = {f"{field}__lt": moment}
            same_time_lower_id: dict[str, Any] = {field: moment, "id__lt": record_id}
            query = query.filter(Q(**earlier) | Q(**same_time_lower_id))
        return query.order_by(f"-{field}", "-id").limit(limit)

    page.__name__ = f"{model.__name__}.{field}.newest_first"
    return page
