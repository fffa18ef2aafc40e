"""A patient's consent to share their record with an EHR client (42 CFR Part 2-ready: per recipient).

Granting twice keeps the first grant; revoking keeps the row with its `revoked_at`, so the
history of who could see what, and when, is never lost. A patient grants consent to the clients
serving their care team, and can withdraw any consent they still have: also one to a client that
no longer serves their team (they moved, or the client's teams changed) or was deactivated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

from models.identity.access import Viewer, require_patient_self
from models.identity.accounts import CLIENT_ID_MAX_LENGTH, ApiClient, DataSharingConsent, Role
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now
from models.kernel.errors import Forbidden, NotFound
from models.kernel.events import Operation, record_event


@dataclass(frozen=True)
class SharingChoice:
    """An EHR client serving the patient's care team, and whether the patient shares with it."""

    client: ApiClient
    consent: DataSharingConsent | None


def _require_patient(viewer: Viewer, action: AuditAction) -> None:
    refusal = Forbidden("only a patient can grant or revoke consent to share their record")
    require_patient_self(viewer, refusal, action, "Consent")


async def _client_serving(viewer: Viewer, client_id: str) -> ApiClient:
    """An active client of the patient's care team; one answer for any other and for none."""
    client = None
    if len(client_id) <= CLIENT_ID_MAX_LENGTH:  # longer: no such client (and the ORM refuses to look it up)
        client = await ApiClient.get_or_none(
            client_id=client_id, is_active=True, care_teams__id__in=list(viewer.care_team_ids)
        )
    if client is None:
        raise denied(viewer, NotFound("API client"), AuditAction.CREATE, "Consent", patient_id=viewer.patient_id)
    return client


async def sharing_choices(viewer: Viewer) -> list[SharingChoice]:
    """The clients the patient may share with, each with the active consent if there is one, and
    the clients they still share with that no longer serve their care team (to withdraw it)."""
    if not viewer.is_role(Role.PATIENT):
        return []
    serving = await ApiClient.filter(is_active=True, care_teams__id__in=list(viewer.care_team_ids)).distinct()
    consents = await DataSharingConsent.filter(patient_id=viewer.patient_id, revoked_at=None).select_related(
        "api_client"
    )
    by_client = {consent.api_client.id: consent for consent in consents}
    clients = {client.id: client for client in [*serving, *(consent.api_client for consent in consents)]}
    return [
        SharingChoice(client, by_client.get(client.id))
        for client in sorted(clients.values(), key=lambda c: (c.name, c.client_id))
    ]


def _active(viewer: Viewer, client: ApiClient) -> QuerySet[DataSharingConsent]:
    return DataSharingConsent.filter(patient_id=viewer.patient_id, api_client_id=client.id, revoked_at=None)


def _consent_audit(viewer: Viewer, action: AuditAction, consent: DataSharingConsent, detail: str) -> AuditEntry:
    return AuditEntry(
        action,
        "Consent",
        AuditOutcome.SUCCESS,
        patient_id=viewer.patient_id,
        resource_id=str(consent.id),
        detail=detail,
    )


async def consent_event(consent: DataSharingConsent, operation: Operation, version: int, now: datetime) -> None:
    """Grants and revocations reach the client's change feed (models.ehr.changes): a revocation is
    the last change of that patient the client receives."""
    await record_event(
        f"Consent.{'granted' if version == 1 else 'revoked'}", resource_type="Consent", resource_id=consent.id,
        operation=operation, version=version, now=now, patient_id=consent.patient_id,  # type: ignore[attr-defined]
    )  # fmt: skip


async def grant_data_sharing_consent(viewer: Viewer, client_id: str, *, now: datetime) -> DataSharingConsent:
    """The patient agrees that `client_id` may receive their record (granting twice is one grant)."""
    _require_patient(viewer, AuditAction.CREATE)
    client = await _client_serving(viewer, client_id)
    async with in_transaction():
        existing = await _active(viewer, client).first()
        if existing is not None:
            return existing
        try:
            async with in_transaction():
                consent = await DataSharingConsent.create(
                    patient_id=viewer.patient_id, api_client_id=client.id, granted_at=now
                )
        except IntegrityError:
            # A concurrent grant won: one active consent per patient and client (unique index).
            winner = await _active(viewer, client).first()
            if winner is None:
                raise
            return winner
        await consent_event(consent, Operation.CREATED, 1, now)
        entry = _consent_audit(viewer, AuditAction.CREATE, consent, f"share with {client.client_id}")
        await record_now(viewer, entry, now=now, trail=viewer.audit)
    return consent


async def revoke_data_sharing_consent(viewer: Viewer, client_id: str, *, now: datetime) -> DataSharingConsent:
    """The patient withdraws consent: the client sees nothing more of their record from now on.

    Whatever became of the client since the grant (deactivated, or no longer serving the patient's
    care team), the consent can be withdrawn; no consent to withdraw is one answer, audited."""
    _require_patient(viewer, AuditAction.UPDATE)
    client = await ApiClient.get_or_none(client_id=client_id) if len(client_id) <= CLIENT_ID_MAX_LENGTH else None
    async with in_transaction():
        consent = await _active(viewer, client).first() if client is not None else None
        if client is None or consent is None:
            refusal = NotFound("consent")
            raise denied(viewer, refusal, AuditAction.UPDATE, "Consent", patient_id=viewer.patient_id)
        await _active(viewer, client).update(revoked_at=now, updated_at=now)
        consent.revoked_at = now
        await consent_event(consent, Operation.UPDATED, 2, now)
        entry = _consent_audit(viewer, AuditAction.UPDATE, consent, f"revoked sharing with {client.client_id}")
        await record_now(viewer, entry, now=now, trail=viewer.audit)
    return consent
