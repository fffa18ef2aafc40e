"""Accounts in the API: the viewer (`me`), patients, providers and care teams."""

from __future__ import annotations

from datetime import date

import strawberry
from strawberry.types import Info

from schema.context import Context
from schema.errors import Unauthenticated


@strawberry.type(name="CareTeam")
class CareTeamType:
    id: strawberry.ID
    name: str
    patients: list[PatientType]
    providers: list[ProviderType]


@strawberry.type(name="Patient")
class PatientType:
    id: strawberry.ID
    given_name: str
    family_name: str
    birth_date: date
    time_zone: str
    care_team: CareTeamType


@strawberry.type(name="Provider")
class ProviderType:
    id: strawberry.ID
    given_name: str
    family_name: str
    credentials: str
    npi: str | None
    care_teams: list[CareTeamType]


@strawberry.type
class AccountsQuery:
    @strawberry.field(description="The signed-in patient.")
    def me(self, info: Info[Context, None]) -> PatientType | None:
        if info.context.viewer is None:
            raise Unauthenticated("sign in first: send a bearer access token from POST /auth/token")
        return None
