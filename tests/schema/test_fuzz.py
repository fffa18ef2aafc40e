"""Bounded fuzzing: queries and mutations generated from `schema.graphql`, sent as each role.

hypothesis-graphql writes documents (valid ones, and ones with a single schema violation) from
the exported schema; ids are drawn from the demo clinic's records as well as at random, times
with and without an offset. Each document goes over ASGI with a real token of a patient, a
provider, the admin or the EHR client, and the answer and the database are checked:

- never a 500, never an internal error: every GraphQL error carries a client code;
- no message leaks internals (traceback, SQL, file path, exception class);
- nothing is half-written: every new or changed record of an outboxed table has its domain event
  from the same request, and every new event names a record that exists; a query writes only
  audit rows; a refused mutation (a request error, or an error member of its result) writes
  nothing but audit rows, except a safety refusal, which may raise alerts but never creates the
  record it refused; a write of patient data is audited.

`FUZZ_EXAMPLES` sets the examples per test (default small, for `make test`; `make fuzz` raises it).
Runs are derandomized: the same code fuzzes the same way in CI and on a laptop.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import graphql
import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema
from starlette.applications import Starlette
from strawberry import relay
from tortoise.models import Model

from api.database import use_database
from api.settings import Settings
from models.alerts.alerts import Alert, AlertEscalation
from models.care.dosing_records import DosingSession
from models.care.plan_records import TreatmentPlan, TreatmentPlanStatusChange
from models.care.pre_dose import CHECKLIST
from models.identity.accounts import ApiClient, CareTeam, DataSharingConsent, Patient, Provider, User
from models.kernel.audit import AuditEvent
from models.kernel.events import DomainEvent, Operation
from models.kernel.idempotency import IdempotencyKey
from models.messaging.messaging import Message, MessageThread, ThreadReadState
from models.notifications.notifications import Notification
from models.outcomes.opioids import CATALOGUE as OPIOIDS
from models.outcomes.opioids import OpioidDose
from models.reports.checkins import CheckIn
from models.reports.side_effects import CATALOGUE as SIDE_EFFECTS
from models.reports.side_effects import SideEffectReport
from models.surveys.survey_records import SurveyAssignment, SurveyResponse
from tests.conftest import START, Tokens

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SCHEMA = graphql.build_schema((Path(__file__).resolve().parents[2] / "schema.graphql").read_text())
ROLES = {
    "patient": "alex@demo.test",
    "provider": "dr.rivera@demo.test",
    "admin": "admin@demo.test",
    "ehr_client": "demo-ehr",
}
CLIENT_CODES = {
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
    "BAD_USER_INPUT",
    "BAD_REQUEST",
    "NOT_FOUND",
    "FORBIDDEN",
    "UNAUTHENTICATED",
    "QUERY_TOO_COSTLY",  # a generated document may nest lists past the cost limit
}
LEAK = re.compile(
    r"Traceback|File \"|/[\w.-]+/[\w.-]+\.py|\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b|sqlite|asyncpg"
    r"|psycopg|tortoise|\b\w*(Error|Exception)\b(?<!ValidationError)(?<!SafetyCheckFailed)|DoesNotExist",
)
# Records whose every write appends a DomainEvent (the outbox), by event resource type.
OUTBOXED: dict[str, type[Model]] = {
    "Alert": Alert,
    "CheckIn": CheckIn,
    "DosingSession": DosingSession,
    "MessageThread": MessageThread,
    "Message": Message,
    "OpioidDose": OpioidDose,
    "SideEffectReport": SideEffectReport,
    "SurveyAssignment": SurveyAssignment,
    "SurveyResponse": SurveyResponse,
    "TreatmentPlan": TreatmentPlan,
}
OTHER_ENTITIES: dict[str, type[Model]] = {
    "CareTeam": CareTeam,
    "User": User,
    "Patient": Patient,
    "Provider": Provider,
    "ApiClient": ApiClient,
    "DataSharingConsent": DataSharingConsent,
    "AlertEscalation": AlertEscalation,
    "ThreadReadState": ThreadReadState,
    "TreatmentPlanStatusChange": TreatmentPlanStatusChange,
}
COUNTED: dict[str, type[Model]] = {"IdempotencyKey": IdempotencyKey, "Notification": Notification}
ERROR_TYPES = {"ValidationError", "NotFound", "Conflict", "IdempotencyConflict", "SafetyCheckFailed"}
WRITE_ACTIONS = {"C", "U", "D", "E"}


# --- the documents ------------------------------------------------------------------------------


def _string(value: str) -> graphql.StringValueNode:
    return graphql.StringValueNode(value=value)


def _text(max_size: int) -> st.SearchStrategy[str]:
    """Any text but NUL, which is refused at the door (tests/schema/test_graphql_protections.py), and
    lone surrogates, which no UTF-8 request body can carry."""
    return st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=max_size)


def _times() -> st.SearchStrategy[graphql.ValueNode]:
    recent = st.datetimes(
        min_value=(START - timedelta(days=3)).replace(tzinfo=None),
        max_value=(START + timedelta(hours=1)).replace(tzinfo=None),
    )
    return st.one_of(
        recent.map(lambda moment: _string(moment.replace(tzinfo=UTC).isoformat())),
        recent.map(lambda moment: _string(moment.isoformat())),  # no offset: refused by the API
        st.datetimes().map(lambda moment: _string(moment.isoformat())),
        _text(30).map(_string),
    )


def _ints() -> st.SearchStrategy[graphql.ValueNode]:
    """Mostly values a form would send (ratings, blood pressures), sometimes any 32-bit integer."""
    return st.one_of(st.integers(0, 10), st.integers(40, 220), st.integers(-(2**31), 2**31 - 1)).map(
        lambda value: graphql.IntValueNode(value=str(value))
    )


def _floats() -> st.SearchStrategy[graphql.ValueNode]:
    return st.one_of(st.integers(0, 200).map(float), st.floats(allow_nan=False, allow_infinity=False)).map(
        lambda value: graphql.FloatValueNode(value=repr(value))
    )


def _dates() -> st.SearchStrategy[graphql.ValueNode]:
    return st.one_of(st.dates().map(lambda day: _string(day.isoformat())), _text(12).map(_string))


def _ids(known: tuple[str, ...]) -> st.SearchStrategy[graphql.ValueNode]:
    records = st.sampled_from(known).map(_string)
    return st.one_of(
        records,
        records,  # twice: mostly ids of records that exist
        st.uuids().map(lambda value: _string(str(value))),
        _text(40).map(_string),
    )


# Words the rules know, so that generated input also reaches the paths behind validation.
DOMAIN_WORDS = sorted(
    {*CHECKLIST, *SIDE_EFFECTS, *OPIOIDS, "PHQ-9", "GAD-7", "PAIN-NRS", "PEG-3", "1", "2", "9"}
    | {"mg", "mcg", "mcg/hr", "demo-ehr", "Patient", "Observation", "Flag", "MedicationAdministration", "AdverseEvent"}
)


def _strings() -> st.SearchStrategy[graphql.ValueNode]:
    longer_than_columns = st.integers(60, 2100).map(lambda size: "é" * size)
    return st.one_of(st.sampled_from(DOMAIN_WORDS), _text(40), longer_than_columns).map(_string)


def _result_typename() -> graphql.FieldNode:
    typename = graphql.FieldNode(name=graphql.NameNode(value="__typename"), arguments=(), directives=())
    return graphql.FieldNode(
        name=graphql.NameNode(value="result"),
        arguments=(),
        directives=(),
        selection_set=graphql.SelectionSetNode(selections=(typename,)),
    )


def _with_typenames(document: graphql.DocumentNode) -> str:
    """The document with `__typename` in every selection set, and each mutation's payload asked
    for its `result`, so each answer says what it is."""

    class AddTypename(graphql.Visitor):
        in_mutation = False
        depth = 0

        def enter_operation_definition(self, node: graphql.OperationDefinitionNode, *_: object) -> None:
            self.in_mutation = node.operation.value == "mutation"

        def enter_field(self, *_: object) -> None:
            self.depth += 1

        def leave_field(self, node: graphql.FieldNode, *_: object) -> graphql.FieldNode:
            self.depth -= 1
            if not (self.in_mutation and self.depth == 0 and node.selection_set is not None):
                return node
            selections = node.selection_set.selections
            if any(isinstance(s, graphql.FieldNode) and (s.alias or s.name).value == "result" for s in selections):
                return node
            return graphql.FieldNode(
                alias=node.alias,
                name=node.name,
                arguments=node.arguments,
                directives=node.directives,
                selection_set=graphql.SelectionSetNode(selections=(*selections, _result_typename())),
            )

        def leave_selection_set(self, node: graphql.SelectionSetNode, *_: object) -> graphql.SelectionSetNode:
            names = {s.name.value for s in node.selections if isinstance(s, graphql.FieldNode) and not s.alias}
            if "__typename" in names:
                return node
            typename = graphql.FieldNode(name=graphql.NameNode(value="__typename"), arguments=(), directives=())
            return graphql.SelectionSetNode(selections=(*node.selections, typename))

    return graphql.print_ast(graphql.visit(document, AddTypename()))


@functools.cache
def operations(known_ids: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Queries (several root fields) and mutations (one root field each), valid or not."""
    scalars = {
        "DateTime": _times(),
        "Date": _dates(),
        "ID": _ids(known_ids),
        "String": _strings(),
        "Int": _ints(),
        "Float": _floats(),
    }
    options: dict[str, Any] = {"custom_scalars": scalars, "allow_x00": False, "print_ast": _with_typenames}
    assert SCHEMA.query_type is not None and SCHEMA.mutation_type is not None
    query_fields = sorted(SCHEMA.query_type.fields)
    mutation_fields = sorted(SCHEMA.mutation_type.fields)
    valid_queries = from_schema(SCHEMA, fields=query_fields, **options)
    invalid = from_schema(SCHEMA, mode=Mode.NEGATIVE, **options)
    valid_mutations = st.sampled_from(mutation_fields).flatmap(
        lambda field: from_schema(SCHEMA, fields=[field], **options)
    )
    return st.one_of(valid_mutations, valid_queries, invalid)


