"""Sign-in, refresh rotation, logout, client credentials, and every way a token is refused."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from starlette.applications import Starlette

from api.app import create_app
from api.auth import passwords
from api.auth.passwords import verify_password
from api.auth.tokens import REQUIRED_CLAIMS
from api.database import use_database
from api.settings import Settings
from models.identity.accounts import User
from models.identity.sign_in_records import RefreshToken
from models.identity.throttle import KnownSignInAddress, LoginThrottle
from models.kernel.audit import AuditEvent, AuditOutcome
from models.kernel.clock import ManualClock
from seeds.demo import DEMO_CLIENT_SECRET, DEMO_PASSWORD
from tests.conftest import Tokens
from tests.support.panel_data import counting_statements

ME = "{ me { role name } }"


async def sign_in(client: httpx.AsyncClient, email: str, password: str = DEMO_PASSWORD) -> httpx.Response:
    return await client.post("/auth/token", data={"grant_type": "password", "username": email, "password": password})


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token})


async def me(client: httpx.AsyncClient, access_token: str) -> httpx.Response:
    return await client.post("/graphql", json={"query": ME}, headers={"Authorization": f"Bearer {access_token}"})


async def denied_events(app: Starlette, resource_type: str) -> list[AuditEvent]:
    with use_database(app.state.database):
        return list(await AuditEvent.filter(resource_type=resource_type, outcome=AuditOutcome.DENIED))


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def forge(settings: Settings, clock: ManualClock, **changes: Any) -> str:
    """A token signed with the real key but with `changes` to its claims (None removes one)."""
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": "user:00000000-0000-4000-8000-000000000000",
        "iat": now,
        "exp": now + 600,
        "jti": "x",
        "typ": "access",
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, settings.secret_key, algorithm="HS256", headers={"kid": settings.secret_key_id})


async def test_a_user_signs_in_and_gets_a_short_lived_pinned_token(client: httpx.AsyncClient) -> None:
    response = await sign_in(client, "Alex@Demo.test")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert len(body["refresh_token"]) >= 40
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    claims = claims_of(body["access_token"])
    assert set(REQUIRED_CLAIMS) <= set(claims)
    assert claims["exp"] - claims["iat"] == 900
    answer = await me(client, body["access_token"])
    assert answer.json() == {"data": {"me": {"role": "PATIENT", "name": "alex@demo.test"}}}


async def test_sign_in_does_the_same_work_whether_or_not_the_account_exists(
    app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No enumeration by answer or by time: a wrong password for an account, for a deactivated one
    and for none get one answer after the same work (one password verification, the same number
    of statements), counted rather than timed."""
    with use_database(app.state.database):
        await User.filter(email="devon@demo.test").update(is_active=False)
    verified: list[str | bytes] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            verified.append(hash)
            return super().verify(hash, password)

    monkeypatch.setattr(passwords, "_HASHER", CountingHasher.from_parameters(passwords._HASHER._parameters))
    await sign_in(client, "someone.else@demo.test", "not the password")  # this address's own rows
    answers, statements = [], {}
    for attempt in ("first", "second"):  # a first try creates the throttle's rows, known or not
        for email in ("alex@demo.test", "devon@demo.test", "nobody@demo.test"):
            verified.clear()
            with counting_statements() as counter:
                response = await sign_in(client, email, "not the password")
            answers.append((response.status_code, response.json()))
            statements.setdefault(attempt, []).append(counter.count)
            assert len(verified) == 1, email  # one Argon2 verification, a real one for every address
    assert len(set(map(str, answers))) == 1 and answers[0][0] == 400
    assert len(set(statements["first"])) == 1 and len(set(statements["second"])) == 1, statements


