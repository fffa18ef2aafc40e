"""`make faults` (`python -m tests.faults`): backend faults under two replicas, judged.

A fresh PostgreSQL database (migrated and seeded by the real CLI, plus patients, as `make load`
does), two `ketafollow serve` replicas whose DATABASE_URL goes through the suite's proxy in front
of 127.0.0.1:5432 and whose EVENT_BUS_URL and RATE_LIMIT_URL go through its proxy in front of
127.0.0.1:6379. Patients write all along (check-ins, side-effect reports, messages; idempotency
keys; every failure retried on the other replica until acknowledged; each side-effect report
raises an alert); a provider's socket on replica 1 stays subscribed to the messages of their
patients' threads and to their alerts; another provider's socket drops at each fault and
reconnects with `since` afterwards. Then the faults of scenarios.plan(), one after another, and
the checks:

- every acknowledged write is in the database, once (read with asyncpg, not through the app);
- every message and alert in the database reached the live subscriber, and the resuming one,
  each the ones it may see;
- no live stream ended (under a database fault: only with SERVICE_UNAVAILABLE); no request waited
  longer than REQUEST_TIMEOUT_SECONDS + 1 s; every answer was a success or a 503
  SERVICE_UNAVAILABLE in GraphQL JSON (429 in JSON too);
- /readyz said 503 within 2 s of a database hang; SIGTERM ended a replica within
  SHUTDOWN_TIMEOUT_SECONDS + 1 s, during a database hang too; every replica answered again
  within RECOVER_WITHIN of the end of each fault.

Prints a table (one row per scenario, one for the steady traffic between them) and exits 1 when a
check failed, 2 when PostgreSQL or Redis is not there. FAULTS_SHORT=1: every fault shorter (a
couple of minutes in all). Loopback only; the servers' output is in var/faults/.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg

from bench.load.patients import PASSWORD
from bench.load.servers import (
    DEMO_PATIENTS,
    Configuration,
    Server,
    extra_patient_emails,
    free_port,
    fresh_database,
    postgres_answers,
    prepare_database,
    redis_answers,
    server_environment,
)
from bench.load.traffic import Patient as LoadPatient
from bench.load.traffic import prepare_patient
from bench.load.wire import Recorder, Session
from tests.faults import scenarios
from tests.faults.clients import Answer, Api, Patient, Phase, Subscriber, Write, patient_loop
from tests.faults.proxy import FaultProxy
from tests.faults.scenarios import Outcome, Run, Scenario

POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"  # each run creates and drops its own database there
POSTGRES_PORT, REDIS_PORT = 5432, 6379
EXTRA_PATIENTS = 6  # with the 4 demo ones: 5 in North (Dr Rivera's), 5 in South (Dr Okafor's)
LIVE = ("dr.rivera@demo.test", "North")  # stays connected on replica 1 all along
RESUMING = ("dr.okafor@demo.test", "South")  # drops at each fault, reconnects with since
OVERALL = 300.0 if scenarios.SHORT else 900.0  # the whole run, set-up and clean-up included
FINISH_WITHIN = 60.0  # after the last fault, for writes still being retried
CATCH_UP_WITHIN = 30.0  # for the subscribers to receive the last messages
LOGS = Path(__file__).resolve().parents[2] / "var" / "faults"
STEADY = "steady"
# Which rows the suite wrote, by the marker each write carries: (id, marker).
ROWS = {
    "check-in": "SELECT id::text, note FROM check_in WHERE note LIKE 'fault %'",
    "side effect": "SELECT id::text, note FROM side_effect_report WHERE note LIKE 'fault %'",
    "message": "SELECT id::text, body FROM message WHERE body LIKE 'fault %'",
}


@dataclass
class Row:
    """The report's line for a scenario (or the steady traffic), and why it failed, if it did."""

    name: str
    fault: str
    writes: int = 0
    lost: int = 0
    duplicated: int = 0
    unanswered: int = 0
    events: int = 0
    live_missed: int = 0
    resumed_missed: int = 0
    ended: int = 0
    requests: int = 0
    worst_wait: float = 0.0
    slowest: str = ""  # the request that waited `worst_wait`
    out_of_shape: int = 0
    ready_503: str = "-"
    exit_after: str = "-"
    recovery: str = "-"
    failures: list[str] = field(default_factory=list)


def seconds(value: float | None, *, missing: str) -> str:
    return missing if value is None else f"{value:.1f}"


