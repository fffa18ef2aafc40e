"""Messaging and live updates: threads, unread counts, and subscriptions over real WebSockets."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from httpx_ws import aconnect_ws
from starlette.applications import Starlette

from api.app import create_app
from api.bus import make_bus
from api.database import use_database
from api.settings import Settings
from jobs import surveys as survey_jobs
from models.alerts.alerts import Alert
from models.identity.accounts import User
from models.kernel.clock import ManualClock
from models.kernel.events import BusEvent
from tests.conftest import REDIS_URL, Tokens, job_env, redis_answers
from tests.support.clinical import REPORT_SIDE_EFFECT, complete, start
from tests.support.graphql import gql
from tests.support.messaging import PROTOCOL, SEND, next_payload, subscribed, thread_of

THREADS = "{ threads { edges { node { id subject unreadCount messageCount } } } unreadMessageCount }"


async def test_a_provider_receives_a_patients_message_live(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    query = "subscription($t: ID!) { messageAdded(threadId: $t) { number body sender { name role } } }"
    async with subscribed(app, tokens.user("dr.rivera@demo.test"), query, {"t": thread}) as provider:
        await asyncio.sleep(0.1)  # the subscription is registered on the bus
        sent = await gql(
            client, SEND, {"input": {"threadId": thread, "body": "Slept 8 hours!"}}, token=tokens.user("alex@demo.test")
        )
        assert sent["data"]["sendMessage"]["result"]["__typename"] == "Message"
        payload = await next_payload(provider)
    assert payload["data"]["messageAdded"] == {
        "number": 5,
        "body": "Slept 8 hours!",
        "sender": {"name": "Alex Morgan", "role": "PATIENT"},
    }


async def test_another_patient_cannot_subscribe_to_a_thread(app: Starlette, tokens: Tokens) -> None:
    thread = await thread_of(app, "alex@demo.test")
    query = "subscription($t: ID!) { messageAdded(threadId: $t) { body } }"
    async with subscribed(app, tokens.user("blair@demo.test"), query, {"t": thread}) as blair:
        message = await blair.receive_json(timeout=5)
    # graphql-transport-ws: a resolver's refusal comes as `next` with errors, then `complete`.
    assert message["type"] == "next"
    assert message["payload"]["data"] is None
    assert [error["message"] for error in message["payload"]["errors"]] == ["thread not found"]
    assert message["payload"]["errors"][0]["extensions"] == {"code": "NOT_FOUND"}


async def test_providers_are_told_of_new_alerts_for_their_patients_only(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    query = "subscription { alertRaised { severity summary patient { givenName } } }"
    async with (
        subscribed(app, tokens.user("dr.rivera@demo.test"), query) as rivera,
        subscribed(app, tokens.user("dr.okafor@demo.test"), query) as okafor,
    ):
        await asyncio.sleep(0.1)
        report = {"code": "SHORTNESS_OF_BREATH", "grade": "MILD", "onsetAt": clock.now().isoformat()}
        await gql(client, REPORT_SIDE_EFFECT, {"input": report}, token=tokens.user("alex@demo.test"))
        payload = await next_payload(rivera)
        with pytest.raises(TimeoutError):
            await okafor.receive_json(timeout=0.8)
    assert payload["data"]["alertRaised"] == {
        "severity": "URGENT",
        "summary": "Shortness of breath reported as MILD.",
        "patient": {"givenName": "Alex"},
    }


async def test_a_patient_is_told_when_a_survey_opens(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    alex = tokens.fresh("alex@demo.test")
    session = (await start(client, alex, clock.now()))["result"]
    clock.advance(timedelta(hours=3))
    await complete(client, alex, session["id"])
    query = "subscription { surveyAvailable { instrument status } }"
    clock.advance(timedelta(hours=2))  # the post-session check is due (and the token is fresh)
    async with subscribed(app, str(alex), query) as patient:
        await asyncio.sleep(0.1)
        with use_database(app.state.database):
            await survey_jobs.open_due_surveys(job_env(clock))
        payload = await next_payload(patient)
    assert payload["data"]["surveyAvailable"] == {"instrument": "POST-SESSION", "status": "AVAILABLE"}


async def test_crisis_words_in_a_message_alert_the_team_and_the_message_is_still_delivered(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    sent = await gql(
        client,
        SEND,
        {"input": {"threadId": thread, "body": "I can't go on like this"}},
        token=tokens.user("alex@demo.test"),
    )
    assert sent["data"]["sendMessage"]["result"]["__typename"] == "Message"
    assert "988" in sent["data"]["sendMessage"]["crisisResources"]
    with use_database(app.state.database):
        alert = await Alert.get(patient__user__email="alex@demo.test", kind="CRISIS_LANGUAGE")
    assert alert.severity.value == "URGENT"


async def test_unread_counts_stay_exact_under_50_concurrent_sends_and_reads(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    rivera, alex = tokens.user("dr.rivera@demo.test"), tokens.user("alex@demo.test")
    mark = "mutation($t: ID!) { markThreadRead(input: {threadId: $t}) { result { __typename } } }"
    await gql(client, mark, {"t": thread}, token=alex)

    async def send(number: int) -> None:
        await gql(client, SEND, {"input": {"threadId": thread, "body": f"note {number}"}}, token=rivera)

    async def read() -> None:
        await gql(client, THREADS, token=alex)

    await asyncio.gather(*(send(n) for n in range(50)), *(read() for _ in range(50)))
    counts = await gql(client, THREADS, token=alex)
    [edge] = counts["data"]["threads"]["edges"]
    assert edge["node"]["unreadCount"] == 50
    assert edge["node"]["messageCount"] == 54
    assert counts["data"]["unreadMessageCount"] == 50
    await gql(client, mark, {"t": thread}, token=alex)
    assert (await gql(client, THREADS, token=alex))["data"]["unreadMessageCount"] == 0


async def test_a_client_that_reconnects_gets_what_it_missed(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    for body in ("one", "two"):
        await gql(client, SEND, {"input": {"threadId": thread, "body": body}}, token=tokens.user("dr.rivera@demo.test"))
    missed = await gql(
        client,
        "query($t: ID!) { node(id: $t) { ... on MessageThread { missedMessages(afterNumber: 4) { number body } } } }",
        {"t": thread},
        token=tokens.user("alex@demo.test"),
    )
    assert missed["data"]["node"]["missedMessages"] == [{"number": 5, "body": "one"}, {"number": 6, "body": "two"}]


@pytest.mark.parametrize("bus", ["in-process", "redis"])
async def test_a_message_sent_through_one_replica_reaches_a_subscriber_on_another(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette, bus: str
) -> None:
    if bus == "redis" and not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    shared = replace(settings, event_bus_url=REDIS_URL if bus == "redis" else None)
    replica_a, replica_b = create_app(shared, clock=clock), create_app(shared, clock=clock)
    thread = await thread_of(app, "alex@demo.test")
    query = "subscription($t: ID!) { messageAdded(threadId: $t) { body } }"
    async with (
        replica_a.router.lifespan_context(replica_a),
        replica_b.router.lifespan_context(replica_b),
        subscribed(replica_b, tokens.user("dr.rivera@demo.test"), query, {"t": thread}) as on_b,
    ):
        await asyncio.sleep(0.3)
        transport = httpx.ASGITransport(app=replica_a)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as to_a:
            body = {"input": {"threadId": thread, "body": f"via replica A ({bus})"}}
            await gql(to_a, SEND, body, token=tokens.user("alex@demo.test"))
        payload = await next_payload(on_b)
        # Exactly once, although both replicas dispatch.
        with pytest.raises(TimeoutError):
            await on_b.receive_json(timeout=0.8)
    assert payload["data"]["messageAdded"] == {"body": f"via replica A ({bus})"}


async def test_two_deployments_on_one_redis_do_not_hear_each_other() -> None:
    """Each deployment has its own channel (EVENT_BUS_CHANNEL). On a shared one, the other
    deployment's event numbered like ours reached our relay first, and ours was dropped as a repeat."""
    if not redis_answers():
        pytest.skip("no Redis on 127.0.0.1:6379 (CI has one)")
    run = uuid.uuid4().hex[:12]
    ours, theirs = make_bus(REDIS_URL, f"kf-test:{run}:ours"), make_bus(REDIS_URL, f"kf-test:{run}:theirs")

    def event(body: str) -> BusEvent:
        return BusEvent(7, "Message.created", "Message", uuid.uuid4(), None, {"body": body})

    await ours.start()
    await theirs.start()
    try:
        async with ours.subscribe() as events:
            await theirs.publish(event("theirs"))
            await ours.publish(event("ours"))
            received = await asyncio.wait_for(anext(events), timeout=5)
    finally:
        await ours.close()
        await theirs.close()
    assert received.payload == {"body": "ours"}