async def test_a_wrong_password_and_an_unknown_account_get_the_same_answer(client: httpx.AsyncClient) -> None:
    wrong = await sign_in(client, "alex@demo.test", "not the password")
    unknown = await sign_in(client, "nobody@demo.test", "not the password")
    assert wrong.status_code == unknown.status_code == 400
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "invalid_grant",
            "error_description": "the e-mail address or the password is wrong",
        }
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "implicit"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "alex@demo.test"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
    ],
)
async def test_malformed_token_requests_get_oauth_errors(
    client: httpx.AsyncClient, data: dict[str, str], error: str
) -> None:
    response = await client.post("/auth/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_the_token_endpoint_wants_a_form_and_no_repeated_parameters(client: httpx.AsyncClient) -> None:
    as_json = await client.post("/auth/token", json={"grant_type": "password"})
    assert as_json.json()["error"] == "invalid_request"
    repeated = await client.post(
        "/auth/token",
        content=b"grant_type=password&username=a&username=b&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert repeated.json() == {
        "error": "invalid_request",
        "error_description": "parameters must not be repeated: username",
    }


async def test_a_refresh_rotates_the_token(client: httpx.AsyncClient) -> None:
    first = (await sign_in(client, "alex@demo.test")).json()
    second = await refresh(client, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    third = await refresh(client, second.json()["refresh_token"])
    assert third.status_code == 200


async def test_reusing_a_rotated_refresh_token_ends_the_whole_login_and_is_audited(
    client: httpx.AsyncClient, app: Starlette, clock: ManualClock
) -> None:
    first = (await sign_in(client, "alex@demo.test")).json()
    second = (await refresh(client, first["refresh_token"])).json()
    clock.advance(timedelta(seconds=6))  # past the grace for concurrent retries
    reused = await refresh(client, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The thief's copy and the legitimate successor are both dead now.
    assert (await refresh(client, second["refresh_token"])).json()["error"] == "invalid_grant"
    details = [event.detail for event in await denied_events(app, "TokenRefresh")]
    assert "refresh token reused; the login was ended (token reuse)" in details


async def test_of_two_concurrent_refreshes_with_one_token_exactly_one_wins(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    token = (await sign_in(client, "alex@demo.test")).json()["refresh_token"]
    responses = await asyncio.gather(*(refresh(client, token) for _ in range(2)))
    assert sorted(response.status_code for response in responses) == [200, 400]
    [winner] = [response.json() for response in responses if response.status_code == 200]
    [loser] = [response.json() for response in responses if response.status_code == 400]
    assert "concurrent request" in loser["error_description"]
    with use_database(app.state.database):
        assert await RefreshToken.filter(rotated_at__isnull=False).count() == 1
    assert await denied_events(app, "TokenRefresh")
    # The loser was a retry, not a thief: the winner's login lives on.
    assert (await refresh(client, winner["refresh_token"])).status_code == 200


async def test_an_idle_refresh_token_expires(client: httpx.AsyncClient, clock: ManualClock) -> None:
    token = (await sign_in(client, "alex@demo.test")).json()["refresh_token"]
    clock.advance(timedelta(hours=12, seconds=1))
    response = await refresh(client, token)
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "the refresh token is expired; sign in again",
    }


async def test_logging_out_with_an_old_token_ends_its_successors_too(client: httpx.AsyncClient) -> None:
    first = (await sign_in(client, "alex@demo.test")).json()["refresh_token"]
    second = (await refresh(client, first)).json()["refresh_token"]
    await client.post("/auth/revoke", data={"token": first})
    assert (await refresh(client, second)).json()["error"] == "invalid_grant"


async def test_logout_revokes_the_login(client: httpx.AsyncClient) -> None:
    token = (await sign_in(client, "alex@demo.test")).json()["refresh_token"]
    assert (await client.post("/auth/revoke", data={"token": token})).status_code == 200
    assert (await refresh(client, token)).json()["error"] == "invalid_grant"
    # RFC 7009: an unknown token is not an error.
    assert (await client.post("/auth/revoke", data={"token": "never-issued"})).status_code == 200


async def test_an_ehr_client_authenticates_with_basic_credentials(client: httpx.AsyncClient) -> None:
    basic = base64.b64encode(f"demo-ehr:{DEMO_CLIENT_SECRET}".encode()).decode()
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "patients:read"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["scope"] == "patients:read"
    assert "refresh_token" not in body
    answer = await me(client, body["access_token"])
    assert answer.json()["data"]["me"] == {"role": "EHR_CLIENT", "name": "demo-ehr"}


async def test_an_ehr_client_with_a_wrong_secret_or_scope_is_refused(client: httpx.AsyncClient) -> None:
    wrong = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "demo-ehr", "client_secret": "guess"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    too_much = await client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "demo-ehr",
            "client_secret": DEMO_CLIENT_SECRET,
            "scope": "patients:read admin:everything",
        },
    )
    assert too_much.json() == {"error": "invalid_scope", "error_description": "not granted: admin:everything"}


async def test_graphql_without_a_token_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": ME})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "user:11111111-1111-4111-8111-111111111111"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def _unsigned(settings: Settings, clock: ManualClock) -> str:
    claims = claims_of(forge(settings, clock))
    return jwt.encode(claims, key=None, algorithm="none")


def _rs256_header(settings: Settings, clock: ManualClock) -> str:
    # HS/RS confusion: claims to be RS256 but is signed with the shared secret as an HMAC key.
    token = forge(settings, clock)
    _header, payload, signature = token.split(".")
    fake = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"k1","typ":"JWT"}').decode().rstrip("=")
    return f"{fake}.{payload}.{signature}"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_unsigned, "unexpected signing algorithm"),
        (_rs256_header, "unexpected signing algorithm"),
        (lambda s, c: forge(s, c, aud="someone-else"), "token is for another audience"),
        (lambda s, c: forge(s, c, iss="https://evil.example"), "token is from another issuer"),
        (lambda s, c: forge(s, c, typ="refresh"), "not an access token"),
        (lambda s, c: forge(s, c, exp=int(c.now().timestamp()) - 120), "token has expired"),
        (lambda s, c: forge(s, c, sub="user:not-a-uuid"), "token subject is malformed"),
        (
            lambda s, c: jwt.encode({"sub": "x"}, "another-secret-of-32-characters!!", headers={"kid": "k9"}),
            "unknown signing key",
        ),
        (lambda s, c: "not.a.jwt", "malformed token"),
        *[
            (lambda s, c, claim=claim: forge(s, c, **{claim: None}), f"token lacks the {claim!r} claim")
            for claim in REQUIRED_CLAIMS
        ],
    ],
)
async def test_a_bad_access_token_is_refused_and_audited(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, clock: ManualClock, make: Any, reason: str
) -> None:
    response = await me(client, make(settings, clock))
    assert response.status_code == 401
    assert response.json()["errors"][0] == {
        "message": f"invalid access token: {reason}",
        "extensions": {"code": "UNAUTHENTICATED"},
    }
    assert [event.detail for event in await denied_events(app, "Authenticate")] == [reason]