async def stored(database_url: str) -> dict[str, list[tuple[str, str]]]:
    connection = await asyncpg.connect(database_url)
    try:
        return {kind: [(r[0], r[1]) for r in await connection.fetch(sql)] for kind, sql in ROWS.items()}
    finally:
        await connection.close()


def during(outcomes: list[Outcome], answer: Answer) -> Outcome | None:
    """The scenario whose fault the answer was waited for in (it may have been sent just before)."""
    for outcome in outcomes:
        start, end = outcome.window
        if answer.started < end and answer.started + answer.seconds > start:
            return outcome
    return None


def by_scenario_name(outcomes: list[Outcome], name: str) -> Outcome | None:
    return next((o for o in outcomes if o.scenario.name == name), None)


def judge(
    outcomes: list[Outcome],
    writes: list[Write],
    rows: dict[str, list[tuple[str, str]]],
    api: Api,
    live: Subscriber,
    resumer: Subscriber,
    events: list[Stored],
) -> list[Row]:
    """One row per scenario and one for the steady traffic: the figures, and a failure for each
    check that did not hold."""
    table = {STEADY: Row(STEADY, "none")} | {
        o.scenario.name: Row(o.scenario.name, o.scenario.describe) for o in outcomes
    }
    ids_of: dict[str, set[str]] = {}
    for kind_rows in rows.values():
        for record, marker in kind_rows:
            ids_of.setdefault(marker, set()).add(record)
    by_marker = {write.marker: write for write in writes}
    for write in writes:
        row = table[write.scenario]
        row.writes += 1
        in_database = ids_of.get(write.marker, set())
        if write.refused:
            row.failures.append(f"a {write.kind} was refused: {write.refused}")
        elif not write.acknowledged:
            row.unanswered += 1
        if write.ids - in_database:
            row.lost += 1
        if len(write.ids) > 1 or len(in_database) > 1:
            row.duplicated += 1
    for subscriber in (live, resumer):
        for event in events:
            write = by_marker.get(event.marker)
            if write is None or not event.seen_by(subscriber):
                continue
            row = table[write.scenario]
            if subscriber is live:
                row.events += 1
            if event.id not in subscriber.received:
                # Counted against the fault after which the client resubscribed past it, if it did.
                skipping = skipped_by(subscriber, event)
                missed_in = table[skipping[2] if skipping is not None else write.scenario]
                if subscriber is live:
                    missed_in.live_missed += 1
                else:
                    missed_in.resumed_missed += 1
    # The live subscriber's streams that ended, per row (a stream refused again and again while
    # the database is away counts once), and whether each ending said why in the expected shape.
    ended: dict[str, set[str | None]] = {}
    for ending in live.endings:
        ended.setdefault(ending.scenario, set()).add(ending.operation)
        outcome = by_scenario_name(outcomes, ending.scenario)
        database_fault = outcome is not None and outcome.scenario.backend == "database"
        if database_fault and ending.operation is not None and ending.codes == {"SERVICE_UNAVAILABLE"}:
            continue  # the database is away: the stream ends saying so, the client resubscribes with since
        reasons = table[ending.scenario].failures
        if sum(f.startswith("a live stream ended") for f in reasons) < 3:
            codes = ", ".join(sorted(ending.codes)) or "no error"
            reasons.append(f"a live stream ended ({codes}): {ending.why[:160]}")
    for name, operations in ended.items():
        table[name].ended = len(operations)
    by_scenario = {o.scenario.name: o for o in outcomes}
    for answer in api.answers:
        outcome = during(outcomes, answer) or by_scenario.get(answer.phase)
        row = table[outcome.scenario.name if outcome is not None else STEADY]
        row.requests += 1
        if answer.seconds > row.worst_wait:
            row.worst_wait = answer.seconds
            row.slowest = (
                f"{answer.what} on replica {answer.replica + 1}: {answer.kind} {answer.status} {answer.detail[:120]}"
            )
        # A replica that was sent SIGTERM refuses connections until it is started again: expected.
        going = outcome is not None and outcome.scenario.sigterm and answer.replica == 1
        if not answer.in_shape and not (going and answer.kind == "no answer"):
            row.out_of_shape += 1
            if sum(f.startswith("out of shape") for f in row.failures) < 3:
                row.failures.append(
                    f"out of shape: {answer.what} on replica {answer.replica + 1}: {answer.kind} {answer.detail[:200]}"
                )
    for row in table.values():
        if row.lost:
            row.failures.append(f"{row.lost} acknowledged writes not in the database")
        if row.duplicated:
            row.failures.append(f"{row.duplicated} writes stored or acknowledged more than once")
        if row.unanswered:
            row.failures.append(f"{row.unanswered} writes never acknowledged (retried until the end)")
        if row.live_missed:
            row.failures.append(f"the live subscriber missed {row.live_missed} of {row.events} events")
        if row.resumed_missed:
            row.failures.append(f"the client that resumed with since missed {row.resumed_missed} events")
        if row.worst_wait > scenarios.WAIT_BOUND:
            row.failures.append(
                f"a request waited {row.worst_wait:.1f} s (bound {scenarios.WAIT_BOUND:g} s): {row.slowest}"
            )
    for outcome in outcomes:
        row = table[outcome.scenario.name]
        row.failures += outcome.notes
        if outcome.ready_503_after:
            row.ready_503 = "/".join(seconds(t, missing="never") for t in outcome.ready_503_after)
            if any(t is None or t > scenarios.READY_WITHIN for t in outcome.ready_503_after):
                row.failures.append(
                    f"/readyz did not say 503 within {scenarios.READY_WITHIN:g} s of the hang: {row.ready_503}"
                )
        if outcome.scenario.sigterm:
            row.exit_after = seconds(outcome.exit_after, missing="killed")
            if outcome.exit_after is None or outcome.exit_after > scenarios.EXIT_BOUND:
                row.failures.append(
                    f"SIGTERM: the replica ended after {row.exit_after} s (bound {scenarios.EXIT_BOUND:g} s)"
                )
        row.recovery = seconds(outcome.recovery, missing="never")
        if outcome.restart is not None:
            row.recovery += f" (restart {outcome.restart:.1f})"
        if outcome.recovery is None:
            row.failures.append(
                f"a replica did not answer within {scenarios.RECOVER_WITHIN:g} s of the end of the fault"
            )
    return list(table.values())


