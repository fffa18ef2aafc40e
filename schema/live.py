"""Live updates in the API (GraphQL subscriptions over WebSocket): new messages, raised alerts,
surveys as they open. Each can resume from a time within the replay window (docs/api.md, "Messages
and live updates"); each event sent is a request of its own (ARCHITECTURE.md decision 13)."""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import datetime
from typing import Annotated, Any

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from models.alerts import alerts as alert_ops
from models.identity.access import Viewer
from models.identity.accounts import Role
from models.kernel import errors as domain
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome
from models.kernel.events import REPLAY_WINDOW, BusEvent, events_since
from models.messaging import messaging
from models.surveys import assignments
from schema.alerts import AlertType
from schema.context import Context
from schema.errors import BadUserInput, ClientError, Forbidden, RecordNotFound
from schema.extensions import public_error
from schema.ids import node_id
from schema.messaging import MessageType
from schema.permissions import viewer_of
from schema.surveys import SurveyAssignmentType


def guarded(
    stream: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncGenerator[Any, None]]:
    """Subscriptions fail like queries do: refusals with their code, the unexpected masked. Each
    holds one of its viewer's live subscriptions while it runs (a cap per viewer, api.sockets)."""

    @functools.wraps(stream)
    async def run(self: Any, info: Info[Context, None], **arguments: Any) -> AsyncGenerator[Any, None]:
        claim = info.context.claim_subscription
        try:
            async with claim() if claim is not None else contextlib.nullcontext():
                async for item in stream(self, info, **arguments):
                    yield item
        except GraphQLError:
            raise
        except Exception as error:
            raise public_error(error, info.context.request_id) from error

    return run


_SINCE = (
    "Resume: first every event since this time that you may see (at least once, in order;"
    " deduplicate by id), then the live ones. At most 7 days back."
)


def _replay_from(info: Info[Context, None], since: datetime | None) -> datetime | None:
    """Checks `since` against the replay window (docs/api.md, "Messages and live updates")."""
    if since is None:
        return None
    if since.tzinfo is None:
        raise BadUserInput("since needs a time zone (an ISO 8601 time with an offset, e.g. Z)")
    if since < info.context.now() - REPLAY_WINDOW:
        raise BadUserInput(
            f"since is older than the {REPLAY_WINDOW.days}-day replay window: read what you missed"
            " through queries, then subscribe again without since"
        )
    return since


async def _events(
    info: Info[Context, None], wanted: str, since: datetime | None, *, patient_id: uuid.UUID | None = None
) -> AsyncGenerator[BusEvent, None]:
    """The events of a type: with `since`, those the outbox holds from then on first, then the
    live ones. Listening starts before the replay, so nothing falls between the two; a live event
    already replayed is dropped by its `seq`."""
    bus = info.context.bus
    if bus is None:  # pragma: no cover - the app always has one
        raise RecordNotFound("live updates are not available")
    async with bus.subscribe() as events:
        replayed: set[int] = set()
        if since is not None:
            async for stored in events_since(wanted, since, patient_id=patient_id):
                replayed.add(stored.seq)
                yield BusEvent.of(stored)
                _end_if_undelivered(info.context)
        async for event in events:
            if event.type == wanted and event.seq not in replayed:
                yield event
                _end_if_undelivered(info.context)


def _end_if_undelivered(context: Context) -> None:
    """The event just sent went out as an error (its audit write failed, e.g. the database is
    away): end the stream with that error rather than go on without it. The client resubscribes
    with `since` (the time of the last event it did receive) and gets this one from the outbox."""
    if context.undelivered is not None:
        error, context.undelivered = context.undelivered, None
        raise error


async def _next_event(info: Info[Context, None]) -> Viewer | None:
    """Each event sent is a request of its own (ARCHITECTURE.md decision 13): a new request id,
    empty loaders, and the viewer as they are now, with a trail of their own, which
    `schema.extensions.AuditFlush` writes (root and nested reads alike) before the event is sent.
    A login that ended, a deactivated account or an expired token ends the stream; a change of role,
    care team or consent applies to this event."""
    context = info.context
    if context.reauthenticate is None:  # pragma: no cover - subscriptions run over WebSocket only
        return viewer_of(info)
    context.next_event()
    try:
        viewer = await context.reauthenticate(context.new_trail())
    except ClientError:
        return None
    context.viewer = viewer
    return viewer


def _delivered(viewer: Viewer, patient_id: uuid.UUID | None, resource_type: str) -> None:
    """Each event a subscriber receives is a read of patient data (written with the event's other reads)."""
    viewer.audit.add(AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id))


@strawberry.type(name="Subscription")
class LiveSubscription:
    @strawberry.subscription(description="New messages in a thread you take part in.")
    @guarded
    async def message_added(
        self,
        info: Info[Context, None],
        thread_id: strawberry.ID,
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[MessageType, None]:
        viewer = viewer_of(info)
        start = _replay_from(info, since)
        try:
            thread = await messaging.get_thread(viewer, node_id(thread_id, "MessageThread", "threadId"))
        except (domain.NotFound, domain.InvalidInput) as refusal:
            await viewer.audit.flush(viewer, info.context.now())
            raise RecordNotFound("thread not found") from refusal
        await viewer.audit.flush(viewer, info.context.now())
        async for event in _events(info, "Message.created", start, patient_id=thread.patient_id):  # type: ignore[attr-defined]
            if event.payload.get("threadId") != str(thread.id):
                continue
            current = await _next_event(info)
            if current is None:
                return
            try:
                message = await messaging.get_message(current, event.resource_id)
            except domain.NotFound:
                await current.audit.flush(current, info.context.now())
                return  # no longer in this thread (e.g. moved to another care team): the stream ends
            yield MessageType.from_model(message)

    @strawberry.subscription(description="Alerts raised for your care teams' patients (providers).")
    @guarded
    async def alert_raised(
        self,
        info: Info[Context, None],
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[AlertType, None]:
        if not viewer_of(info).is_role(Role.PROVIDER):
            raise Forbidden("alerts are for the providers of the patient's care team")
        async for event in _events(info, "Alert.raised", _replay_from(info, since)):
            current = await _next_event(info)
            if current is None:
                return
            if not current.is_role(Role.PROVIDER):
                return  # no longer a provider: the stream ends
            alert = await alert_ops.raised_alert(current, event.resource_id)
            if alert is not None:
                _delivered(current, alert.patient_id, "Alert")  # type: ignore[attr-defined]
                yield AlertType.from_model(alert)

    @strawberry.subscription(description="Your surveys as they open (patients).")
    @guarded
    async def survey_available(
        self,
        info: Info[Context, None],
        since: Annotated[datetime | None, strawberry.argument(description=_SINCE)] = None,
    ) -> AsyncGenerator[SurveyAssignmentType, None]:
        viewer = viewer_of(info)
        if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
            raise Forbidden("surveys are the patient's")
        start = _replay_from(info, since)
        async for event in _events(info, "SurveyAssignment.available", start, patient_id=viewer.patient_id):
            if event.patient_id != viewer.patient_id:
                continue
            current = await _next_event(info)
            if current is None:
                return
            assignment = await assignments.opened_assignment(viewer.patient_id, event.resource_id)
            if assignment is not None:
                _delivered(current, viewer.patient_id, "SurveyAssignment")
                yield SurveyAssignmentType.from_model(assignment)
