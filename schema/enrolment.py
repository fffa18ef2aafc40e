"""Enrolment and one's own password in the API: invitations and `changePassword` (PRODUCT.md
capability 11). The flows before a user has a token are HTTP endpoints (api.auth.enrolment)."""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.types import Info

from models.identity import enrolment, password_reset
from schema.accounts import ViewerType
from schema.context import Context
from schema.errors import NotFound, ValidationError
from schema.ids import global_id, node_id
from schema.mutations import payload
from schema.permissions import viewer_of


@strawberry.enum(name="InvitationRole")
class InvitationRole(Enum):
    PATIENT = "PATIENT"
    PROVIDER = "PROVIDER"


@strawberry.type(name="Invitation")
class InvitationType:
    id: strawberry.ID
    email: str
    role: InvitationRole
    expires_at: datetime
    accepted_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, invitation: enrolment.Invitation) -> InvitationType:
        return cls(
            id=strawberry.ID(global_id("Invitation", invitation.id)),
            email=invitation.email,
            role=InvitationRole(invitation.role.value),
            expires_at=invitation.expires_at,
            accepted_at=invitation.accepted_at,
            revoked_at=invitation.revoked_at,
        )


@strawberry.input
class InvitePatientInput:
    email: str
    given_name: str
    family_name: str
    birth_date: date
    time_zone: str = strawberry.field(description="IANA zone, e.g. America/New_York.")
    care_team_id: strawberry.ID = strawberry.field(description="A care team of yours (providers).")
    phone: str | None = None


@strawberry.input
class InviteProviderInput:
    email: str
    given_name: str
    family_name: str
    care_team_ids: list[strawberry.ID]
    npi: str | None = None
    credentials: str = ""


@strawberry.input
class InvitationIdInput:
    invitation_id: strawberry.ID


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str = strawberry.field(description="12 to 128 characters; not common, not your e-mail or name.")


InvitationResult = Annotated[InvitationType | ValidationError | NotFound, strawberry.union("InvitationResult")]
ChangePasswordResult = Annotated[ViewerType | ValidationError, strawberry.union("ChangePasswordResult")]


@strawberry.type(name="InvitationPayload")
class InvitationPayload:
    result: InvitationResult


@strawberry.type(name="ChangePasswordPayload")
class ChangePasswordPayload:
    result: ChangePasswordResult


@strawberry.type
class EnrolmentMutation:
    @strawberry.mutation(
        description="Invite a patient into a care team (admins; providers into their own teams): they get an "
        "e-mail with a one-time link to choose their password."
    )
    async def invite_patient(self, info: Info[Context, None], input: InvitePatientInput) -> InvitationPayload:
        async def call() -> enrolment.Invitation:
            data = enrolment.PatientInvite(
                email=input.email, given_name=input.given_name, family_name=input.family_name,
                birth_date=input.birth_date, time_zone=input.time_zone, phone=input.phone,
                care_team_id=node_id(input.care_team_id, "CareTeam", "careTeamId"),
            )  # fmt: skip
            return await enrolment.invite_patient(
                viewer_of(info), data, now=info.context.now(), app_url=info.context.public_app_url
            )

        return await payload(InvitationPayload, call, InvitationType.from_model)

    @strawberry.mutation(description="Invite a clinician onto care teams (admins).")
    async def invite_provider(self, info: Info[Context, None], input: InviteProviderInput) -> InvitationPayload:
        async def call() -> enrolment.Invitation:
            data = enrolment.ProviderInvite(
                email=input.email, given_name=input.given_name, family_name=input.family_name,
                care_team_ids=tuple(node_id(team, "CareTeam", "careTeamIds") for team in input.care_team_ids),
                npi=input.npi, credentials=input.credentials,
            )  # fmt: skip
            return await enrolment.invite_provider(
                viewer_of(info), data, now=info.context.now(), app_url=info.context.public_app_url
            )

        return await payload(InvitationPayload, call, InvitationType.from_model)

    @strawberry.mutation(description="Send the invitation again with a new link; the previous link stops working.")
    async def resend_invitation(self, info: Info[Context, None], input: InvitationIdInput) -> InvitationPayload:
        async def call() -> enrolment.Invitation:
            invitation_id = node_id(input.invitation_id, "Invitation", "invitationId")
            return await enrolment.resend_invitation(
                viewer_of(info), invitation_id, now=info.context.now(), app_url=info.context.public_app_url
            )

        return await payload(InvitationPayload, call, InvitationType.from_model)

    @strawberry.mutation(description="Withdraw an invitation: its link stops working.")
    async def revoke_invitation(self, info: Info[Context, None], input: InvitationIdInput) -> InvitationPayload:
        async def call() -> enrolment.Invitation:
            invitation_id = node_id(input.invitation_id, "Invitation", "invitationId")
            return await enrolment.revoke_invitation(viewer_of(info), invitation_id, now=info.context.now())

        return await payload(InvitationPayload, call, InvitationType.from_model)

    @strawberry.mutation(description="Change your password: this login stays, your other logins end.")
    async def change_password(self, info: Info[Context, None], input: ChangePasswordInput) -> ChangePasswordPayload:
        viewer = viewer_of(info)
        hashing = info.context.password_hashing
        assert hashing is not None, "the HTTP layer sets how passwords are hashed"
        return await payload(
            ChangePasswordPayload,
            lambda: password_reset.change_password(
                viewer,
                input.current_password,
                input.new_password,
                now=info.context.now(),
                keep_login=info.context.session_id,
                hashing=hashing,
            ),
            lambda _: ViewerType.of(viewer),
        )
