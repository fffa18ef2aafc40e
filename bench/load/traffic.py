"""Who does what during the load, and what the server acknowledged.

Each simulated user is one coroutine sending one request after another (no think time: the test
measures how much the servers can take, so they are kept busy):

- patients: check in (with an idempotency key; now and then the phone resends one, which must
  answer the same check-in), answer PAIN-NRS or PHQ-9 taken at any time, write in their thread,
  read their threads;
- providers: read the panel (`patients(first: 50)` with a few fields) and the alert queue;
- the EHR client: pages the change feed from its cursor, and polls once a second when caught up.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.load.wire import Session

CHECK_IN = """
mutation CheckIn($input: SubmitCheckInInput!) {
  submitCheckIn(input: $input) {
    result { __typename ... on CheckIn { id recordedAt pain } ... on Error { message } }
    crisisResources
  }
}
"""
SURVEY = """
mutation Survey($input: SubmitSurveyResponseInput!) {
  submitSurveyResponse(input: $input) {
    result { __typename ... on SurveyResponse { id instrument totalScore severity } ... on Error { message } }
    crisisResources
  }
}
"""
SEND = """
mutation Send($input: SendMessageInput!) {
  sendMessage(input: $input) {
    result { __typename ... on Message { id sentAt } ... on Error { message } }
  }
}
"""
THREADS = """
query Threads {
  threads(first: 10) {
    edges { node { id subject unreadCount messages(first: 20) { edges { node { id body sentAt sender { id } } } } } }
  }
}
"""
NEW_THREAD = """
mutation NewThread($input: CreateMessageThreadInput!) {
  createMessageThread(input: $input) { result { __typename ... on MessageThread { id } ... on Error { message } } }
}
"""
SHARE = """
mutation Share($input: DataSharingConsentInput!) {
  grantDataSharingConsent(input: $input) { result { __typename ... on Error { message } } }
}
"""
PANEL = """
query Panel {
  patients(first: 50) {
    edges { node { id givenName familyName openAlertCount highestAlertSeverity nextSurveyDueAt lastSessionAt } }
    pageInfo { endCursor hasNextPage }
  }
}
"""
ALERTS = """
query Alerts {
  alerts(status: [OPEN, ACKNOWLEDGED], first: 20) {
    edges { node { id kind severity status patient { id } createdAt respondBy } }
  }
}
"""
CHANGES = """
query Changes($after: String, $first: Int) {
  changes(after: $after, first: $first) {
    edges { node { sequence resourceType resourceId action version } }
    pageInfo { endCursor hasNextPage }
  }
}
"""
CHANGES_PAGE = 100
EHR_IDLE_SECONDS = 1.0
RESEND_SHARE = 0.05  # of acknowledged check-ins, sent again with the same key and input
PATIENT_MIX = {"submitCheckIn": 30, "submitSurveyResponse": 25, "sendMessage": 15, "threads": 30}
PROVIDER_MIX = {"patients(first: 50)": 60, "alerts": 40}
EHR_CLIENT = "demo-ehr"


def node_id(global_id: str) -> str:
    """The UUID inside a Relay global id (`base64("CheckIn:<uuid>")`)."""
    return base64.b64decode(global_id).decode().split(":", 1)[1]


@dataclass
class Patient:
    email: str
    session: Session
    shares_with_ehr: bool  # in the EHR client's care team and consented: its changes reach the feed
    thread_id: str = ""


@dataclass
class Ledger:
    """What the server acknowledged, by record: (id, patient e-mail)."""

    check_ins: dict[str, str] = field(default_factory=dict)
    survey_responses: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    resends: int = 0
    resends_answered_otherwise: list[str] = field(default_factory=list)


@dataclass
class FeedCopy:
    """The EHR client's side: its cursor and every change received, by (resourceType, id)."""

    cursor: str | None = None
    received: Counter[tuple[str, str]] = field(default_factory=Counter)
    pages: int = 0

    @property
    def changes(self) -> int:
        return self.received.total()


async def prepare_patient(patient: Patient) -> None:
    """Before the load: a thread to write in (the first one, else a new one), and consent to the
    EHR client for those in its care team."""
    data = await patient.session.graphql("threads", "{ threads(first: 1) { edges { node { id } } } }")
    assert data is not None, patient.session.recorder.operations["threads"].examples
    edges = data["threads"]["edges"]
    if edges:
        patient.thread_id = edges[0]["node"]["id"]
    else:
        created = await patient.session.graphql(
            "createMessageThread", NEW_THREAD, {"input": {"subject": "Between sessions"}}, expect="MessageThread"
        )
        assert created is not None, patient.session.recorder.operations["createMessageThread"].examples
        patient.thread_id = created["createMessageThread"]["result"]["id"]
    if patient.shares_with_ehr:
        shared = await patient.session.graphql(
            "grantDataSharingConsent", SHARE, {"input": {"clientId": EHR_CLIENT}}, expect="DataSharingConsent"
        )
        assert shared is not None, patient.session.recorder.operations["grantDataSharingConsent"].examples


