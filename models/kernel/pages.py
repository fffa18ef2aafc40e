"""Pages of a patient's records, newest first: the query side of keyset pagination (the cursors
that carry a position are `schema.pagination`'s). A position is the last record's (time, id), so
a page is stable while new records arrive; the id breaks ties between records of the same time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

RecordT = TypeVar("RecordT", bound=Model)

Position = tuple[datetime, UUID]


async def newest_first(query: QuerySet[RecordT], field: str, *, limit: int, before: Position | None) -> list[RecordT]:
    """`limit` records of `query`, the latest `field` first, after the position `before`."""
    if before is not None:
        moment, record_id = before
        earlier: dict[str, Any] = {f"{field}__lt": moment}
        same_time_lower_id: dict[str, Any] = {field: moment, "id__lt": record_id}
        query = query.filter(Q(**earlier) | Q(**same_time_lower_id))
    return list(await query.order_by(f"-{field}", "-id").limit(limit))