# --- the database, before and after -------------------------------------------------------------


@dataclass
class Snapshot:
    rows: dict[str, dict[uuid.UUID, datetime]]
    counts: dict[str, int]
    last_seq: int

    @classmethod
    async def take(cls) -> Snapshot:
        rows = {}
        for name, model in {**OUTBOXED, **OTHER_ENTITIES}.items():
            rows[name] = dict(await model.all().values_list("id", "updated_at"))
        counts = {name: await model.all().count() for name, model in COUNTED.items()}
        last = await DomainEvent.all().order_by("-seq").first()
        return cls(rows, counts, last.seq if last else 0)

    def changes(self, after: Snapshot) -> dict[str, tuple[set[uuid.UUID], set[uuid.UUID]]]:
        """Per table: (created ids, changed ids); counted tables report created only."""
        found: dict[str, tuple[set[uuid.UUID], set[uuid.UUID]]] = {}
        for name, before_rows in self.rows.items():
            after_rows = after.rows[name]
            created = set(after_rows) - set(before_rows)
            changed = {key for key, stamp in before_rows.items() if after_rows.get(key, stamp) != stamp}
            changed |= set(before_rows) - set(after_rows)  # deleted
            if created or changed:
                found[name] = (created, changed)
        for name, count in self.counts.items():
            if after.counts[name] != count:
                found[name] = ({uuid.UUID(int=after.counts[name] - count)}, set())
        return found