def report(rows: list[Row], live: Subscriber, resumer: Subscriber) -> None:
    print(
        f"\n{'scenario':26}{'fault':40}{'writes':>7}{'lost':>5}{'dup':>5}{'unans':>6}{'events':>7}{'missed':>7}"
        f"{'resum.':>7}{'ended':>6}{'requests':>9}{'worst s':>8}{'shape':>6}{'503 after':>10}{'exit s':>7}  recovery s"
    )
    for row in rows:
        print(
            f"{row.name:26}{row.fault[:39]:40}{row.writes:7d}{row.lost:5d}{row.duplicated:5d}{row.unanswered:6d}"
            f"{row.events:7d}{row.live_missed:7d}{row.resumed_missed:7d}{row.ended:6d}{row.requests:9d}"
            f"{row.worst_wait:8.1f}{row.out_of_shape:6d}{row.ready_503:>10}{row.exit_after:>7}  {row.recovery}"
        )
    print(
        "\nwrites: first sent during the row; lost: acknowledged, not in the database; dup: stored or acknowledged"
        " twice; unans: never acknowledged; events: messages and alerts the live subscriber may see; missed: not"
        " received live; resum.: not received by the client that resumed with since; ended: live streams that"
        " ended; worst s: the longest wait of a request; shape: answers neither a success nor a 503"
        " SERVICE_UNAVAILABLE in JSON; 503 after: /readyz per replica; exit s: SIGTERM to exit; recovery s: end of"
        " the fault to a success on both replicas (after SIGTERM: the restart included)."
    )
    print(
        f"subscribers: live {len(live.received)} events received"
        f" ({sum(c > 1 for c in live.received.values())} twice),"
        f" {live.reconnects} reconnections; resuming {len(resumer.received)} received"
        f" ({sum(c > 1 for c in resumer.received.values())} more than once, deduplicated by id),"
        f" {resumer.reconnects} reconnections"
    )
    for subscriber in (live, resumer):
        for refusal in subscriber.refusals[:3]:
            print(f"  {subscriber.name} refused: {refusal}")
    failed = False
    for row in rows:
        for failure in row.failures:
            print(f"FAILED {row.name}: {failure}")
            failed = True
    passing = [row.name for row in rows if not row.failures]
    print(f"\npassed: {', '.join(passing) or 'none'}")
    print(f"failed: {', '.join(row.name for row in rows if row.failures) or 'none'}")
    if not failed:
        print("every check held")


