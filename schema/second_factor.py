"""A second factor in the API: `startTotpEnrollment`, `confirmTotpEnrollment`, `disableTotp`
(models.identity.totp), and the gate that lets an enrol-only token (MFA_REQUIRED_ROLES) do nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import strawberry
from graphql import ExecutionResult, FieldNode, GraphQLError, OperationDefinitionNode
from strawberry.extensions import SchemaExtension
from strawberry.types import Info
from strawberry.types.graphql import OperationType

from models.identity import totp
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, record_now
from schema.accounts import ViewerType
from schema.context import Context
from schema.errors import Conflict, Forbidden, ValidationError
from schema.mutations import payload
from schema.permissions import viewer_of

# What an enrol-only token may ask for: who it is, and the enrolment itself.
ENROLMENT_ONLY_FIELDS = frozenset(
    {"me", "startTotpEnrollment", "confirmTotpEnrollment", "__typename", "__schema", "__type"}
)


@strawberry.type(name="TotpEnrollment")
class TotpEnrollment:
    secret: str = strawberry.field(description="The base32 secret, for typing into an authenticator app.")
    otpauth_uri: str = strawberry.field(description="The same as an otpauth:// URI (show it as a QR code).")


@strawberry.type(name="TotpConfirmed")
class TotpConfirmed:
    recovery_codes: list[str] = strawberry.field(
        description="Ten single-use codes for when the phone is lost: shown this once, stored hashed."
    )


@strawberry.input
class TotpCodeInput:
    code: str = strawberry.field(description="6 digits from the authenticator app (disableTotp: or a recovery code).")


TotpEnrollmentResult = Annotated[TotpEnrollment | Conflict, strawberry.union("TotpEnrollmentResult")]
TotpConfirmedResult = Annotated[TotpConfirmed | ValidationError, strawberry.union("TotpConfirmedResult")]
DisableTotpResult = Annotated[ViewerType | ValidationError, strawberry.union("DisableTotpResult")]


@strawberry.type(name="TotpEnrollmentPayload")
class TotpEnrollmentPayload:
    result: TotpEnrollmentResult


@strawberry.type(name="TotpConfirmedPayload")
class TotpConfirmedPayload:
    result: TotpConfirmedResult


@strawberry.type(name="DisableTotpPayload")
class DisableTotpPayload:
    result: DisableTotpResult


def _policy(info: Info[Context, None]) -> totp.SecondFactorPolicy:
    policy = info.context.second_factor
    assert policy is not None, "the HTTP layer sets how second factors are kept"
    return policy


@strawberry.type
class SecondFactorMutation:
    @strawberry.mutation(
        description="Start turning on a second factor: a new secret for an authenticator app, shown once; "
        "confirm it with confirmTotpEnrollment."
    )
    async def start_totp_enrollment(self, info: Info[Context, None]) -> TotpEnrollmentPayload:
        viewer = viewer_of(info)
        return await payload(
            TotpEnrollmentPayload,
            lambda: totp.start_enrolment(viewer, now=info.context.now(), policy=_policy(info)),
            lambda started: TotpEnrollment(secret=started.secret, otpauth_uri=started.otpauth_uri),
        )

    @strawberry.mutation(
        description="Turn the second factor on with a code from the new secret: answers the recovery codes. "
        "This login stays, your other logins end; an enrol-only login gets full tokens at its next refresh."
    )
    async def confirm_totp_enrollment(self, info: Info[Context, None], input: TotpCodeInput) -> TotpConfirmedPayload:
        viewer = viewer_of(info)
        return await payload(
            TotpConfirmedPayload,
            lambda: totp.confirm_enrolment(
                viewer, input.code, now=info.context.now(), policy=_policy(info), keep_login=info.context.session_id
            ),
            lambda codes: TotpConfirmed(recovery_codes=codes),
        )

    @strawberry.mutation(
        description="Turn the second factor off with a code or a recovery code (not where your role requires "
        "one). This login stays, your other logins end."
    )
    async def disable_totp(self, info: Info[Context, None], input: TotpCodeInput) -> DisableTotpPayload:
        viewer = viewer_of(info)
        return await payload(
            DisableTotpPayload,
            lambda: totp.disable(
                viewer, input.code, now=info.context.now(), policy=_policy(info), keep_login=info.context.session_id
            ),
            lambda _: ViewerType.of(viewer),
        )


class SecondFactorGate(SchemaExtension):
    """An enrol-only viewer (MFA_REQUIRED_ROLES, no second factor yet) may ask who it is and enrol;
    any other root field refuses the whole operation with FORBIDDEN, audited, before it runs."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        viewer = getattr(context, "viewer", None)
        document = self.execution_context.graphql_document
        if (
            viewer is None
            or totp.ENROLMENT_ONLY_SCOPE not in viewer.scopes
            or document is None
            or self.execution_context.result is not None
        ):
            yield
            return
        refused = [
            _name(selection)
            for definition in document.definitions
            if isinstance(definition, OperationDefinitionNode)
            and (self.execution_context.operation_name in (None, definition.name and definition.name.value))
            for selection in definition.selection_set.selections
            if _name(selection) not in ENROLMENT_ONLY_FIELDS
        ]
        if refused:
            detail = f"enrol-only token: refused {', '.join(refused)}"[:200]
            entry = AuditEntry(AuditAction.EXECUTE, "SecondFactor", AuditOutcome.DENIED, detail=detail)
            await record_now(viewer, entry, now=context.now(), trail=viewer.audit)
            if self.execution_context.operation_type is OperationType.SUBSCRIPTION:
                raise Forbidden(totp.ENROL_FIRST)  # a subscription's answer to a refusal in this hook
            self.execution_context.result = ExecutionResult(
                data=None, errors=[GraphQLError(totp.ENROL_FIRST, extensions={"code": Forbidden.code})]
            )
        yield


def _name(selection: object) -> str:
    """A root field's name; fragments at the root are not looked into (refused as "fragment")."""
    return selection.name.value if isinstance(selection, FieldNode) else "fragment"
