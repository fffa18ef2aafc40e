"""Accounts in the API: the viewer (`me`), patients, providers, care teams, and `node(id)`."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Protocol, cast

import strawberry
from strawberry import relay
from strawberry.types import Info

from models.ehr import consent
from models.identity import access, directory
from models.identity.access import OwnProfile, Viewer
from models.identity.accounts import CareTeam, DataSharingConsent, Patient, Provider
from models.kernel import errors as domain
from schema.context import Context
from schema.dosing import PatientDosingFields
from schema.errors import BadUserInput, NotFound, ValidationError, refusals_as_errors
from schema.ids import node_uuid, parse_uuid
from schema.loaders import loader
from schema.mutations import payload
from schema.opioids import PatientOpioidFields
from schema.outcomes import PatientPanelFields
from schema.pagination import Connection, Listing, each, paginate
from schema.permissions import viewer_of
from schema.plans import PatientPlanFields
from schema.reports import PatientReportFields
from schema.surveys import PatientSurveyFields


@strawberry.enum(name="ViewerRole")
class ViewerRole(Enum):
    PATIENT = "PATIENT"
    PROVIDER = "PROVIDER"
    ADMIN = "ADMIN"
    EHR_CLIENT = "EHR_CLIENT"


@strawberry.type(name="CareTeam")
class CareTeamType(relay.Node):
    id: relay.NodeID[str]
    name: str

    @classmethod
    def from_model(cls, team: CareTeam) -> CareTeamType:
        return cls(id=str(team.id), name=team.name)

    @classmethod
    async def load_nodes(cls, info: Info[Context, None], node_ids: list[str]) -> list[CareTeamType | None]:
        ids = [parse_uuid(str(node_id)) for node_id in node_ids]
        found = await directory.get_care_teams(viewer_of(info), [i for i in ids if i])
        return [cls.from_model(found[i]) if i in found else None for i in ids]

    @strawberry.field
    async def providers(self, info: Info[Context, None]) -> list[ProviderType]:
        providers = await directory.providers_of_care_team(viewer_of(info), uuid.UUID(self.id))
        return [ProviderType.from_model(provider) for provider in providers]

    @strawberry.field
    async def patients(
        self, info: Info[Context, None], first: int | None = None, after: str | None = None
    ) -> Connection[PatientType]:
        return await patient_connection(info, first, after, care_team_id=uuid.UUID(self.id))


@strawberry.type(name="Provider")
class ProviderType(relay.Node):
    id: relay.NodeID[str]
    given_name: str
    family_name: str
    credentials: str
    npi: str | None

    @classmethod
    def from_model(cls, provider: Provider) -> ProviderType:
        return cls(
            id=str(provider.id),
            given_name=provider.given_name,
            family_name=provider.family_name,
            credentials=provider.credentials,
            npi=provider.npi,
        )

    @classmethod
    async def load_nodes(cls, info: Info[Context, None], node_ids: list[str]) -> list[ProviderType | None]:
        ids = [parse_uuid(str(node_id)) for node_id in node_ids]
        found = await directory.get_providers(viewer_of(info), [i for i in ids if i])
        return [cls.from_model(found[i]) if i in found else None for i in ids]

    @strawberry.field
    async def care_teams(self, info: Info[Context, None]) -> list[CareTeamType]:
        teams = await directory.care_teams_of_provider(viewer_of(info), uuid.UUID(self.id))
        return [CareTeamType.from_model(team) for team in teams]


@strawberry.type(name="ApiClientSummary")
class ApiClientSummary:
    client_id: str
    name: str


@strawberry.type(name="DataSharingConsent")
class DataSharingConsentType:
    id: strawberry.ID
    client: ApiClientSummary
    granted_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, consent_row: DataSharingConsent, client: ApiClientSummary) -> DataSharingConsentType:
        return cls(
            id=strawberry.ID(str(consent_row.id)),
            client=client,
            granted_at=consent_row.granted_at,
            revoked_at=consent_row.revoked_at,
        )


@strawberry.type(name="DataSharingChoice")
class DataSharingChoice:
    client: ApiClientSummary
    shared: bool
    granted_at: datetime | None


@strawberry.type(name="Patient")
class PatientType(
    PatientPlanFields,
    PatientDosingFields,
    PatientReportFields,
    PatientSurveyFields,
    PatientOpioidFields,
    PatientPanelFields,
    relay.Node,
):
    """A patient: the fields of each area (their bases, each in its own module, none importing this
    one) and the record's own."""

    id: relay.NodeID[str]
    given_name: str
    family_name: str
    birth_date: date
    time_zone: str
    care_team_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_model(cls, patient: Patient | OwnProfile) -> PatientType:
        return cls(
            id=str(patient.id),
            given_name=patient.given_name,
            family_name=patient.family_name,
            birth_date=patient.birth_date,
            time_zone=patient.time_zone,
            care_team_id=patient.care_team_id,  # type: ignore[union-attr]
        )

    @classmethod
    async def load_nodes(cls, info: Info[Context, None], node_ids: list[str]) -> list[PatientType | None]:
        ids = [parse_uuid(str(node_id)) for node_id in node_ids]
        found = await directory.get_patients(viewer_of(info), [i for i in ids if i])
        return [cls.from_model(found[i]) if i in found else None for i in ids]

    @strawberry.field
    async def care_team(self, info: Info[Context, None]) -> CareTeamType | None:
        team = await loader(info, "care_teams", directory.get_care_teams).load(self.care_team_id)
        return CareTeamType.from_model(team) if team else None

    @strawberry.field(description="EHR clients this patient may share their record with (the patient only).")
    async def data_sharing(self, info: Info[Context, None]) -> list[DataSharingChoice]:
        viewer = viewer_of(info)
        if viewer.patient_id != uuid.UUID(self.id):
            return []
        return [
            DataSharingChoice(
                client=ApiClientSummary(client_id=choice.client.client_id, name=choice.client.name),
                shared=choice.consent is not None,
                granted_at=choice.consent.granted_at if choice.consent else None,
            )
            for choice in await consent.sharing_choices(viewer)
        ]


