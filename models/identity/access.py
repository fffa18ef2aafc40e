"""Who is asking, and what they may see: the viewer and the object-level access rules.

Every domain operation that touches patient data receives the `Viewer` and asks this module;
root fields, nested fields, connections and `node(id)` all pass through the same functions, so
there is one rule per question. A refusal and a missing record look the same (`NotFound`).

Rules (PRODUCT.md capability 1, CLINICAL.md §12 minimum necessary):
- a patient sees their own record;
- a provider sees the patients of their care teams;
- an admin sees patient identities (to manage accounts) and the audit log, no clinical data;
- an EHR client sees, within its granted scopes, the patients of its care teams who have an
  active consent to share with it.

Which patients is `patients_visible_to`'s question; which of their properties is `may_read`'s.
A property is read by selecting it, and just as much by filtering or ordering a list by it, or by
a cursor of a list ordered by it: all of these ask `may_read` (STYLE.md, one access rule per
property), and cursors are sealed (schema.pagination).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from tortoise.expressions import Q, Subquery

from models.identity.accounts import ApiClient, DataSharingConsent, Role, User, client_credential
from models.kernel.audit import AuditTrail


class ViewerKind(StrEnum):
    USER = "USER"
    API_CLIENT = "API_CLIENT"


class Sensitivity(StrEnum):
    """What a property of a patient tells (CLINICAL.md §12, minimum necessary)."""

    # Who the patient is and who looks after them: names, birth date, time zone, care team.
    IDENTITY = "identity"
    # Their health and care: alerts, sessions, readings, surveys, plans, outcomes, opioid use.
    CLINICAL = "clinical"


class Scope(StrEnum):
    """What an EHR client may be granted (models.identity.accounts.API_SCOPES)."""

    PATIENTS_READ = "patients:read"
    CLINICAL_READ = "clinical:read"
    CHANGES_READ = "changes:read"


@dataclass(frozen=True)
class Viewer:
    """An authenticated user or EHR client, resolved once per request."""

    kind: ViewerKind
    id: UUID
    label: str
    role: Role | None = None
    patient_id: UUID | None = None
    provider_id: UUID | None = None
    care_team_ids: frozenset[UUID] = frozenset()
    scopes: frozenset[str] = frozenset()
    audit: AuditTrail = field(default_factory=AuditTrail, compare=False, repr=False)

    @property
    def is_api_client(self) -> bool:
        return self.kind is ViewerKind.API_CLIENT

    @property
    def role_name(self) -> str:
        return "EHR_CLIENT" if self.is_api_client else str(self.role)

    def is_role(self, role: Role) -> bool:
        return not self.is_api_client and self.role is role

    def has_scope(self, scope: Scope) -> bool:
        return self.is_api_client and scope.value in self.scopes


async def load_user_viewer(user_id: UUID, audit: AuditTrail) -> Viewer | None:
    """The viewer for a signed-in user, or None if the account is gone or deactivated, or its
    patient or provider profile is missing. One query (asked by every request): the account, its
    profile and a provider's care teams, one row per care team."""
    rows = await User.filter(id=user_id, is_active=True).values_list(
        "role", "email", "patient__id", "patient__care_team_id", "provider__id", "provider__care_teams__id"
    )
    if not rows:
        return None
    role, email, patient_id, patient_team, provider_id, _ = rows[0]
    role = Role(role)
    care_teams: frozenset[UUID] = frozenset()
    if role is Role.PATIENT:
        if patient_id is None:
            return None
        care_teams = frozenset({patient_team})
        provider_id = None
    elif role is Role.PROVIDER:
        if provider_id is None:
            return None
        care_teams = frozenset(row[5] for row in rows if row[5] is not None)
        patient_id = None
    else:
        patient_id = provider_id = None
    return Viewer(
        kind=ViewerKind.USER,
        id=user_id,
        label=email,
        role=role,
        patient_id=patient_id,
        provider_id=provider_id,
        care_team_ids=care_teams,
        audit=audit,
    )


async def load_client_viewer(
    client_id: UUID, token_scopes: frozenset[str], credential: str | None, audit: AuditTrail
) -> Viewer | None:
    """The viewer for an EHR client; scopes are those of the token still granted to the client.
    None when the client is deactivated, or its secret was rotated since the token was issued
    (`credential`, the token's fingerprint of the secret, no longer matches)."""
    client = await ApiClient.get_or_none(id=client_id, is_active=True).prefetch_related("care_teams")
    if (
        client is None
        or credential is None
        or not hmac.compare_digest(credential, client_credential(client.secret_hash))
    ):
        return None
    return Viewer(
        kind=ViewerKind.API_CLIENT,
        id=client.id,
        label=client.client_id,
        scopes=token_scopes & frozenset(client.scopes),
        care_team_ids=frozenset(team.id for team in client.care_teams),
        audit=audit,
    )


def patients_visible_to(viewer: Viewer) -> Q:
    """A filter on `Patient` selecting exactly the patients whose identity the viewer may see."""
    if viewer.is_api_client:
        if not viewer.has_scope(Scope.PATIENTS_READ):
            return Q(pk=None)
        return Q(care_team_id__in=list(viewer.care_team_ids)) & Q(
            id__in=Subquery(DataSharingConsent.filter(api_client_id=viewer.id, revoked_at=None).values("patient_id"))
        )
    if viewer.role is Role.ADMIN:
        return Q()
    if viewer.role is Role.PROVIDER:
        return Q(care_team_id__in=list(viewer.care_team_ids))
    if viewer.role is Role.PATIENT and viewer.patient_id is not None:
        return Q(id=viewer.patient_id)
    return Q(pk=None)


def may_read(viewer: Viewer, sensitivity: Sensitivity) -> bool:
    """Whether the viewer may read properties of this sensitivity of the patients it sees: to
    select them, and to filter or order by them. Identities: everyone who sees the patient.
    Clinical data: the patient, their care team's providers, an EHR client granted
    `clinical:read`; never an admin."""
    if sensitivity is Sensitivity.IDENTITY:
        return True
    if viewer.is_api_client:
        return viewer.has_scope(Scope.CLINICAL_READ)
    return viewer.role in (Role.PATIENT, Role.PROVIDER)