async def sign_in(ports: list[int], email: str) -> Session:
    session = Session(ports, Recorder())
    await session.sign_in({"grant_type": "password", "username": email, "password": PASSWORD})
    return session


async def run_suite(folder: Path) -> int:
    teams = {**DEMO_PATIENTS, **extra_patient_emails(EXTRA_PATIENTS)}  # e-mail -> in North
    configuration = Configuration("faults", "postgres", 2)
    proxies = {"database": FaultProxy("postgres", POSTGRES_PORT), "redis": FaultProxy("redis", REDIS_PORT)}
    async with fresh_database(configuration, folder, POSTGRES_URL) as database_url:
        print(f"== preparing {database_url.rsplit('/', 1)[1]} (migrate, seed, {len(teams)} patients)", flush=True)
        await prepare_database(database_url, folder, {e: t for e, t in teams.items() if e not in DEMO_PATIENTS})
        for proxy in proxies.values():
            await proxy.start()
        through_proxy = database_url.replace(f":{POSTGRES_PORT}/", f":{proxies['database'].port}/")
        run_id = uuid.uuid4().hex[:10]
        environment = server_environment(through_proxy, 2, run_id)
        redis_url = f"redis://127.0.0.1:{proxies['redis'].port}/0"
        environment |= {"EVENT_BUS_URL": redis_url, "RATE_LIMIT_URL": redis_url, **scenarios.SERVER_SETTINGS}
        environment["EVENT_BUS_CHANNEL"] = f"kf-faults:{run_id}:events"
        environment["RATE_LIMIT_KEY_PREFIX"] = f"kf-faults:{run_id}:rate:"
        servers = [Server(free_port(), LOGS / f"replica-{n + 1}.log") for n in range(2)]
        ports = [server.port for server in servers]
        phase = Phase()
        api = Api(ports, phase, scenarios.CLIENT_WAIT)
        live = resumer = None
        run: Run | None = None
        writers: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        try:
            await asyncio.gather(*(server.start(environment, folder) for server in servers))
            print(
                f"   replicas on ports {ports}; proxies: PostgreSQL {proxies['database'].port},"
                f" Redis {proxies['redis'].port}",
                flush=True,
            )
            sessions = {email: await sign_in(ports, email) for email in [*teams, LIVE[0], RESUMING[0]]}
            load_patients = [LoadPatient(email, sessions[email], north) for email, north in teams.items()]
            for patient in load_patients:
                await prepare_patient(patient)
            patients = [Patient(p.email, str(p.session.token), p.thread_id) for p in load_patients]
            for session in sessions.values():
                session.close()
            threads = {
                team: [p.thread_id for p in load_patients if p.shares_with_ehr == (team == "North")]
                for team in ("North", "South")
            }
            live = Subscriber("live", ports, str(sessions[LIVE[0]].token), LIVE[1], threads[LIVE[1]], phase, live=True)
            resumer = Subscriber(
                "resuming",
                ports,
                str(sessions[RESUMING[0]].token),
                RESUMING[1],
                threads[RESUMING[1]],
                phase,
                live=False,
            )
            # With since from the start: the writers begin at once, before the server has made every
            # subscription live (an event in between would otherwise be missed by design).
            await live.open(0, resume=True)
            await resumer.open(1, resume=True)
            run = Run(api, phase, proxies, servers, environment, folder, LOGS, patients[0].token, resumer)
            give_up_at = time.monotonic() + OVERALL
            writers = [
                asyncio.create_task(patient_loop(api, patient, phase, stop, give_up_at, n))
                for n, patient in enumerate(patients)
            ]
            await asyncio.sleep(scenarios.SETTLE)
            outcomes = []
            for scenario in scenarios.plan():
                print(f"== {scenario.name}: {scenario.describe}", flush=True)
                outcomes.append(await run_scenario_reporting(run, scenario))
            stop.set()
            # Writes still being retried get FINISH_WITHIN; any left unacknowledged then is counted.
            await asyncio.wait(writers, timeout=FINISH_WITHIN)
            for task in writers:
                task.cancel()
            await asyncio.gather(*writers, return_exceptions=True)
            writes = [write for patient in patients for write in patient.writes]
            rows = await stored(database_url)
            events = await stored_events(database_url)
            await catch_up(events, live, resumer)
            events = await stored_events(database_url)
            cursor = await dispatch_position(database_url)
        finally:
            stop.set()
            for task in writers:
                task.cancel()
            for subscriber in (live, resumer):
                if subscriber is not None:
                    await subscriber.close()
            for proxy in proxies.values():
                if proxy.state != "cut":
                    await proxy.resume()  # a hung backend would hold the shutdown
            # A replica started again after SIGTERM is a new Server in run.servers.
            replicas = {id(s): s for s in [*servers, *(run.servers if run is not None else [])]}
            await asyncio.gather(*(server.stop() for server in replicas.values()), return_exceptions=True)
            await api.close()
            for proxy in proxies.values():
                await proxy.close()
    table = judge(outcomes, writes, rows, api, live, resumer, events)
    report(table, live, resumer)
    for subscriber in (live, resumer):
        explain_misses(subscriber, events, writes, outcomes, cursor)
    return 1 if any(row.failures for row in table) else 0