def _describe(changes: dict[str, tuple[set[uuid.UUID], set[uuid.UUID]]]) -> str:
    return ", ".join(f"{name}: +{len(c)} ~{len(u)}" for name, (c, u) in changes.items()) or "nothing"


async def check_the_database(
    before: Snapshot,
    after: Snapshot,
    *,
    request_id: str,
    kind: str,
    refused: bool,
    result_type: str | None,
    success_type: str | None,
) -> None:
    changes = before.changes(after)
    events = await DomainEvent.filter(seq__gt=before.last_seq).order_by("seq")
    audits = await AuditEvent.filter(request_id=request_id)
    evented = {(event.resource_type, event.resource_id) for event in events}
    # The outbox: no record without its event, no event without its record.
    for name in OUTBOXED:
        created, changed = changes.get(name, (set(), set()))
        for record_id in created | changed:
            assert (name, record_id) in evented, f"{name} {record_id} was written without its domain event"
    for event in events:
        if event.operation != Operation.DELETED and event.resource_type in OUTBOXED:
            exists = await OUTBOXED[event.resource_type].exists(id=event.resource_id)
            assert exists, f"event {event.seq} names {event.resource_type} {event.resource_id}, which is not there"
    if kind == "query":
        assert not changes and not events, f"a query wrote {_describe(changes)}"
        return
    if refused or (result_type in ERROR_TYPES and result_type != "SafetyCheckFailed"):
        assert not changes and not events, f"a refused mutation ({result_type or 'error'}) wrote {_describe(changes)}"
    if result_type == "SafetyCheckFailed" and success_type in OUTBOXED:
        assert not changes.get(success_type, (set(), set()))[0], f"a refused {success_type} was created"
    if events and any(event.patient_id is not None for event in events):
        actions = {audit.action for audit in audits if audit.outcome == "SUCCESS"}
        assert actions & WRITE_ACTIONS, f"a write of patient data ({_describe(changes)}) left no audit event"