NUMBERS = itertools.count(1)  # makes each note and message body unique


async def check_in(patient: Patient, ledger: Ledger, rng: random.Random) -> None:
    # Sent from a phone that may have been offline: recorded up to two hours ago.
    recorded = datetime.now(UTC) - timedelta(minutes=rng.uniform(0, 120))
    data = {
        "idempotencyKey": f"load-{uuid.uuid4()}",
        "recordedAt": recorded.isoformat(),
        "pain": rng.randint(0, 10),
        "mood": rng.randint(0, 10),
        "sleep": rng.randint(0, 10),
        "note": f"load check-in {next(NUMBERS)}",
    }
    answer = await patient.session.graphql("submitCheckIn", CHECK_IN, {"input": data}, expect="CheckIn")
    if answer is None:
        return
    stored = node_id(answer["submitCheckIn"]["result"]["id"])
    ledger.check_ins[stored] = patient.email
    if rng.random() < RESEND_SHARE:  # the answer was lost on the way: the phone sends it again
        again = await patient.session.graphql(
            "submitCheckIn (resent, same key)", CHECK_IN, {"input": data}, expect="CheckIn"
        )
        if again is not None:
            ledger.resends += 1
            if node_id(again["submitCheckIn"]["result"]["id"]) != stored:
                ledger.resends_answered_otherwise.append(stored)


async def survey(patient: Patient, ledger: Ledger, rng: random.Random) -> None:
    if rng.random() < 0.7:
        instrument, answers = "PAIN-NRS", [{"linkId": "1", "value": rng.randint(0, 10)}]
    else:
        # Item 9 (thoughts of self-harm) stays 0: a positive one is a clinical event, not load.
        instrument = "PHQ-9"
        answers = [{"linkId": str(item), "value": rng.randint(0, 2) if item < 9 else 0} for item in range(1, 10)]
    data = {"idempotencyKey": f"load-{uuid.uuid4()}", "instrument": instrument, "answers": answers}
    answer = await patient.session.graphql("submitSurveyResponse", SURVEY, {"input": data}, expect="SurveyResponse")
    if answer is not None:
        ledger.survey_responses[node_id(answer["submitSurveyResponse"]["result"]["id"])] = patient.email


async def send_message(patient: Patient, ledger: Ledger, rng: random.Random) -> None:
    data = {
        "idempotencyKey": f"load-{uuid.uuid4()}",
        "threadId": patient.thread_id,
        "body": f"load message {next(NUMBERS)}: the nausea was milder this time",
    }
    answer = await patient.session.graphql("sendMessage", SEND, {"input": data}, expect="Message")
    if answer is not None:
        ledger.messages[node_id(answer["sendMessage"]["result"]["id"])] = patient.email


async def read_threads(patient: Patient, ledger: Ledger, rng: random.Random) -> None:
    await patient.session.graphql("threads", THREADS)


PATIENT_OPERATIONS = {
    "submitCheckIn": check_in,
    "submitSurveyResponse": survey,
    "sendMessage": send_message,
    "threads": read_threads,
}


async def patient_loop(patient: Patient, ledger: Ledger, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    names, weights = list(PATIENT_MIX), list(PATIENT_MIX.values())
    while time.monotonic() < deadline:
        [name] = rng.choices(names, weights)
        await PATIENT_OPERATIONS[name](patient, ledger, rng)


async def provider_loop(session: Session, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    names, weights = list(PROVIDER_MIX), list(PROVIDER_MIX.values())
    while time.monotonic() < deadline:
        [name] = rng.choices(names, weights)
        await session.graphql(name, PANEL if name == "patients(first: 50)" else ALERTS)


async def pull(session: Session, copy: FeedCopy, name: str = "changes") -> bool | None:
    """One page of the feed from the client's cursor: whether there is more (None: it failed)."""
    data = await session.graphql(name, CHANGES, {"after": copy.cursor, "first": CHANGES_PAGE})
    if data is None:
        return None
    connection: dict[str, Any] = data["changes"]
    for edge in connection["edges"]:
        copy.received[(edge["node"]["resourceType"], edge["node"]["resourceId"])] += 1
    copy.cursor = connection["pageInfo"]["endCursor"] or copy.cursor
    copy.pages += 1
    return bool(connection["pageInfo"]["hasNextPage"])


async def ehr_loop(session: Session, copy: FeedCopy, deadline: float) -> None:
    while time.monotonic() < deadline:
        if not await pull(session, copy):
            await asyncio.sleep(max(0.0, min(EHR_IDLE_SECONDS, deadline - time.monotonic())))


async def catch_up(session: Session, copy: FeedCopy, expected: set[tuple[str, str]], within: float) -> None:
    """After the load: page until the feed is drained and holds what is expected, or time is up
    (on PostgreSQL the feed holds a change back while an older transaction is still open)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        more = await pull(session, copy, "changes (catch-up after the load)")
        if more:
            continue
        if expected <= copy.received.keys():
            return
        await asyncio.sleep(0.2)