async def run_scenario_reporting(run: Run, scenario: Scenario) -> Outcome:
    outcome = await scenarios.run_scenario(run, scenario)
    print(
        f"   exit after SIGTERM {outcome.exit_after}, /readyz 503 after {outcome.ready_503_after},"
        f" recovery {outcome.recovery}, restart {outcome.restart}",
        flush=True,
    )
    return outcome


@dataclass(frozen=True)
class Stored:
    """An event the suite caused, as the database has it: a message (its stream is its thread) or
    an alert raised by a side-effect report (its stream is alertRaised, seen by the patient's care
    team), with the marker of the write that caused it and its outbox seq."""

    kind: str  # "message" or "alert"
    id: str
    stream: str
    team: str | None  # alerts: the patient's care team
    marker: str
    at: datetime  # sentAt, or the alert's createdAt
    seq: int

    def seen_by(self, subscriber: Subscriber) -> bool:
        return self.stream in subscriber.streams and (self.team is None or self.team == subscriber.team)


EVENTS = {
    "message": "SELECT m.id::text AS id, m.thread_id::text AS stream, NULL AS team, m.body AS marker,"
    " m.sent_at AS at, e.seq FROM message m"
    " LEFT JOIN domain_event e ON e.resource_id = m.id AND e.type = 'Message.created'"
    " WHERE m.body LIKE 'fault %'",
    # A side-effect report's alert is raised by its safety screening, whose content holds the note.
    "alert": "SELECT a.id::text AS id, 'alerts' AS stream, t.name AS team, sc.content->>'note' AS marker,"
    " a.raised_at AS at, e.seq FROM alert a"
    " JOIN safety_screening sc ON sc.id = a.source_id AND a.source_type = 'SafetyScreening'"
    " JOIN patient p ON p.id = a.patient_id JOIN care_team t ON t.id = p.care_team_id"
    " LEFT JOIN domain_event e ON e.resource_id = a.id AND e.type = 'Alert.raised'"
    " WHERE sc.content->>'note' LIKE 'fault %'",
}


async def stored_events(database_url: str) -> list[Stored]:
    connection = await asyncpg.connect(database_url)
    try:
        found = []
        for kind, sql in EVENTS.items():
            for r in await connection.fetch(sql):
                stream = r["stream"]
                if kind == "message":
                    stream = base64.b64encode(f"MessageThread:{stream}".encode()).decode()
                found.append(Stored(kind, r["id"], stream, r["team"], r["marker"], r["at"], r["seq"] or 0))
    finally:
        await connection.close()
    return sorted(found, key=lambda event: event.seq)


async def dispatch_position(database_url: str) -> int | None:
    connection = await asyncpg.connect(database_url)
    try:
        value = await connection.fetchval("SELECT last_seq FROM dispatch_cursor WHERE name = 'bus'")
    finally:
        await connection.close()
    return int(value) if value is not None else None


def skipped_by(subscriber: Subscriber, event: Stored) -> tuple[datetime, str | None, str] | None:
    """The first resubscription after the event whose since (for its stream) was later than it:
    (when, that since, during which part of the run)."""
    moments = [(at, sinces.get(event.stream), phase) for at, sinces, phase in subscriber.history]
    moments += [
        (at, since, phase)
        for at, operation, since, phase in subscriber.resubscriptions
        if subscriber.streams[int(operation)] == event.stream
    ]
    for at, since, phase in sorted(moments, key=lambda moment: moment[0]):
        if at > event.at and since is not None and datetime.fromisoformat(since) > event.at:
            return at, since, phase
    return None