# --- the answer ---------------------------------------------------------------------------------


def _messages(value: Any) -> list[str]:
    """Every `message` string in a result (error members of payloads carry one)."""
    if isinstance(value, dict):
        found = [value["message"]] if isinstance(value.get("message"), str) else []
        return found + [m for item in value.values() for m in _messages(item)]
    if isinstance(value, list):
        return [m for item in value for m in _messages(item)]
    return []


def check_the_answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:500]}"
    body: dict[str, Any] = response.json()
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code in CLIENT_CODES, f"error without a client code: {error}"
    for message in [e["message"] for e in body.get("errors") or []] + _messages(body.get("data")):
        assert not LEAK.search(message), f"a message leaks internals: {message!r}"
        assert "did you mean" not in message.lower(), message
    return body


def _root_result(document: str, body: dict[str, Any]) -> tuple[str, bool, str | None, str | None]:
    """(kind, refused, the result member's type, the mutation's success type)."""
    parsed = graphql.parse(document)
    operation = next(d for d in parsed.definitions if isinstance(d, graphql.OperationDefinitionNode))
    kind = operation.operation.value
    if kind != "mutation":
        return kind, bool(body.get("errors")), None, None
    field = next(
        s
        for s in operation.selection_set.selections
        if isinstance(s, graphql.FieldNode) and s.name.value != "__typename"
    )
    payload = (body.get("data") or {}).get((field.alias or field.name).value)
    result = payload.get("result") if isinstance(payload, dict) else None
    result_type = result.get("__typename") if isinstance(result, dict) else None
    assert SCHEMA.mutation_type is not None
    payload_type = graphql.get_named_type(SCHEMA.mutation_type.fields[field.name.value].type)
    success = None
    if isinstance(payload_type, graphql.GraphQLObjectType) and "result" in payload_type.fields:
        union = graphql.get_named_type(payload_type.fields["result"].type)
        if isinstance(union, graphql.GraphQLUnionType):
            success = next((t.name for t in union.types if t.name not in ERROR_TYPES), None)
    # Refused: the document, or the mutation field itself, failed. An error in a field read after
    # the write (e.g. a bad cursor in the selection) nulls the payload but does not undo the write.
    key = (field.alias or field.name).value
    refused = any(len(error.get("path") or []) <= 1 for error in body.get("errors") or []) or (
        payload is None and not body.get("errors")
    )
    assert refused or payload is not None or all((e.get("path") or [None])[0] == key for e in body["errors"])
    return kind, refused, result_type, success


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """conftest's app without its scheduler: a job writing between two snapshots would look like
    the request's doing."""
    return replace(settings, run_scheduler=False)