async def test_a_tampered_token_fails_its_signature(client: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await me(client, _tamper(tokens.user("alex@demo.test")))
    assert response.status_code == 401
    assert "signature" in response.json()["errors"][0]["message"]


async def test_an_access_token_expires_after_its_lifetime(
    client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    token = tokens.user("alex@demo.test")
    assert (await me(client, token)).status_code == 200
    clock.advance(timedelta(minutes=16))
    assert (await me(client, token)).json()["errors"][0]["message"] == "invalid access token: token has expired"


async def test_a_deactivated_account_is_refused_at_once(
    client: httpx.AsyncClient, tokens: Tokens, app: Starlette
) -> None:
    token = tokens.user("alex@demo.test")
    with use_database(app.state.database):
        await User.filter(email="alex@demo.test").update(is_active=False)
    response = await me(client, token)
    assert response.json()["errors"][0]["message"] == "invalid access token: the account is no longer active"


async def test_brute_force_is_slowed_then_stopped_and_the_owner_gets_back_in(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    for _ in range(5):
        assert (await sign_in(client, "alex@demo.test", "guess")).status_code == 400
    locked = await sign_in(client, "alex@demo.test")  # even the right password waits
    assert locked.status_code == 429
    assert locked.json()["error"] == "too_many_attempts"
    assert int(locked.headers["retry-after"]) == 60
    clock.advance(timedelta(seconds=61))
    for _ in range(5):
        await sign_in(client, "alex@demo.test", "guess")
    # The second lock is longer: back-off.
    assert int((await sign_in(client, "alex@demo.test")).headers["retry-after"]) == 120
    # Attempts during a lock do not extend it, so the owner is back in when it ends.
    for _ in range(10):
        assert (await sign_in(client, "alex@demo.test", "guess")).status_code == 429
    clock.advance(timedelta(seconds=121))
    assert (await sign_in(client, "alex@demo.test")).status_code == 200


async def test_an_address_spraying_many_accounts_is_locked(client: httpx.AsyncClient) -> None:
    for attempt in range(20):
        await sign_in(client, f"user{attempt}@example.test", "guess")
    response = await sign_in(client, "blair@demo.test")
    assert response.status_code == 429


async def test_the_account_lock_never_lasts_more_than_15_minutes(client: httpx.AsyncClient, clock: ManualClock) -> None:
    for _round in range(8):
        for _ in range(5):
            await sign_in(client, "alex@demo.test", "guess")
        response = await sign_in(client, "alex@demo.test")
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) <= 15 * 60
            clock.advance(timedelta(seconds=int(response.headers["retry-after"]) + 1))
    assert (await sign_in(client, "alex@demo.test")).status_code == 200


async def test_a_password_hashed_with_old_parameters_is_rehashed_at_sign_in(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(DEMO_PASSWORD)
    with use_database(app.state.database):
        await User.filter(email="blair@demo.test").update(password_hash=weak)
    assert (await sign_in(client, "blair@demo.test")).status_code == 200
    with use_database(app.state.database):
        stored = (await User.get(email="blair@demo.test")).password_hash
    assert stored != weak
    assert "m=65536,t=3,p=2" in stored
    assert await verify_password(stored, DEMO_PASSWORD)


async def test_demo_logins_are_refused_in_production(production_settings: Settings, clock: ManualClock) -> None:
    from api.app import create_app

    application = create_app(production_settings, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await sign_in(http, "alex@demo.test")
            client_login = await http.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "demo-ehr",
                    "client_secret": DEMO_CLIENT_SECRET,
                },
            )
    assert response.json()["error"] == "invalid_grant"
    assert client_login.json()["error"] == "invalid_client"


async def test_a_previous_signing_key_still_verifies_during_rotation(
    settings: Settings, clock: ManualClock, tokens: Tokens
) -> None:
    from dataclasses import replace

    from api.app import create_app

    old_token = tokens.user("alex@demo.test")  # signed with k1
    rotated = replace(
        settings, secret_key="a-brand-new-secret-key-of-40-characters!", secret_key_id="k2",
        previous_secret_keys={"k1": settings.secret_key},
    )  # fmt: skip
    application = create_app(rotated, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await me(http, old_token)).status_code == 200
            fresh = (await sign_in(http, "alex@demo.test")).json()["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] == "k2"


async def test_concurrent_guesses_are_counted_like_sequential_ones(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(sign_in(client, "alex@demo.test", f"guess {i}") for i in range(12)))
    codes = [response.status_code for response in responses]
    assert codes.count(400) == 5
    assert codes.count(429) == 7


def _client_at(app: Starlette, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_a_distributed_attack_cannot_lock_the_owner_out_of_a_known_address(app: Starlette) -> None:
    async with _client_at(app, "198.51.100.7") as home:
        assert (await sign_in(home, "alex@demo.test")).status_code == 200
        for attacker in range(25):
            async with _client_at(app, f"203.0.113.{attacker}") as elsewhere:
                await sign_in(elsewhere, "alex@demo.test", "guess")
        async with _client_at(app, "203.0.113.200") as new_address:
            assert (await sign_in(new_address, "alex@demo.test")).status_code == 429
        assert (await sign_in(home, "alex@demo.test")).status_code == 200


async def test_an_oversized_client_id_is_an_authentication_failure_not_a_crash(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials", "client_id": "x" * 400, "client_secret": "s"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# ------------------------------------------------ sign-in from other sites (issue #16, finding 8)

PORTAL = "https://portal.example.org"
OTHER_SITES = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example.net"},
    {"Origin": "https://evil.example.net"},  # a browser that sends no Sec-Fetch-Site
    {"Origin": "https://evil.example.org", "Sec-Fetch-Site": "same-site"},  # a sibling site
    {"Origin": "null"},  # a sandboxed frame
]


@pytest.mark.parametrize("headers", OTHER_SITES)
async def test_a_sign_in_from_another_sites_page_is_refused_and_counts_nothing(
    client: httpx.AsyncClient, app: Starlette, headers: dict[str, str]
) -> None:
    # A hostile page on a clinic workstation posting wrong passwords, enough to lock the address out.
    for attempt in range(25):
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": f"user{attempt}@demo.test", "password": "guess"},
            headers=headers,
        )
        assert response.status_code == 403
        assert response.json()["error"] == "invalid_request"
        assert "refused" in response.json()["error_description"]
    logout = await client.post("/auth/revoke", data={"token": "whatever"}, headers=headers)
    assert (logout.status_code, logout.json()["error"]) == (403, "invalid_request")
    with use_database(app.state.database):
        assert await LoginThrottle.all().count() == 0
        assert not await AuditEvent.filter(resource_type="Login").exists()
    assert (await sign_in(client, "alex@demo.test")).status_code == 200  # the clinic is not locked out


@pytest.mark.parametrize(
    "headers",
    [
        {},  # the apps, EHR servers
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {"Sec-Fetch-Site": "cross-site", "Origin": PORTAL},  # the portal, on another site, listed
        {"Origin": PORTAL},
    ],
)
async def test_the_apps_this_api_and_the_listed_portal_sign_in(
    settings: Settings, clock: ManualClock, headers: dict[str, str]
) -> None:
    application = create_app(replace(settings, cors_allowed_origins=(PORTAL,)), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.post(
                "/auth/token",
                data={"grant_type": "password", "username": "alex@demo.test", "password": DEMO_PASSWORD},
                headers=headers,
            )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("grant", "typed", "named"),
    [
        ("password", "correct horse battery staple", "an unknown account"),  # a password in the wrong box
        ("password", "nobody@demo.test", "an unknown account"),
        ("client_credentials", "s3cret-typed-as-the-id", "an unknown client"),
    ],
)
async def test_a_failed_sign_in_never_stores_a_name_that_is_no_accounts(
    client: httpx.AsyncClient, app: Starlette, grant: str, typed: str, named: str
) -> None:
    if grant == "password":
        data = {"grant_type": grant, "username": typed, "password": "guess"}
    else:
        data = {"grant_type": grant, "client_id": typed, "client_secret": "guess"}
    answers = [(await client.post("/auth/token", data=data)).status_code for _ in range(6)]
    assert answers[-1] == 429  # counted and throttled like any other name
    with use_database(app.state.database):
        details = [row.detail or "" for row in await AuditEvent.filter(resource_type__in=["Login", "ClientLogin"])]
        keys = [row.key for row in await LoginThrottle.all()]
        known = [row.subject for row in await KnownSignInAddress.all()]
    assert set(details) >= {f"wrong credentials for {named}", f"throttled: {named}"}
    assert not [text for text in [*details, *keys, *known] if typed.lower() in text.lower()]


async def test_a_failed_sign_in_to_an_account_names_the_account(client: httpx.AsyncClient, app: Starlette) -> None:
    await sign_in(client, "Alex@Demo.test", "guess")
    with use_database(app.state.database):
        [row] = await AuditEvent.filter(resource_type="Login")
    assert row.detail == "wrong credentials for alex@demo.test"
