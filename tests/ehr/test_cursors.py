"""Cursors are sealed positions: they survive a restart and a key rotation, and nothing else opens.

Every connection's cursors, for every kind of viewer, are checked in tests/identity/test_access_matrix.py;
this file covers what the matrix does not: keys changing under a stored cursor, and the shapes of
garbage a client may send.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.auth.tokens import issue_access_token
from api.settings import Settings
from models.kernel.clock import ManualClock
from schema.errors import BadUserInput
from schema.pagination import MAX_CURSOR_LENGTH, NOT_A_CURSOR, CursorCodec
from tests.conftest import ALL_SCOPES, Tokens
from tests.support.graphql import gql

FEED = """
query($after: String) {
  changes(first: 3, after: $after) { edges { node { sequence resourceType resourceId } } pageInfo { endCursor } }
}
"""
OLD_KEY = "the key the deployment had when the EHR stored its cursor"
NEW_KEY = "the key the deployment has now, after the rotation"


@asynccontextmanager
async def served(settings: Settings, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def _feed_page(http: httpx.AsyncClient, settings: Settings, tokens: Tokens, after: str | None) -> dict[str, Any]:
    token = issue_access_token(
        settings,
        subject_kind="client",
        subject_id=tokens.client_ids["demo-ehr"],
        now=tokens.clock.now(),
        scopes=ALL_SCOPES,
        credential=tokens.client_credentials["demo-ehr"],
    )
    return await gql(http, FEED, {"after": after}, token=token)


async def test_a_stored_change_feed_cursor_resumes_after_a_restart_with_a_rotated_key(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    before = replace(settings, secret_key=OLD_KEY, secret_key_id="k1")
    rotated = replace(settings, secret_key=NEW_KEY, secret_key_id="k2", previous_secret_keys={"k1": OLD_KEY})
    async with served(before, clock) as http:
        first = await _feed_page(http, before, tokens, None)
        stored = first["data"]["changes"]["pageInfo"]["endCursor"]
        expected = await _feed_page(http, before, tokens, stored)
    async with served(rotated, clock) as http:
        resumed = await _feed_page(http, rotated, tokens, stored)
    assert resumed["data"]["changes"]["edges"] == expected["data"]["changes"]["edges"]
    assert resumed["data"]["changes"]["edges"]  # the demo clinic's feed is longer than a page


async def test_a_cursor_sealed_with_a_key_the_server_no_longer_has_is_refused(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    before = replace(settings, secret_key=OLD_KEY, secret_key_id="k1")
    forgotten = replace(settings, secret_key=NEW_KEY, secret_key_id="k2")
    async with served(before, clock) as http:
        stored = (await _feed_page(http, before, tokens, None))["data"]["changes"]["pageInfo"]["endCursor"]
    async with served(forgotten, clock) as http:
        refused = await _feed_page(http, forgotten, tokens, stored)
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT"}
    assert refused["errors"][0]["message"] == NOT_A_CURSOR


CODEC = CursorCodec(["a secret of the test deployment"])
GOOD = CODEC.seal("changes", ["1", "2", "3"])


def _another_version(cursor: str) -> str:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return base64.urlsafe_b64encode(b"\x02" + raw[1:]).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 !",
        "é",
        GOOD[:-4],  # cut short
        GOOD + "AAAA",  # lengthened
        _another_version(GOOD),
        base64.urlsafe_b64encode(b'["changes","1","2","3"]').decode(),  # the readable layout of old
        "W" * (MAX_CURSOR_LENGTH + 1),
    ],
    ids=["empty", "not-base64", "not-ascii", "truncated", "lengthened", "version", "readable", "too-long"],
)
def test_anything_but_a_sealed_cursor_is_refused_with_one_message(cursor: str) -> None:
    with pytest.raises(BadUserInput, match=f"^{NOT_A_CURSOR}$"):
        CODEC.open("changes", cursor, 3)


def test_a_cursor_opens_only_in_its_own_list_with_its_own_length() -> None:
    assert CODEC.open("changes", GOOD, 3) == ["1", "2", "3"]
    for kind, length in (("audit", 3), ("changes", 2)):
        with pytest.raises(BadUserInput, match=NOT_A_CURSOR):
            CODEC.open(kind, GOOD, length)


def test_a_long_name_in_any_script_still_makes_a_cursor_that_opens() -> None:
    name = "\U0001d504" * 100  # four bytes a character: the most a 100-character name column holds
    sealed = CODEC.seal("panel", ["9", "9999-12-31T00:00:00+00:00", name, name, "0" * 36])
    assert len(sealed) <= MAX_CURSOR_LENGTH
    assert CODEC.open("panel", sealed, 5)[2] == name
