"""The GraphQL schema, composed from one module per area.

The root types list the areas' fields in the order the published schema has them (`schema.graphql`).

`build_schema` takes the protections' limits so the same code serves development (introspection
on) and production (off); `schema.graphql` at the root is the exported development schema.
"""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from schema.accounts import AccountsMutation, AccountsQuery
from schema.administration import AdministrationMutation, AdministrationQuery
from schema.alerts import AlertMutation, AlertQuery
from schema.audit import AuditQuery
from schema.clinic_sessions import ClinicSessionMutation
from schema.devices import DeviceMutation
from schema.dosing import DosingMutation, VoidSessionMutation
from schema.enrolment import EnrolmentMutation
from schema.errors import ERROR_TYPES
from schema.extensions import make_public, protections
from schema.fhir import ChangesQuery, FhirQuery
from schema.live import LiveSubscription
from schema.logins import LoginMutation, LoginQuery
from schema.messaging import MessagingMutation, MessagingQuery
from schema.opioids import OpioidMutation
from schema.plans import PlanMutation
from schema.query_cost import DEFAULT_MAX_QUERY_COST
from schema.reports import ReportMutation
from schema.second_factor import SecondFactorGate, SecondFactorMutation
from schema.surveys import SurveyMutation, SurveyQuery


@strawberry.type
class Query(
    AccountsQuery,
    AlertQuery,
    SurveyQuery,
    MessagingQuery,
    AuditQuery,
    FhirQuery,
    ChangesQuery,
    LoginQuery,
    AdministrationQuery,
):
    pass


@strawberry.type
class Mutation(
    AccountsMutation,
    PlanMutation,
    DosingMutation,
    ReportMutation,
    VoidSessionMutation,
    AlertMutation,
    ClinicSessionMutation,
    SurveyMutation,
    MessagingMutation,
    OpioidMutation,
    DeviceMutation,
    EnrolmentMutation,
    LoginMutation,
    AdministrationMutation,
    SecondFactorMutation,
):
    pass


class KetafollowSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Every result's errors, queries' and each subscription event's alike, pass here before
        they leave: mask the unexpected (logged once, with the request id, no request data)."""
        request_id = getattr(execution_context.context, "request_id", None) if execution_context else None
        for error in errors:
            make_public(error, request_id)


def build_schema(
    *,
    max_depth: int = 12,
    max_aliases: int = 15,
    max_tokens: int = 2000,
    max_cost: int = DEFAULT_MAX_QUERY_COST,
    max_page_size: int = 100,
    introspection: bool = True,
) -> KetafollowSchema:
    return KetafollowSchema(
        query=Query,
        mutation=Mutation,
        subscription=LiveSubscription,
        types=list(ERROR_TYPES),
        extensions=[
            *protections(
                max_depth=max_depth,
                max_aliases=max_aliases,
                max_tokens=max_tokens,
                max_cost=max_cost,
                max_page_size=max_page_size,
                introspection=introspection,
            ),
            SecondFactorGate,  # after the socket's token check: refuses enrol-only viewers' other fields
        ],
        config=StrawberryConfig(disable_field_suggestions=True),
    )


def export_schema() -> str:
    """The SDL committed as `schema.graphql` (the tests fail when the two differ)."""
    return build_schema().as_str() + "\n"