@strawberry.type(name="Viewer")
class ViewerType:
    id: strawberry.ID
    role: ViewerRole
    name: str = strawberry.field(description="The e-mail of a user, the client id of an EHR client.")
    scopes: list[str]

    @classmethod
    def of(cls, viewer: Viewer) -> ViewerType:
        return cls(
            id=strawberry.ID(str(viewer.id)),
            role=ViewerRole(viewer.role_name),
            name=viewer.label,
            scopes=sorted(viewer.scopes),
        )

    @strawberry.field(description="The signed-in patient's record (patients only).")
    async def patient(self, info: Info[Context, None]) -> PatientType | None:
        viewer = viewer_of(info)
        if viewer.patient_id is None:
            return None
        return PatientType.from_model(await directory.own_patient(viewer, viewer.patient_id))

    @strawberry.field(description="The signed-in provider's profile (providers only).")
    async def provider(self, info: Info[Context, None]) -> ProviderType | None:
        viewer = viewer_of(info)
        if viewer.provider_id is None:
            return None
        found = await directory.get_providers(viewer, [viewer.provider_id])
        return ProviderType.from_model(found[viewer.provider_id]) if viewer.provider_id in found else None


PatientOrder = strawberry.enum(
    access.PatientOrder,
    name="PatientOrder",
    description="URGENCY reads open alerts (clinical data): only for viewers who may see them.",
)


@strawberry.input(name="PatientFilter")
class PatientFilter:
    care_team_id: strawberry.ID | None = None
    has_open_alerts: bool | None = strawberry.field(
        default=None, description="Clinical data: only for viewers who may see alerts."
    )


# A cursor of one order opens only in that order: positions of the two differ.
_PATIENT_LISTINGS: dict[access.PatientOrder, Listing[tuple[Patient, directory.PatientCursor], Any]] = {
    access.PatientOrder.NAME: Listing(
        "patients",
        (str, str, uuid.UUID),
        directory.PatientCursor,
        lambda row: [row[1].family_name, row[1].given_name, str(row[1].id)],
    ),
    access.PatientOrder.URGENCY: Listing(
        "panel",
        (int, datetime.fromisoformat, str, str, uuid.UUID),
        lambda rank, deadline, family, given, row_id: directory.PatientCursor(family, given, row_id, rank, deadline),
        lambda row: [
            str(row[1].severity_rank),
            row[1].respond_by.isoformat(),
            row[1].family_name,
            row[1].given_name,
            str(row[1].id),
        ],
    ),
}


async def patient_connection(
    info: Info[Context, None],
    first: int | None,
    after: str | None,
    *,
    order: access.PatientOrder = access.PatientOrder.NAME,
    care_team_id: uuid.UUID | None = None,
    with_open_alerts: bool | None = None,
) -> Connection[PatientType]:
    viewer = viewer_of(info)

    async def fetch(limit: int, position: directory.PatientCursor | None) -> list[tuple[Patient, Any]]:
        return await directory.list_patients(
            viewer,
            order=order,
            limit=limit,
            after=position,
            care_team_id=care_team_id,
            with_open_alerts=with_open_alerts,
        )

    def convert(row: tuple[Patient, directory.PatientCursor]) -> PatientType:
        return PatientType.from_model(row[0])

    return await paginate(info.context, _PATIENT_LISTINGS[order], first, after, fetch, each(convert))


