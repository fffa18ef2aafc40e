"""Logs are structured, carry the request id, and never the request's data."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from api.log import JsonFormatter, TextFormatter, request_id_var
from tests.conftest import Tokens


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
