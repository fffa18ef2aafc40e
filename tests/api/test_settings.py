"""Settings come from the environment, are validated at start-up, and production refuses weak secrets."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.settings import DEVELOPMENT_SECRET_KEY, BucketPolicy, Environment, Settings, SettingsError
from models.kernel.policy import DEFAULT_POLICY
from tests.support.push_fakes import pem
from tests.support.settings import PRODUCTION_MAIL

STRONG_SECRET = "pK3v9QzL1xWc7RtB5nHy2MdJ8sFg4AeU"


def test_defaults_describe_a_development_server_on_sqlite() -> None:
    settings = Settings.from_env({}, env_file=None)
    assert settings.env is Environment.DEVELOPMENT
    assert settings.database_url == "sqlite://var/ketafollow.sqlite3"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.graphql_ide_enabled and settings.introspection_enabled
    assert settings.log_format == "text"


POSTGRES = "postgres://db.internal:5432/ketafollow"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"HOST": "0.0.0.0"}, "KETAFOLLOW_ENV is not set and HOST=0.0.0.0 is reachable from other machines"),
        ({"HOST": "10.1.2.3"}, "KETAFOLLOW_ENV is not set and HOST=10.1.2.3 is reachable from other machines"),
        ({"HOST": "::"}, "KETAFOLLOW_ENV is not set and HOST=:: is reachable from other machines"),
        ({"HOST": "api.clinic.example"}, "KETAFOLLOW_ENV is not set and HOST=api.clinic.example is reachable"),
        ({"DATABASE_URL": POSTGRES}, "KETAFOLLOW_ENV is not set and DATABASE_URL is a PostgreSQL database"),
        ({"KETAFOLLOW_ENV": " ", "DATABASE_URL": POSTGRES}, "KETAFOLLOW_ENV is not set"),
        ({"KETAFOLLOW_ENV": "development", "HOST": "0.0.0.0"}, "SECRET_KEY is the development key"),
        (
            {"KETAFOLLOW_ENV": "test", "HOST": "192.168.1.20", "SECRET_KEY": DEVELOPMENT_SECRET_KEY},
            "SECRET_KEY is the development key",
        ),
    ],
)
def test_the_default_environment_or_key_refuses_to_start_where_others_can_reach_it_naming_the_fix(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    [message] = raised.value.problems
    assert problem in message
    assert "KETAFOLLOW_ENV=production" in message and "SECRET_KEY" in message


@pytest.mark.parametrize(
    "environ",
    [
        {},  # `make run`: a development machine on loopback and SQLite
        {"HOST": "127.0.0.2"},
        {"HOST": "::1"},
        {"HOST": "localhost"},
        {"KETAFOLLOW_ENV": "development", "DATABASE_URL": POSTGRES},
        {"KETAFOLLOW_ENV": "test", "DATABASE_URL": POSTGRES},
        {"KETAFOLLOW_ENV": "development", "HOST": "0.0.0.0", "SECRET_KEY": "a key of this machine only"},
        {
            "KETAFOLLOW_ENV": "production",
            "HOST": "0.0.0.0",
            "DATABASE_URL": POSTGRES,
            "SECRET_KEY": STRONG_SECRET,
            **PRODUCTION_MAIL,
        },
    ],
)
def test_a_development_machine_said_so_and_a_deployment_with_its_own_key_start(environ: dict[str, str]) -> None:
    assert Settings.from_env(environ, env_file=None).host == environ.get("HOST", "127.0.0.1")


def test_production_turns_off_the_ide_introspection_and_demo_logins() -> None:
    environ = {"KETAFOLLOW_ENV": "production", "SECRET_KEY": STRONG_SECRET, **PRODUCTION_MAIL}
    settings = Settings.from_env(environ, env_file=None)
    assert settings.is_production
    assert not settings.graphql_ide_enabled
    assert not settings.introspection_enabled
    assert not settings.demo_logins_enabled
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "SECRET_KEY must be set in production"),
        (DEVELOPMENT_SECRET_KEY, "SECRET_KEY is the development default"),
        ("short-secret", "SECRET_KEY must be at least 32 characters"),
        ("a" * 40, "SECRET_KEY is too weak"),
    ],
)
def test_production_refuses_to_start_with_a_default_or_weak_secret(secret: str | None, problem: str) -> None:
    environ = {"KETAFOLLOW_ENV": "production"} | ({"SECRET_KEY": secret} if secret is not None else {})
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert any(problem in line for line in raised.value.problems)


def test_every_problem_is_reported_at_once_with_the_variable_named() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "PORT": "eighty",
                "DATABASE_URL": "mysql://x/y",
                "KETAFOLLOW_ENV": "staging",
                "RUN_SCHEDULER": "maybe",
            },
            env_file=None,
        )
    text = str(raised.value)
    for name in ("PORT", "DATABASE_URL", "KETAFOLLOW_ENV", "RUN_SCHEDULER"):
        assert name in text


def test_limits_are_range_checked() -> None:
    with pytest.raises(SettingsError, match="GRAPHQL_MAX_DEPTH must be between 2 and 50"):
        Settings.from_env({"GRAPHQL_MAX_DEPTH": "500"}, env_file=None)


def test_token_lifetimes_are_read_in_seconds() -> None:
    settings = Settings.from_env(
        {"ACCESS_TOKEN_TTL_SECONDS": "300", "REFRESH_TOKEN_IDLE_TTL_SECONDS": "3600"}, env_file=None
    )
    assert settings.access_token_ttl == timedelta(minutes=5)
    assert settings.refresh_token_idle_ttl == timedelta(hours=1)


def test_previous_keys_verify_tokens_while_the_current_key_signs() -> None:
    settings = Settings.from_env(
        {
            "SECRET_KEY": STRONG_SECRET,
            "SECRET_KEY_ID": "k2",
            "PREVIOUS_SECRET_KEYS": "k1=" + STRONG_SECRET[::-1],
        },
        env_file=None,
    )
    assert settings.signing_keys == {"k1": STRONG_SECRET[::-1], "k2": STRONG_SECRET}


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"PORT=9001\nHOST=0.0.0.0\nKETAFOLLOW_ENV=development\nSECRET_KEY={STRONG_SECRET}\n")
    settings = Settings.from_env({"PORT": "9002"}, env_file=env_file)
    assert (settings.host, settings.port) == ("0.0.0.0", 9002)


@pytest.mark.parametrize("url", ["sqlite://", "postgres://localhost:5432", "ftp://example.test/db"])
def test_unusable_database_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": url}, env_file=None)


def test_cors_origins_are_read_as_a_browser_sends_them() -> None:
    settings = Settings.from_env(
        {"CORS_ALLOWED_ORIGINS": " https://Portal.Example.org:443 , http://localhost:5173,https://portal.example.org"},
        env_file=None,
    )
    assert settings.cors_allowed_origins == ("https://portal.example.org", "http://localhost:5173")
    assert Settings.from_env({}, env_file=None).cors_allowed_origins == ()  # none by default


@pytest.mark.parametrize(
    "origin",
    [
        "https://portal.example.org/",
        "https://portal.example.org/app",
        "https://portal.example.org?x=1",
        "https://*.example.org",
        "portal.example.org",
        "ftp://portal.example.org",
        "https://user@portal.example.org",
        "https://portal.example.org:99999",
    ],
)
def test_anything_but_an_origin_is_refused_in_cors_allowed_origins(origin: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"CORS_ALLOWED_ORIGINS": origin}, env_file=None)
    assert raised.value.problems == [
        f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host[:port], http or https, "
        "no path, query or wildcard)"
    ]


def test_production_refuses_a_plain_http_webhook() -> None:
    environ = {
        "KETAFOLLOW_ENV": "production",
        "SECRET_KEY": STRONG_SECRET,
        "NOTIFY_WEBHOOK_URL": "http://hooks.clinic.example/push",
        "NOTIFY_WEBHOOK_SECRET": STRONG_SECRET[::-1],
        **PRODUCTION_MAIL,
    }
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert raised.value.problems == [
        "NOTIFY_WEBHOOK_URL must use https in production (its requests name the recipient)"
    ]
    https = Settings.from_env({**environ, "NOTIFY_WEBHOOK_URL": "https://hooks.clinic.example/push"}, env_file=None)
    assert https.notify_webhook_url == "https://hooks.clinic.example/push"
    assert Settings.from_env({**environ, "KETAFOLLOW_ENV": "development"}, env_file=None).notify_webhook_url


@pytest.mark.parametrize(
    ("origins", "problem"),
    [
        ("*", "CORS_ALLOWED_ORIGINS must list origins in production, not '*'"),
        ("http://portal.example.org", "CORS_ALLOWED_ORIGINS: 'http://portal.example.org' must use https in production"),
    ],
)
def test_production_allows_only_listed_https_origins(origins: str, problem: str) -> None:
    environ = {"KETAFOLLOW_ENV": "production", "SECRET_KEY": STRONG_SECRET, "CORS_ALLOWED_ORIGINS": origins}
    environ |= PRODUCTION_MAIL
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert raised.value.problems == [problem]
    assert Settings.from_env({"CORS_ALLOWED_ORIGINS": origins}, env_file=None).cors_allowed_origins == (origins,)


def test_hsts_and_the_preflight_cache_are_read_in_seconds() -> None:
    assert Settings.from_env({}, env_file=None).hsts_seconds == 0
    settings = Settings.from_env({"HSTS_SECONDS": "63072000", "CORS_MAX_AGE_SECONDS": "3600"}, env_file=None)
    assert (settings.hsts_seconds, settings.cors_max_age) == (63072000, 3600)
    with pytest.raises(SettingsError, match="HSTS_SECONDS must be a whole number"):
        Settings.from_env({"HSTS_SECONDS": "1y"}, env_file=None)


def test_rate_limits_have_defaults_and_each_bucket_can_be_set() -> None:
    defaults = Settings.from_env({}, env_file=None)
    assert defaults.user_rate == BucketPolicy(burst=60, per_minute=120)
    assert defaults.client_rate == BucketPolicy(burst=300, per_minute=600)
    assert defaults.anonymous_rate == BucketPolicy(burst=20, per_minute=30)
    assert defaults.rate_limit_url is None
    settings = Settings.from_env(
        {"RATE_LIMIT_CLIENT_BURST": "1000", "RATE_LIMIT_CLIENT_PER_MINUTE": "3000", "RATE_LIMIT_USER_BURST": "10"},
        env_file=None,
    )
    assert settings.client_rate == BucketPolicy(burst=1000, per_minute=3000)
    assert settings.user_rate == BucketPolicy(burst=10, per_minute=120)


def test_rate_limits_live_in_the_event_bus_redis_unless_told_otherwise() -> None:
    bus = {"EVENT_BUS_URL": "redis://bus:6379/0"}
    assert Settings.from_env(bus, env_file=None).rate_limit_url == "redis://bus:6379/0"
    own = Settings.from_env(bus | {"RATE_LIMIT_URL": "rediss://limits:6380/1"}, env_file=None)
    assert own.rate_limit_url == "rediss://limits:6380/1"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("RATE_LIMIT_URL", "memcached://x", "RATE_LIMIT_URL must be a redis:// or rediss:// URL"),
        ("RATE_LIMIT_USER_BURST", "0", "RATE_LIMIT_USER_BURST must be between 1 and 100000, got 0"),
        ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "-5", "RATE_LIMIT_ANONYMOUS_PER_MINUTE must be between 1 and 1000000"),
        ("RATE_LIMIT_CLIENT_PER_MINUTE", "fast", "RATE_LIMIT_CLIENT_PER_MINUTE must be a whole number"),
    ],
)
def test_bad_rate_limit_settings_are_refused_by_name(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value}, env_file=None)
    [line] = raised.value.problems
    assert line.startswith(problem)


def test_redis_waits_are_short_and_its_pool_generous_by_default_and_can_be_set() -> None:
    defaults = Settings.from_env({}, env_file=None)
    assert defaults.redis_socket_timeout == 0.25
    assert defaults.redis_connect_timeout == 0.25
    assert defaults.redis_max_connections == 512
    settings = Settings.from_env(
        {"REDIS_SOCKET_TIMEOUT_SECONDS": "0.1", "REDIS_CONNECT_TIMEOUT_SECONDS": "1", "REDIS_MAX_CONNECTIONS": "2000"},
        env_file=None,
    )
    assert settings.redis_socket_timeout == 0.1
    assert settings.redis_connect_timeout == 1.0
    assert settings.redis_max_connections == 2000


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("REDIS_SOCKET_TIMEOUT_SECONDS", "0", "REDIS_SOCKET_TIMEOUT_SECONDS must be between 0.01 and 5 seconds, got 0"),
        ("REDIS_SOCKET_TIMEOUT_SECONDS", "nan", "REDIS_SOCKET_TIMEOUT_SECONDS must be between 0.01 and 5 seconds"),
        ("REDIS_CONNECT_TIMEOUT_SECONDS", "soon", "REDIS_CONNECT_TIMEOUT_SECONDS must be a number of seconds"),
        ("REDIS_CONNECT_TIMEOUT_SECONDS", "30", "REDIS_CONNECT_TIMEOUT_SECONDS must be between 0.01 and 5 seconds"),
        ("REDIS_MAX_CONNECTIONS", "4", "REDIS_MAX_CONNECTIONS must be between 8 and 100000, got 4"),
    ],
)
def test_bad_redis_settings_are_refused_by_name(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value}, env_file=None)
    [line] = raised.value.problems
    assert line.startswith(problem)


def test_socket_limits_and_the_login_check_have_defaults_and_can_be_set() -> None:
    defaults = Settings.from_env({}, env_file=None)
    assert defaults.login_check_ttl == timedelta(seconds=3)
    assert defaults.socket_rate == BucketPolicy(burst=60, per_minute=120)
    assert defaults.socket_init_timeout == timedelta(seconds=10)
    assert (defaults.max_sockets_per_viewer, defaults.max_subscriptions_per_socket) == (10, 20)
    assert defaults.max_subscriptions_per_viewer == 50
    assert defaults.socket_sign_in_audit_window == timedelta(seconds=60)
    settings = Settings.from_env(
        {
            "LOGIN_CHECK_CACHE_SECONDS": "0",
            "RATE_LIMIT_SOCKET_BURST": "5",
            "SOCKET_INIT_TIMEOUT_SECONDS": "3",
            "SOCKETS_PER_VIEWER": "2",
            "SUBSCRIPTIONS_PER_SOCKET": "4",
            "SUBSCRIPTIONS_PER_VIEWER": "8",
            "SOCKET_SIGN_IN_AUDIT_WINDOW_SECONDS": "300",
        },
        env_file=None,
    )
    assert settings.login_check_ttl == timedelta(0)
    assert settings.socket_rate == BucketPolicy(burst=5, per_minute=120)
    assert settings.socket_init_timeout == timedelta(seconds=3)
    assert (settings.max_sockets_per_viewer, settings.max_subscriptions_per_socket) == (2, 4)
    assert settings.max_subscriptions_per_viewer == 8
    assert settings.socket_sign_in_audit_window == timedelta(seconds=300)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        # Changes to an account take effect within 5 seconds on every replica (PRODUCT.md).
        ("LOGIN_CHECK_CACHE_SECONDS", "6", "LOGIN_CHECK_CACHE_SECONDS must be between 0 and 5, got 6"),
        ("SOCKET_INIT_TIMEOUT_SECONDS", "0", "SOCKET_INIT_TIMEOUT_SECONDS must be between 1 and 60, got 0"),
        ("SOCKETS_PER_VIEWER", "many", "SOCKETS_PER_VIEWER must be a whole number"),
        ("SUBSCRIPTIONS_PER_VIEWER", "0", "SUBSCRIPTIONS_PER_VIEWER must be between 1 and 10000, got 0"),
        ("RATE_LIMIT_SOCKET_PER_MINUTE", "0", "RATE_LIMIT_SOCKET_PER_MINUTE must be between 1 and 1000000, got 0"),
        ("SOCKET_SIGN_IN_AUDIT_WINDOW_SECONDS", "5", "SOCKET_SIGN_IN_AUDIT_WINDOW_SECONDS must be between 10 and 3600"),
    ],
)
def test_bad_socket_settings_are_refused_by_name(name: str, value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: value}, env_file=None)
    [line] = raised.value.problems
    assert line.startswith(problem)


def _push_files(folder: Path) -> dict[str, str]:
    (folder / "AuthKey.p8").write_text(pem(ec.generate_private_key(ec.SECP256R1())))
    (folder / "rsa.pem").write_text(pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    account = {
        "type": "service_account",
        "project_id": "clinic-app",
        "private_key_id": "k1",
        "private_key": (folder / "rsa.pem").read_text(),
        "client_email": "push@clinic-app.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (folder / "account.json").write_text(json.dumps(account))
    return {
        "APNS_KEY_FILE": str(folder / "AuthKey.p8"),
        "APNS_KEY_ID": "ABC123DEFG",
        "APNS_TEAM_ID": "TEAM123456",
        "APNS_TOPIC": "org.clinic.ketafollow",
        "FCM_SERVICE_ACCOUNT_FILE": str(folder / "account.json"),
    }


def test_push_services_are_on_when_their_credentials_are_given(tmp_path: Path) -> None:
    settings = Settings.from_env(_push_files(tmp_path), env_file=None)
    assert settings.apns is not None and settings.fcm is not None
    assert (settings.apns.url, settings.apns.topic) == ("https://api.push.apple.com", "org.clinic.ketafollow")
    assert (settings.fcm.url, settings.fcm.project_id) == ("https://fcm.googleapis.com", "clinic-app")
    assert "BEGIN PRIVATE KEY" not in repr(settings.apns) + repr(settings.fcm)
    assert Settings.from_env({}, env_file=None).apns is None


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"APNS_TEAM_ID": ""},
            "APNs needs APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC; missing: APNS_TEAM_ID",
        ),
        ({"APNS_KEY_ID": "short"}, "APNS_KEY_ID must be 10 upper-case letters or digits"),
        ({"APNS_TOPIC": "ketafollow"}, "APNS_TOPIC must be the app's bundle id"),
        ({"APNS_KEY_FILE": "/nonexistent/AuthKey.p8"}, "APNS_KEY_FILE: cannot read '/nonexistent/AuthKey.p8'"),
        ({"APNS_KEY_FILE": "{rsa}"}, "APNS_KEY_FILE must hold an EC P-256 key (.p8)"),
        ({"APNS_KEY_FILE": "{account}"}, "APNS_KEY_FILE does not hold an unencrypted PEM private key"),
        ({"APNS_URL": "http://push.example.org"}, "APNS_URL must be an https:// URL"),
        ({"FCM_SERVICE_ACCOUNT_FILE": "{rsa}"}, "FCM_SERVICE_ACCOUNT_FILE is not JSON"),
        ({"FCM_SERVICE_ACCOUNT_FILE": "", "FCM_URL": "https://fcm.example"}, "FCM_URL is set without"),
        (
            {"NOTIFY_WEBHOOK_URL": "https://hooks.example.org/push", "NOTIFY_WEBHOOK_SECRET": STRONG_SECRET},
            "NOTIFY_WEBHOOK_URL and push (APNS_*, FCM_*) are both set",
        ),
    ],
)
def test_push_settings_name_what_is_wrong(tmp_path: Path, changes: dict[str, str], problem: str) -> None:
    files = {"{rsa}": str(tmp_path / "rsa.pem"), "{account}": str(tmp_path / "account.json")}
    environ = {**_push_files(tmp_path), **{name: files.get(value, value) for name, value in changes.items()}}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert any(problem in message for message in raised.value.problems), raised.value.problems


def test_production_refuses_plain_http_push_services(tmp_path: Path) -> None:
    environ = {"KETAFOLLOW_ENV": "production", "SECRET_KEY": STRONG_SECRET, **_push_files(tmp_path), **PRODUCTION_MAIL}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**environ, "APNS_URL": "http://127.0.0.1:9999"}, env_file=None)
    assert raised.value.problems == ["APNS_URL must be an https:// URL, got 'http://127.0.0.1:9999'"]
    assert Settings.from_env({**environ, "APNS_URL": "https://api.sandbox.push.apple.com"}, env_file=None).apns


def test_crisis_phrases_are_the_seed_list_unless_a_clinic_names_its_own_file(tmp_path: Path) -> None:
    assert Settings.from_env({}, env_file=None).clinic_policy.crisis_phrases == DEFAULT_POLICY.crisis_phrases
    assert "kill myself" in DEFAULT_POLICY.crisis_phrases
    own = tmp_path / "phrases.txt"
    own.write_text("# North clinic\nkill myself\ndisappear for good\n", encoding="utf-8")
    settings = Settings.from_env({"CRISIS_PHRASES_FILE": str(own)}, env_file=None)
    assert settings.clinic_policy.crisis_phrases == ("kill myself", "disappear for good")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read: No such file or directory"),
        ("{directory}", "cannot be read: Is a directory"),
        (b"kill myself\n\xff\xfe\n", "cannot be read: 'utf-8' codec can't decode"),
        ("", "it lists no phrase"),
        ("# nothing but comments\n\n", "it lists no phrase"),
        ("kill myself\n...\n", "line 2 ('...') has no letter or digit"),
    ],
)
def test_a_crisis_phrase_file_that_cannot_serve_refuses_to_start_naming_the_variable(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "phrases.txt"
    if content == "{directory}":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"CRISIS_PHRASES_FILE": str(path)}, env_file=None)
    [message] = raised.value.problems
    assert message.startswith(f"CRISIS_PHRASES_FILE: {path}")
    assert problem in message


def test_every_wait_has_a_bound_by_default_and_each_can_be_set() -> None:
    defaults = Settings.from_env({}, env_file=None)
    assert defaults.request_timeout == 8  # under 10 s: a phone on a bad network retries sooner
    assert (defaults.db_statement_timeout, defaults.db_pool_timeout, defaults.db_connect_timeout) == (5, 3, 3)
    assert defaults.sqlite_busy_timeout == 5
    assert defaults.ready_timeout == 1.5
    assert defaults.shutdown_timeout == 15
    settings = Settings.from_env(
        {
            "REQUEST_TIMEOUT_SECONDS": "4.5",
            "DB_STATEMENT_TIMEOUT_SECONDS": "2",
            "DB_POOL_TIMEOUT_SECONDS": "0.5",
            "DB_CONNECT_TIMEOUT_SECONDS": "1",
            "SQLITE_BUSY_TIMEOUT_SECONDS": "0.25",
            "READY_TIMEOUT_SECONDS": "0.8",
            "SHUTDOWN_TIMEOUT_SECONDS": "20",
        },
        env_file=None,
    )
    assert settings.request_timeout == 4.5
    assert (settings.db_statement_timeout, settings.db_pool_timeout, settings.db_connect_timeout) == (2, 0.5, 1)
    assert settings.sqlite_busy_timeout == 0.25
    assert settings.ready_timeout == 0.8
    assert settings.shutdown_timeout == 20


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        # The bound: a graceful shutdown ends within 20 s whatever the backends do.
        ({"SHUTDOWN_TIMEOUT_SECONDS": "21"}, "SHUTDOWN_TIMEOUT_SECONDS must be between 1 and 20 seconds, got 21"),
        ({"SHUTDOWN_TIMEOUT_SECONDS": "soon"}, "SHUTDOWN_TIMEOUT_SECONDS must be a number of seconds"),
        # /readyz answers within 2 s.
        ({"READY_TIMEOUT_SECONDS": "2"}, "READY_TIMEOUT_SECONDS must be between 0.1 and 1.9 seconds, got 2"),
        ({"REQUEST_TIMEOUT_SECONDS": "0"}, "REQUEST_TIMEOUT_SECONDS must be between 0.1 and 60 seconds, got 0"),
        ({"REQUEST_TIMEOUT_SECONDS": "nan"}, "REQUEST_TIMEOUT_SECONDS must be between 0.1 and 60 seconds"),
        ({"DB_POOL_TIMEOUT_SECONDS": "-1"}, "DB_POOL_TIMEOUT_SECONDS must be between 0.1 and 60 seconds"),
        # The database's own bounds bite before the request's deadline does.
        (
            {
                "REQUEST_TIMEOUT_SECONDS": "3",
                "DATABASE_URL": "postgres://ketafollow@db.internal/ketafollow",
                "KETAFOLLOW_ENV": "development",
            },
            "DB_STATEMENT_TIMEOUT_SECONDS (5) must not exceed REQUEST_TIMEOUT_SECONDS (3)",
        ),
        (
            {"REQUEST_TIMEOUT_SECONDS": "3"},  # SQLite (the default): its busy timeout
            "SQLITE_BUSY_TIMEOUT_SECONDS (5) must not exceed REQUEST_TIMEOUT_SECONDS (3)",
        ),
        (
            {"SQLITE_BUSY_TIMEOUT_SECONDS": "9"},
            "SQLITE_BUSY_TIMEOUT_SECONDS (9) must not exceed REQUEST_TIMEOUT_SECONDS (8)",
        ),
    ],
)
def test_bad_bounds_are_refused_by_name(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert raised.value.problems[0].startswith(problem), raised.value.problems


def test_only_the_bounds_of_the_database_in_use_are_held_to_the_deadline() -> None:
    on_postgres = {"REQUEST_TIMEOUT_SECONDS": "3", "DB_STATEMENT_TIMEOUT_SECONDS": "2", "DB_POOL_TIMEOUT_SECONDS": "2"}
    settings = Settings.from_env(
        {
            **on_postgres,
            "DATABASE_URL": "postgres://ketafollow@db.internal/ketafollow",
            "KETAFOLLOW_ENV": "development",
        },
        env_file=None,
    )
    assert settings.sqlite_busy_timeout == 5.0  # unused on PostgreSQL: not refused
    on_sqlite = Settings.from_env({"REQUEST_TIMEOUT_SECONDS": "3", "SQLITE_BUSY_TIMEOUT_SECONDS": "2"}, env_file=None)
    assert on_sqlite.db_statement_timeout == 5.0  # unused on SQLite: not refused
