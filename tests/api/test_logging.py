"""Logs are structured, carry the request id, and never the request's data."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from api.log import DATABASE_LOGGERS, JsonFormatter, TextFormatter, configure_logging, request_id_var
from tests.conftest import Tokens
from tests.support.graphql import gql


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ketafollow.test", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_time_level_request_id_and_extra_fields() -> None:
    record = _record("POST /graphql 200", request_id="abc123", duration_ms=4.2)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO"
    assert entry["request_id"] == "abc123"
    assert entry["duration_ms"] == 4.2
    assert entry["message"] == "POST /graphql 200"


def test_text_lines_are_readable() -> None:
    line = TextFormatter().format(_record("ready", request_id="abc123", env="development"))
    assert "INFO" in line
    assert "[abc123]" in line
    assert line.endswith("ready env=development")


async def test_the_access_line_has_the_path_but_not_the_query_string_or_body(
    client: httpx.AsyncClient, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ketafollow.access"):
        await client.post(
            "/graphql?email=alex@demo.test",
            json={"query": "{ __typename } # Alex Morgan"},
            headers={"Authorization": f"Bearer {tokens.user('alex@demo.test')}"},
        )
    [line] = [r.getMessage() for r in caplog.records if r.name == "ketafollow.access"]
    assert line == "POST /graphql 200"
    assert request_id_var.get() is None  # reset after the request


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """`configure_logging` rewires the process's logging: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = [*DATABASE_LOGGERS, "tortoise.db_client", "uvicorn", "uvicorn.error", "uvicorn.access", "apscheduler"]
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).disabled) for name in names}
    yield
    root.handlers[:], root.level = handlers, level
    for name, (old_level, disabled) in saved.items():
        logging.getLogger(name).setLevel(old_level)
        logging.getLogger(name).disabled = disabled


async def test_debug_logging_never_prints_sql_or_its_parameters(
    client: httpx.AsyncClient, tokens: Tokens, capsys: pytest.CaptureFixture[str], restored_logging: None
) -> None:
    configure_logging("DEBUG", "text")
    note = "my husband must not read this 7f3a"
    body = await gql(
        client,
        "mutation($note: String!) { submitCheckIn(input: "
        '{ recordedAt: "2026-11-25T14:00:00Z", pain: 4, note: $note }) { result { __typename } } }',
        {"note": note},
        token=tokens.user("alex@demo.test"),
    )
    assert body["data"]["submitCheckIn"]["result"]["__typename"] == "CheckIn"
    await gql(
        client, "{ patients(first: 5) { edges { node { givenName } } } }", token=tokens.user("dr.rivera@demo.test")
    )
    logged = capsys.readouterr().err
    assert "POST /graphql 200" in logged  # debug logging is on
    for secret in (note, "Alex", "INSERT", "SELECT", "check_in"):
        assert secret not in logged
