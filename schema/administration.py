"""Administration in the API (admins): `users`, `deactivateUser`, `reactivateUser`,
`createCareTeam`, `transferPatient`, `registerApiClient`, `rotateApiClientSecret`,
`deactivateApiClient` (PRODUCT.md capability 11). The rules are models.identity.administration's."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry.types import Info

from models.identity import administration
from models.identity.accounts import ApiClient, Patient, Provider, Role, User
from models.identity.passwords import PasswordHashing
from schema.accounts import CareTeamType, PatientType, ProviderType
from schema.context import Context
from schema.errors import Conflict, NotFound, ValidationError
from schema.ids import global_id
from schema.mutations import LenientInput, payload
from schema.pagination import Connection, Listing, paginate
from schema.permissions import viewer_of

# By e-mail; a cursor is a user's e-mail and id.
_USERS: Listing[User, administration.UserCursor] = Listing(
    "users", (str, uuid.UUID), administration.UserCursor, lambda user: [user.email, str(user.id)]
)


@strawberry.enum(name="UserRole")
class UserRole(Enum):
    PATIENT = "PATIENT"
    PROVIDER = "PROVIDER"
    ADMIN = "ADMIN"


@strawberry.type(name="User")
class UserType:
    id: strawberry.ID
    email: str
    role: UserRole
    active: bool = strawberry.field(description="False once deactivated, or while invited and not yet activated.")
    created_at: datetime
    patient: PatientType | None
    provider: ProviderType | None

    @classmethod
    def from_model(cls, user: User, patient: Patient | None = None, provider: Provider | None = None) -> UserType:
        return cls(
            id=strawberry.ID(global_id("User", user.id)),
            email=user.email,
            role=UserRole(user.role.value),
            active=user.is_active,
            created_at=user.created_at,
            patient=PatientType.from_model(patient) if patient else None,
            provider=ProviderType.from_model(provider) if provider else None,
        )

    @classmethod
    async def of(cls, user: User) -> UserType:
        [converted] = await cls.many([user])
        return converted

    @classmethod
    async def many(cls, users: list[User]) -> list[UserType]:
        ids = [user.id for user in users]
        patients, providers = await administration.user_profiles(ids)
        return [cls.from_model(user, patients.get(user.id), providers.get(user.id)) for user in users]


@strawberry.type(name="ApiClient")
class ApiClientType:
    id: strawberry.ID
    client_id: str = strawberry.field(description="What the client signs in with (client_credentials).")
    name: str
    scopes: list[str]
    active: bool
    care_teams: list[CareTeamType]

    @classmethod
    async def of(cls, client: ApiClient) -> ApiClientType:
        teams = await administration.api_client_care_teams(client)
        return cls(
            id=strawberry.ID(global_id("ApiClient", client.id)),
            client_id=client.client_id,
            name=client.name,
            scopes=list(client.scopes),
            active=client.is_active,
            care_teams=[CareTeamType.from_model(team) for team in teams],
        )


@strawberry.type(name="ApiClientRegistration")
class ApiClientRegistrationType:
    client: ApiClientType
    secret: str = strawberry.field(description="Shown this once: store it now (only its hash is kept).")


@strawberry.input
class DeactivateUserInput:
    user_id: strawberry.ID
    reason: str = strawberry.field(description="Why (kept in the audit log), e.g. 'left the clinic'.")


@strawberry.input
class ReactivateUserInput:
    user_id: strawberry.ID


@strawberry.input
class CreateCareTeamInput:
    name: str


@strawberry.input
class TransferPatientInput:
    patient_id: strawberry.ID
    care_team_id: strawberry.ID


@strawberry.input
class RegisterApiClientInput:
    client_id: str = strawberry.field(description="3-64 characters of a-z, 0-9, '.', '_' or '-'.")
    name: str
    scopes: list[str] = strawberry.field(description="Any of patients:read, clinical:read, changes:read.")
    care_team_ids: list[strawberry.ID] = strawberry.field(description="Whose patients it may see (with consent).")


@strawberry.input
class ApiClientIdInput:
    client_id: str


UserResult = Annotated[UserType | ValidationError | NotFound | Conflict, strawberry.union("UserResult")]
CareTeamResult = Annotated[CareTeamType | ValidationError | Conflict, strawberry.union("CareTeamResult")]
TransferPatientResult = Annotated[PatientType | ValidationError | NotFound, strawberry.union("TransferPatientResult")]
ApiClientRegistrationResult = Annotated[
    ApiClientRegistrationType | ValidationError | NotFound | Conflict, strawberry.union("ApiClientRegistrationResult")
]
ApiClientResult = Annotated[ApiClientType | ValidationError | NotFound, strawberry.union("ApiClientResult")]


@strawberry.type(name="UserPayload")
class UserPayload:
    result: UserResult


@strawberry.type(name="CareTeamPayload")
class CareTeamPayload:
    result: CareTeamResult


@strawberry.type(name="TransferPatientPayload")
class TransferPatientPayload:
    result: TransferPatientResult


@strawberry.type(name="ApiClientRegistrationPayload")
class ApiClientRegistrationPayload:
    result: ApiClientRegistrationResult


@strawberry.type(name="ApiClientPayload")
class ApiClientPayload:
    result: ApiClientResult


def _hashing(info: Info[Context, None]) -> PasswordHashing:
    hashing = info.context.password_hashing
    assert hashing is not None, "the HTTP layer sets how secrets are hashed"
    return hashing


async def _registration(registration: administration.ApiClientRegistration) -> ApiClientRegistrationType:
    return ApiClientRegistrationType(client=await ApiClientType.of(registration.client), secret=registration.secret)


@strawberry.type
class AdministrationQuery:
    @strawberry.field(
        description="Accounts (admins), by e-mail; `search` is a prefix of the e-mail or of a given or family name."
    )
    async def users(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        role: UserRole | None = None,
        search: str | None = None,
    ) -> Connection[UserType]:
        viewer = viewer_of(info)

        async def fetch(limit: int, position: administration.UserCursor | None) -> list[User]:
            return await administration.list_users(
                viewer,
                now=info.context.now(),
                limit=limit,
                after=position,
                role=Role(role.value) if role else None,
                search=search,
            )

        return await paginate(info.context, _USERS, first, after, fetch, UserType.many)


@strawberry.type
class AdministrationMutation:
    @strawberry.mutation(
        description="Stop an account at once (admins): its tokens, logins, sockets and push devices end; "
        "its records stay. Not yourself, not the last active admin."
    )
    async def deactivate_user(self, info: Info[Context, None], input: DeactivateUserInput) -> UserPayload:
        async def call() -> User:
            read = LenientInput()
            user_id = read.id(input.user_id, "User", "userId")
            user, ended = await administration.deactivate_user(
                viewer_of(info), user_id, input.reason, now=info.context.now(), problems=read.problems
            )
            if info.context.logins_ended is not None:
                await info.context.logins_ended(ended)
            return user

        return await payload(UserPayload, call, UserType.of)

    @strawberry.mutation(description="Let a deactivated account sign in again (admins); old tokens stay ended.")
    async def reactivate_user(self, info: Info[Context, None], input: ReactivateUserInput) -> UserPayload:
        async def call() -> User:
            read = LenientInput()
            user_id = read.id(input.user_id, "User", "userId")
            return await administration.reactivate_user(
                viewer_of(info), user_id, now=info.context.now(), problems=read.problems
            )

        return await payload(UserPayload, call, UserType.of)

    @strawberry.mutation(description="Create a care team (admins); names are unique.")
    async def create_care_team(self, info: Info[Context, None], input: CreateCareTeamInput) -> CareTeamPayload:
        viewer = viewer_of(info)
        return await payload(
            CareTeamPayload,
            lambda: administration.create_care_team(viewer, input.name, now=info.context.now()),
            CareTeamType.from_model,
        )

    @strawberry.mutation(
        description="Move a patient to another care team (admins): access, open and future alerts follow the new "
        "team; consents to EHR clients not serving it end."
    )
    async def transfer_patient(self, info: Info[Context, None], input: TransferPatientInput) -> TransferPatientPayload:
        async def call() -> Patient:
            read = LenientInput()
            patient_id = read.id(input.patient_id, "Patient", "patientId")
            team_id = read.id(input.care_team_id, "CareTeam", "careTeamId")
            return await administration.transfer_patient(
                viewer_of(info), patient_id, team_id, now=info.context.now(), problems=read.problems
            )

        return await payload(TransferPatientPayload, call, PatientType.from_model)

    @strawberry.mutation(description="Register an EHR client (admins); its secret is shown once.")
    async def register_api_client(
        self, info: Info[Context, None], input: RegisterApiClientInput
    ) -> ApiClientRegistrationPayload:
        async def call() -> administration.ApiClientRegistration:
            read = LenientInput()
            teams = tuple(read.id(team, "CareTeam", "careTeamIds") for team in input.care_team_ids)
            return await administration.register_api_client(
                viewer_of(info), input.client_id, input.name, tuple(input.scopes), teams,
                now=info.context.now(), hashing=_hashing(info), problems=read.problems,
            )  # fmt: skip

        return await payload(ApiClientRegistrationPayload, call, _registration)

    @strawberry.mutation(
        description="A new secret for an EHR client (admins), shown once: the old secret and the tokens issued "
        "under it stop at once."
    )
    async def rotate_api_client_secret(
        self, info: Info[Context, None], input: ApiClientIdInput
    ) -> ApiClientRegistrationPayload:
        viewer = viewer_of(info)
        return await payload(
            ApiClientRegistrationPayload,
            lambda: administration.rotate_api_client_secret(
                viewer, input.client_id, now=info.context.now(), hashing=_hashing(info)
            ),
            _registration,
        )

    @strawberry.mutation(description="Stop an EHR client (admins): it can no longer sign in; its tokens stop.")
    async def deactivate_api_client(self, info: Info[Context, None], input: ApiClientIdInput) -> ApiClientPayload:
        viewer = viewer_of(info)
        return await payload(
            ApiClientPayload,
            lambda: administration.deactivate_api_client(viewer, input.client_id, now=info.context.now()),
            ApiClientType.of,
        )