def explain_misses(
    subscriber: Subscriber, events: list[Stored], writes: list[Write], outcomes: list[Outcome], cursor: int | None
) -> None:
    """Evidence for the events a subscriber never received: when and with which outbox seq each was
    raised, which replica acknowledged the write behind it, what happened to its stream, and the
    resubscription whose since was past it (with the event received before that set that since)."""
    missed = [e for e in events if e.seen_by(subscriber) and e.id not in subscriber.received]
    if not missed:
        return
    print(f"\n{subscriber.name} subscriber: {len(missed)} events of its streams never received; the first five:")
    sigterms = [o.sigterm_at.isoformat() for o in outcomes if o.sigterm_at is not None]
    starts = [
        f"{a.isoformat()} (ready {b.isoformat()})" for o in outcomes if o.restarted_at for a, b in [o.restarted_at]
    ]
    print(f"  (SIGTERM sent to replica 2 at {', '.join(sigterms)}; started again at {', '.join(starts)};")
    print(f"  the shared dispatch position is at seq {cursor})")
    by_marker = {write.marker: write for write in writes}
    for event in missed[:5]:
        line = f"  {event.kind} {event.id}: at {event.at.isoformat()}, outbox seq {event.seq}"
        if (write := by_marker.get(event.marker)) is not None and write.acknowledged_at is not None:
            line += (
                f", its {write.kind} acknowledged by replica {(write.acknowledged_by or 0) + 1} at"
                f" {write.acknowledged_at.isoformat()} after {write.attempts} attempt(s)"
            )
        operation = str(subscriber.streams.index(event.stream))
        ends = [e for e in subscriber.endings if e.operation == operation]
        again = [r for r in subscriber.resubscriptions if r[1] == operation]
        line += (
            f"; its stream (operation {operation}) ended {len(ends)} times"
            + (f", first in {ends[0].scenario}: {ends[0].why[:100]} {sorted(ends[0].codes)}" if ends else "")
            + f"; resubscribed {len(again)} times"
            + f"; the latest event time it saw there: {subscriber.latest.get(event.stream)}"
        )
        if (skipping := skipped_by(subscriber, event)) is not None:
            at, since, phase = skipping
            line += f"; resubscribed at {at.isoformat()} ({phase}) with since {since}, later than the event"
            setter = [e for e in events if e.id in subscriber.received and e.at.isoformat() == since]
            if setter:
                order = "a higher" if setter[0].seq > event.seq else "a lower"
                line += f"; that since is the time of {setter[0].kind} {setter[0].id}, received, with {order} seq"
        print(line)


async def catch_up(events: list[Stored], live: Subscriber, resumer: Subscriber) -> None:
    """Wait (bounded) until both subscribers hold every event of their streams."""
    deadline = time.monotonic() + CATCH_UP_WITHIN
    while time.monotonic() < deadline:
        if all(e.id in s.received for s in (live, resumer) for e in events if e.seen_by(s)):
            return
        await asyncio.sleep(0.2)


async def main() -> int:
    if (why := await postgres_answers(POSTGRES_URL)) is not None or not redis_answers():
        print(
            f"the fault suite needs PostgreSQL at {POSTGRES_URL} ({why or 'ok'}) and Redis at 127.0.0.1:6379",
            file=sys.stderr,
        )
        return 2
    print(
        f"ketafollow fault suite ({'short' if scenarios.SHORT else 'full'}): two replicas, PostgreSQL and Redis behind"
        f" proxies; request deadline {scenarios.REQUEST_TIMEOUT:g} s (bound {scenarios.WAIT_BOUND:g} s),"
        f" shutdown {scenarios.SHUTDOWN_TIMEOUT:g} s, at most {OVERALL:.0f} s in all"
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    # SIGTERM or SIGINT (a cancelled CI job) cancels the run: its clean-up still stops the
    # replicas, closes the proxies and drops the database.
    running = asyncio.current_task()
    assert running is not None
    for stop in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop, running.cancel)
    with tempfile.TemporaryDirectory(prefix="ketafollow-faults-") as folder:
        try:
            return await asyncio.wait_for(run_suite(Path(folder)), OVERALL)
        except TimeoutError:
            print(f"FAILED: the fault suite did not finish within {OVERALL:.0f} s", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            print("the fault suite was interrupted (cleaned up)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