async def test_over_a_real_socket_a_provider_receives_a_patients_message(
    settings: Settings, clock: ManualClock, tokens: Tokens, app: Starlette
) -> None:
    """The same, end to end through uvicorn on a loopback port: TCP, HTTP and WebSocket frames."""
    import uvicorn

    served = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn.Config(served, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        thread = await thread_of(app, "alex@demo.test")
        query = "subscription($t: ID!) { messageAdded(threadId: $t) { body } }"
        async with (
            httpx.AsyncClient(base_url=base) as http,
            aconnect_ws(f"{base}/graphql", http, subprotocols=[PROTOCOL]) as provider,
        ):
            token = tokens.user("dr.rivera@demo.test")
            await provider.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            assert (await provider.receive_json(timeout=5))["type"] == "connection_ack"
            await provider.send_json(
                {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"t": thread}}}
            )
            await asyncio.sleep(0.2)
            body = {"input": {"threadId": thread, "body": "over the wire"}}
            await gql(http, SEND, body, token=tokens.user("alex@demo.test"))
            payload = await next_payload(provider)
        assert payload["data"]["messageAdded"] == {"body": "over the wire"}
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


async def test_a_subscription_ends_when_its_viewer_may_no_longer_see_the_events(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    thread = await thread_of(app, "alex@demo.test")
    query = "subscription($t: ID!) { messageAdded(threadId: $t) { body } }"
    async with subscribed(app, tokens.user("dr.rivera@demo.test"), query, {"t": thread}) as provider:
        await asyncio.sleep(0.1)
        with use_database(app.state.database):
            await User.filter(email="dr.rivera@demo.test").update(is_active=False)
        await gql(client, SEND, {"input": {"threadId": thread, "body": "private"}}, token=tokens.user("alex@demo.test"))
        message = await provider.receive_json(timeout=5)
    assert message == {"id": "1", "type": "complete"}


async def test_a_sent_message_answers_with_what_a_later_read_of_it_returns(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens
) -> None:
    """The write answers with the message it made, without reading it again: the same JSON as
    the thread's newest message read afterwards, by the patient and by their provider."""
    thread = await thread_of(app, "alex@demo.test")
    fields = "id number body sentAt replyToId sender { name role }"
    sent = await gql(
        client,
        "mutation Send($input: SendMessageInput!) { sendMessage(input: $input) {"
        f" result {{ __typename ... on Message {{ {fields} }} ... on Error {{ message }} }} }} }}",
        {"input": {"threadId": thread, "body": "  The nausea passed.  ", "idempotencyKey": "answer-1"}},
        token=tokens.user("alex@demo.test"),
    )
    answered = sent["data"]["sendMessage"]["result"]
    assert answered.pop("__typename") == "Message", answered
    assert answered["body"] == "The nausea passed."
    for reader in ("alex@demo.test", "dr.rivera@demo.test"):
        read = await gql(
            client,
            f'{{ node(id: "{thread}") {{ ... on MessageThread {{'
            f" messages(first: 1) {{ edges {{ node {{ {fields} }} }} }} }} }} }}",
            token=tokens.user(reader),
        )
        (newest,) = read["data"]["node"]["messages"]["edges"]
        assert newest["node"] == answered