@pytest.fixture
async def known_ids(app: Starlette) -> tuple[str, ...]:
    """Global ids (and raw UUIDs, for FHIR) of demo records, so mutations reach their rules.
    Read once, before the first example: the strategy must not change while examples are drawn."""
    assert app.state.scheduler is None, "the fuzz app runs no jobs"
    kinds = {
        "Patient": Patient,
        "TreatmentPlan": TreatmentPlan,
        "DosingSession": DosingSession,
        "Alert": Alert,
        "MessageThread": MessageThread,
        "Message": Message,
        "SurveyAssignment": SurveyAssignment,
        "CheckIn": CheckIn,
        "SideEffectReport": SideEffectReport,
        "CareTeam": CareTeam,
        "Provider": Provider,
    }
    known: list[str] = []
    with use_database(app.state.database):
        for name, model in kinds.items():
            for record_id in await model.all().order_by("id").limit(3).values_list("id", flat=True):
                known += [str(relay.GlobalID(name, str(record_id))), str(record_id)]
    return tuple(known)


def _token(role: str, tokens: Tokens) -> str:
    return tokens.client(ROLES[role]) if role == "ehr_client" else tokens.user(ROLES[role])


@pytest.mark.parametrize("role", sorted(ROLES))
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The app and its database are made once per test (not per example), on purpose: state
    # carries over between examples, as it does between a real client's requests.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_fuzzed_operations_never_fail_or_leave_half_written_records(
    app: Starlette,
    client: httpx.AsyncClient,
    tokens: Tokens,
    known_ids: tuple[str, ...],
    role: str,
    data: st.DataObject,
) -> None:
    document = data.draw(operations(known_ids), label="document")
    hypothesis.note(f"document: {document}")
    token = _token(role, tokens)
    with use_database(app.state.database):
        before = await Snapshot.take()
    response = await client.post("/graphql", json={"query": document}, headers={"Authorization": f"Bearer {token}"})
    body = check_the_answer(response)
    kind, refused, result_type, success_type = _root_result(document, body)
    with use_database(app.state.database):
        after = await Snapshot.take()
        await check_the_database(
            before,
            after,
            request_id=response.headers["x-request-id"],
            kind=kind,
            refused=refused,
            result_type=result_type,
            success_type=success_type,
        )


# --- the checks themselves can fail -------------------------------------------------------------


async def test_the_database_check_catches_a_record_written_without_its_event(app: Starlette) -> None:
    with use_database(app.state.database):
        before = await Snapshot.take()
        check_in = await CheckIn.all().order_by("id").first()
        assert check_in is not None
        check_in.note = "changed behind the outbox's back"
        await check_in.save()
        after = await Snapshot.take()
        with pytest.raises(AssertionError, match="without its domain event"):
            await check_the_database(
                before,
                after,
                request_id="none",
                kind="mutation",
                refused=False,
                result_type="CheckIn",
                success_type="CheckIn",
            )


async def test_the_database_check_catches_a_refused_mutation_that_wrote(app: Starlette) -> None:
    with use_database(app.state.database):
        before = await Snapshot.take()
        consent = await DataSharingConsent.all().order_by("id").first()
        assert consent is not None
        consent.revoked_at = START
        await consent.save()
        after = await Snapshot.take()
        with pytest.raises(AssertionError, match="a refused mutation"):
            await check_the_database(
                before,
                after,
                request_id="none",
                kind="mutation",
                refused=False,
                result_type="NotFound",
                success_type=None,
            )


@pytest.mark.parametrize(
    "error",
    [
        {"message": "boom"},  # no code
        {"message": "Unexpected error. Reference: x", "extensions": {"code": "INTERNAL_SERVER_ERROR"}},
        {"message": 'Traceback (most recent call last): File "/srv/api/app.py"', "extensions": {"code": "BAD_REQUEST"}},
        {"message": "IntegrityError: duplicate key", "extensions": {"code": "BAD_USER_INPUT"}},
        {"message": "Unknown field. Did you mean 'me'?", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}},
    ],
)
def test_the_answer_check_catches_untyped_internal_or_leaking_errors(error: dict[str, Any]) -> None:
    response = httpx.Response(200, json={"data": None, "errors": [error]})
    with pytest.raises(AssertionError):
        check_the_answer(response)


def test_the_answer_check_accepts_a_typed_refusal() -> None:
    refusal = {"message": "patient not found", "extensions": {"code": "NOT_FOUND"}}
    body = check_the_answer(httpx.Response(200, json={"data": None, "errors": [refusal]}))
    assert body["errors"] == [refusal]
