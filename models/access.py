"""Who is asking: the viewer every domain operation receives and checks access against."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from models.accounts import Role


class ViewerKind(StrEnum):
    USER = "USER"
    API_CLIENT = "API_CLIENT"


@dataclass(frozen=True)
class Viewer:
    """An authenticated user or EHR client, resolved once per request."""

    kind: ViewerKind
    id: UUID
    role: Role | None = None
    patient_id: UUID | None = None
    provider_id: UUID | None = None
    care_team_ids: frozenset[UUID] = field(default_factory=frozenset)
    scopes: frozenset[str] = field(default_factory=frozenset)