class LoadsNodes(Protocol):
    """A node type that `node(id:)` answers for: its `load_nodes` keeps to the viewer's access."""

    @classmethod
    async def load_nodes(cls, info: Info[Context, None], node_ids: list[str]) -> list[Any]: ...


# The types `node(id:)` answers for, by name. Each is found through the schema, as Strawberry's own
# node field does, so this module need not import those that refer back to Patient (MessageThread).
NODE_TYPES = frozenset({"Patient", "Provider", "CareTeam", "MessageThread"})


DataSharingConsentResult = Annotated[
    DataSharingConsentType | NotFound | ValidationError, strawberry.union("DataSharingConsentResult")
]


@strawberry.type(name="DataSharingConsentPayload")
class DataSharingConsentPayload:
    result: DataSharingConsentResult


@strawberry.input
class DataSharingConsentInput:
    client_id: str


async def _consent_payload(
    info: Info[Context, None],
    input: DataSharingConsentInput,
    operation: Any,
) -> DataSharingConsentPayload:
    async def call() -> DataSharingConsent:
        row: DataSharingConsent = await operation(viewer_of(info), input.client_id, now=info.context.now())
        return row

    async def convert(row: DataSharingConsent) -> DataSharingConsentType:
        client = await row.api_client
        return DataSharingConsentType.from_model(row, ApiClientSummary(client_id=client.client_id, name=client.name))

    return await payload(DataSharingConsentPayload, call, convert)


@strawberry.type
class AccountsQuery:
    @strawberry.field(description="Who is signed in: a patient, provider, admin or EHR client, with its role.")
    def me(self, info: Info[Context, None]) -> ViewerType:
        return ViewerType.of(viewer_of(info))

    @strawberry.field(description="Any object by its global id; null when it does not exist or is not yours.")
    async def node(self, info: Info[Context, None], id: strawberry.ID) -> relay.Node | None:
        viewer_of(info)
        try:
            parsed = relay.GlobalID.from_id(id)
        except (ValueError, relay.GlobalIDValueError):
            return None
        if parsed.type_name not in NODE_TYPES:
            return None
        node_type = cast(type[LoadsNodes], parsed.resolve_type(info))
        [found] = await node_type.load_nodes(info, [parsed.node_id])
        node: relay.Node | None = found
        return node

    @strawberry.field(description="A patient's record, if you may see it.")
    async def patient(self, info: Info[Context, None], id: strawberry.ID) -> PatientType | None:
        viewer = viewer_of(info)
        patient_id = node_uuid(id, "Patient")
        with refusals_as_errors():
            if patient_id is None:
                raise domain.NotFound("patient")
            return PatientType.from_model(await directory.get_patient(viewer, patient_id))

    @strawberry.field(
        description=(
            "The patients you may see (a provider's panel). By default the most urgent first for viewers "
            "who may see clinical data, by name for the others (an admin, an EHR client without clinical:read)."
        )
    )
    async def patients(
        self,
        info: Info[Context, None],
        first: int | None = None,
        after: str | None = None,
        filter: PatientFilter | None = None,
        order_by: PatientOrder | None = None,  # type: ignore[valid-type]
    ) -> Connection[PatientType]:
        team = node_uuid(filter.care_team_id, "CareTeam") if filter and filter.care_team_id else None
        if filter and filter.care_team_id and team is None:
            raise BadUserInput("careTeamId is not a care team id")
        order = order_by or access.default_patient_order(viewer_of(info))
        return await patient_connection(
            info,
            first,
            after,
            order=order,
            care_team_id=team,
            with_open_alerts=filter.has_open_alerts if filter else None,
        )


@strawberry.type
class AccountsMutation:
    @strawberry.mutation(description="Let an EHR client serving your care team receive your record.")
    async def grant_data_sharing_consent(
        self, info: Info[Context, None], input: DataSharingConsentInput
    ) -> DataSharingConsentPayload:
        return await _consent_payload(info, input, consent.grant_data_sharing_consent)

    @strawberry.mutation(description="Stop sharing your record with an EHR client, from now on.")
    async def revoke_data_sharing_consent(
        self, info: Info[Context, None], input: DataSharingConsentInput
    ) -> DataSharingConsentPayload:
        return await _consent_payload(info, input, consent.revoke_data_sharing_consent)
