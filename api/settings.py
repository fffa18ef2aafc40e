"""One typed settings object, read from the environment (and `.env`) and validated at start-up.

Every problem is collected and reported at once, with the variable's name, so an operator fixes a
bad deployment in one go instead of one restart per mistake. It is longer than our other modules
on purpose: every variable, its default and its check stand in one place, in the order of
docs/configuration.md (the mail and push settings, which have parsing of their own, are
`api.mail_settings` and `api.push_settings`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from api.mail_settings import read_mail
from api.push_settings import read_apns, read_fcm
from jobs.mail import MailSettings
from models.care.plan_rules import dose_limits_problem
from models.identity.accounts import Role
from models.kernel.policy import DEFAULT_POLICY, US_CRISIS_RESOURCES, ClinicPolicy, PolicyFileError, policy_overrides
from models.notifications.push.apns import ApnsCredentials
from models.notifications.push.fcm import FcmCredentials
from models.safety.crisis import SEED_CRISIS_PHRASES_FILE, CrisisPhrasesError, read_crisis_phrases

# Only ever used outside production; production refuses it (see `_check_secret`).
DEVELOPMENT_SECRET_KEY = "development-only-secret-key-do-not-use-in-production"  # noqa: S105
MINIMUM_SECRET_LENGTH = 32
DEFAULT_DATABASE_URL = "sqlite://var/ketafollow.sqlite3"


@dataclass(frozen=True)
class BucketPolicy:
    """A token bucket: holds up to `burst` tokens and gains `per_minute` of them every minute.

    A GraphQL root field or another request spends one token; an empty bucket answers 429.
    """

    burst: int
    per_minute: int

    @property
    def per_second(self) -> float:
        return self.per_minute / 60


# Defaults (docs/security.md, "Rate limits"): a person's app or portal page spends a few tokens per screen;
# an EHR client pages through the change feed; anonymous traffic is sign-in and refresh only.
DEFAULT_USER_RATE = BucketPolicy(burst=60, per_minute=120)
DEFAULT_CLIENT_RATE = BucketPolicy(burst=300, per_minute=600)
DEFAULT_ANONYMOUS_RATE = BucketPolicy(burst=20, per_minute=30)
# WebSocket upgrades and `connection_init`s per client address (each costs one token): enough for a
# clinic of a few dozen portals behind one address to reconnect at once after a deployment.
DEFAULT_SOCKET_RATE = BucketPolicy(burst=60, per_minute=120)
DEFAULT_RATE_LIMIT_KEY_PREFIX = "ketafollow:rate:"
DEFAULT_EVENT_BUS_CHANNEL = "ketafollow:events"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class SettingsError(Exception):
    """The environment does not describe a process that may start; `problems` says why."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    env: Environment = Environment.DEVELOPMENT
    # False when KETAFOLLOW_ENV was not set and `env` is only the default (see `exposure_problems`).
    env_chosen: bool = True
    database_url: str = DEFAULT_DATABASE_URL
    # PostgreSQL: the owner role that runs `ketafollow migrate` (api.database_roles); unset, the
    # migrations run as DATABASE_URL's role (development, SQLite).
    migration_database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Access tokens are signed with `secret_key` and carry `secret_key_id` as their `kid`;
    # `previous_secret_keys` (kid -> key) still verify, so keys rotate without logging anyone out.
    secret_key: str = DEVELOPMENT_SECRET_KEY
    secret_key_id: str = "k1"  # noqa: S105 - a key id, not a secret
    previous_secret_keys: Mapping[str, str] = field(default_factory=dict)
    token_issuer: str = "ketafollow"  # noqa: S105
    token_audience: str = "ketafollow-api"  # noqa: S105
    access_token_ttl: timedelta = timedelta(minutes=15)
    refresh_token_idle_ttl: timedelta = timedelta(hours=12)
    refresh_token_absolute_ttl: timedelta = timedelta(days=30)
    max_query_depth: int = 12
    max_aliases: int = 15
    max_tokens: int = 2000
    max_page_size: int = 100
    # The most objects one operation's answer may hold, page sizes multiplied (schema.query_cost).
    max_query_cost: int = 10_000
    max_body_bytes: int = 256 * 1024
    log_level: str = "INFO"
    log_format: str = "text"
    run_scheduler: bool = True
    # Proxies whose X-Forwarded-For is believed (the client address feeds throttling and audit).
    forwarded_allow_ips: str = ""
    # Notifications: posted to this webhook (signed with the secret) instead of only logged.
    notify_webhook_url: str | None = None
    notify_webhook_secret: str | None = None
    # Push notifications to registered phones (api.push_settings): on when configured.
    apns: ApnsCredentials | None = None
    fcm: FcmCredentials | None = None
    # E-mail (invitations, password resets): SMTP_URL, MAIL_FROM, PUBLIC_APP_URL (api.mail_settings).
    mail: MailSettings = field(default_factory=MailSettings)
    # Live events between replicas: Redis pub/sub when set, else in-process (ARCHITECTURE.md §3).
    event_bus_url: str | None = None
    # The Redis pub/sub channel: two deployments on one Redis need two (channels ignore the db number).
    event_bus_channel: str = DEFAULT_EVENT_BUS_CHANNEL
    # CLINICAL.md §7: what patients in crisis are told, and the clinic's on-call line.
    crisis_resources: str = US_CRISIS_RESOURCES
    on_call_contact: str | None = None
    # CLINICAL.md §7: the crisis wording scanned for, read from CRISIS_PHRASES_FILE (default the seed list).
    crisis_phrases: tuple[str, ...] = DEFAULT_POLICY.crisis_phrases
    # CLINICAL.md's thresholds, deadlines and quiet hours that this clinic changed (CLINIC_POLICY_FILE).
    clinic_policy_overrides: Mapping[str, object] = field(default_factory=dict)
    # Browser origins (scheme://host[:port]) allowed to call the API, e.g. the provider portal.
    cors_allowed_origins: tuple[str, ...] = ()
    cors_max_age: int = 600
    # Strict-Transport-Security max-age; 0 sends no header (only behind TLS, see docs/configuration.md).
    hsts_seconds: int = 0
    # Rate limits: buckets per user, per EHR client and per address of anonymous requests,
    # kept in Redis when `rate_limit_url` is set (shared by replicas), else in this process.
    user_rate: BucketPolicy = DEFAULT_USER_RATE
    client_rate: BucketPolicy = DEFAULT_CLIENT_RATE
    anonymous_rate: BucketPolicy = DEFAULT_ANONYMOUS_RATE
    rate_limit_url: str | None = None
    rate_limit_key_prefix: str = DEFAULT_RATE_LIMIT_KEY_PREFIX
    # Whether a login is still active is cached this long (in this process, and in the rate limits'
    # Redis when there is one); a login ended elsewhere is refused here within it (api.logins).
    login_check_ttl: timedelta = timedelta(seconds=3)
    # That Redis (api.redis_guard): a reply, a connection, a free connection of the pool each come
    # within these or the call fails (a hung Redis costs milliseconds, then the breaker opens); the
    # pool of each store holds at most `redis_max_connections` (waiting ones queue, never fail).
    redis_socket_timeout: float = 0.25  # seconds
    redis_connect_timeout: float = 0.25
    redis_max_connections: int = 512
    # Sockets (api.sockets): upgrades and `connection_init`s per address, the time a new socket has to
    # send its `connection_init`, open sockets per viewer, live operations per socket and per viewer,
    # and the window over which refused socket sign-ins from one address make one audit row.
    socket_rate: BucketPolicy = DEFAULT_SOCKET_RATE
    socket_init_timeout: timedelta = timedelta(seconds=10)
    max_sockets_per_viewer: int = 10
    max_subscriptions_per_socket: int = 20
    max_subscriptions_per_viewer: int = 50
    socket_sign_in_audit_window: timedelta = timedelta(seconds=60)
    # Bounds on every wait (docs/operations.md). An HTTP request running past `request_timeout` is
    # cancelled and answered 503 (api.faults); a socket's sign-in check too.
    request_timeout: float = 8.0
    # PostgreSQL: a statement running longer is cancelled by the server (statement_timeout), and the
    # client gives up on it a second later (a hung server cannot cancel anything); a request waits at
    # most `db_pool_timeout` for a pooled connection and `db_connect_timeout` for a new one.
    db_statement_timeout: float = 5.0
    db_pool_timeout: float = 3.0
    db_connect_timeout: float = 3.0
    # SQLite: how long a write waits for another connection's write lock (PRAGMA busy_timeout).
    sqlite_busy_timeout: float = 5.0
    # /readyz: each check gets this long, so the answer comes within 2 s whatever the database does.
    ready_timeout: float = 1.5
    # SIGTERM: requests finish and the backends close within this, else the process exits anyway.
    shutdown_timeout: float = 15.0
    # Roles that must sign in with a second factor (models.identity.totp); without one, a sign-in gets
    # tokens that can only enrol one. MFA_REQUIRED_ROLES: PROVIDER,ADMIN in production, none else.
    mfa_required_roles: frozenset[Role] = frozenset()

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def migration_url(self) -> str:
        """Where `ketafollow migrate` connects: the owner role when one is set, else DATABASE_URL."""
        return self.migration_database_url or self.database_url

    @property
    def on_postgres(self) -> bool:
        return urlsplit(self.database_url).scheme in {"postgres", "postgresql"}

    @property
    def graphql_ide_enabled(self) -> bool:
        return not self.is_production

    @property
    def introspection_enabled(self) -> bool:
        return not self.is_production

    @property
    def demo_logins_enabled(self) -> bool:
        return not self.is_production

    @cached_property
    def clinic_policy(self) -> ClinicPolicy:
        """CLINICAL.md's defaults with this clinic's changes (CLINIC_POLICY_FILE), crisis resources,
        on-call line and crisis phrases."""
        return replace(
            DEFAULT_POLICY,
            **self.clinic_policy_overrides,  # type: ignore[arg-type]
            crisis_resources=self.crisis_resources,
            on_call_contact=self.on_call_contact,
            crisis_phrases=self.crisis_phrases,
        )

    @property
    def signing_keys(self) -> dict[str, str]:
        """Every key that verifies a token, by `kid`; the current one signs."""
        return {**self.previous_secret_keys, self.secret_key_id: self.secret_key}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env") -> Settings:
        """Read settings from `environ` (default: the process environment) over `env_file`.

        Raises `SettingsError` listing every invalid or missing variable.
        """
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        return _Reader(values).settings()


def is_loopback(host: str) -> bool:
    """Whether a server listening on `host` is reachable from this machine only."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every address): others may reach it


def exposure_problems(settings: Settings, host: str) -> list[str]:
    """Why these settings must not serve on `host`: insecure defaults where others can reach them.

    On loopback with SQLite the defaults make a development machine. Anywhere else (another
    address, or PostgreSQL: a shared database), KETAFOLLOW_ENV must be chosen, and the development
    SECRET_KEY, which is public in the repository (anyone could sign tokens), never listens
    beyond loopback. Production refuses that key anyway (`_Reader._check_secret`).
    """
    exposed = []
    if not is_loopback(host):
        exposed.append(f"HOST={host or '(every address)'} is reachable from other machines")
    if settings.on_postgres:
        exposed.append("DATABASE_URL is a PostgreSQL database")
    if not exposed:
        return []
    if not settings.env_chosen:
        return [
            f"KETAFOLLOW_ENV is not set and {' and '.join(exposed)}: set KETAFOLLOW_ENV=production with a random "
            f"SECRET_KEY ({MINIMUM_SECRET_LENGTH}+ characters) for a deployment, or KETAFOLLOW_ENV=development "
            "explicitly on a development machine"
        ]
    if settings.secret_key == DEVELOPMENT_SECRET_KEY and not is_loopback(host) and not settings.is_production:
        return [
            f"SECRET_KEY is the development key, public in the repository, and HOST={host or '(every address)'} is "
            f"reachable from other machines (anyone could sign tokens): set a random SECRET_KEY "
            f"({MINIMUM_SECRET_LENGTH}+ characters), with KETAFOLLOW_ENV=production for a deployment, or listen on "
            "127.0.0.1"
        ]
    return []


class _Reader:
    """Turns raw strings into a `Settings`, collecting problems instead of failing on the first."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def text(self, name: str, default: str) -> str:
        return self.values.get(name, default).strip() or default

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.values.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, got {raw!r}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def seconds(self, name: str, default: timedelta, *, minimum: int, maximum: int) -> timedelta:
        default_seconds = int(default.total_seconds())
        return timedelta(seconds=self.integer(name, default_seconds, minimum=minimum, maximum=maximum))

    def fractional_seconds(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        """A duration in seconds, fractions allowed (`1.5`)."""
        raw = self.values.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number of seconds, got {raw!r}")
            return default
        if not minimum <= value <= maximum:  # NaN fails this too
            self.problems.append(f"{name} must be between {minimum:g} and {maximum:g} seconds, got {raw.strip()}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.values.get(name)
        if raw is None or not raw.strip():
            return default
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def bucket(self, name: str, default: BucketPolicy) -> BucketPolicy:
        return BucketPolicy(
            burst=self.integer(f"{name}_BURST", default.burst, minimum=1, maximum=100_000),
            per_minute=self.integer(f"{name}_PER_MINUTE", default.per_minute, minimum=1, maximum=1_000_000),
        )

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        self.problems.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return default

    def settings(self) -> Settings:
        env = Environment(
            self.choice("KETAFOLLOW_ENV", Environment.DEVELOPMENT.value, tuple(e.value for e in Environment))
        )
        production = env is Environment.PRODUCTION
        secret_key = self.values.get("SECRET_KEY", "").strip()
        if not secret_key:
            if production:
                self.problems.append("SECRET_KEY must be set in production (32 or more random characters)")
            secret_key = DEVELOPMENT_SECRET_KEY
        elif production:
            self._check_secret("SECRET_KEY", secret_key)
        previous = self._previous_keys(production)
        secret_key_id = self.text("SECRET_KEY_ID", "k1")
        if secret_key_id in previous:
            self.problems.append(f"SECRET_KEY_ID {secret_key_id!r} is also listed in PREVIOUS_SECRET_KEYS")

        access_ttl = self.seconds("ACCESS_TOKEN_TTL_SECONDS", timedelta(minutes=15), minimum=60, maximum=3600)
        idle_ttl = self.seconds("REFRESH_TOKEN_IDLE_TTL_SECONDS", timedelta(hours=12), minimum=300, maximum=30 * 86400)
        absolute_ttl = self.seconds(
            "REFRESH_TOKEN_ABSOLUTE_TTL_SECONDS", timedelta(days=30), minimum=300, maximum=90 * 86400
        )
        if idle_ttl > absolute_ttl:
            self.problems.append("REFRESH_TOKEN_IDLE_TTL_SECONDS must not exceed REFRESH_TOKEN_ABSOLUTE_TTL_SECONDS")

        event_bus_url = self._event_bus_url()
        database_url = self._database_url()
        settings = Settings(
            env=env,
            env_chosen=bool(self.values.get("KETAFOLLOW_ENV", "").strip()),
            database_url=database_url,
            migration_database_url=self._migration_database_url(database_url),
            host=self.text("HOST", "127.0.0.1"),
            port=self.integer("PORT", 8000, minimum=1, maximum=65535),
            secret_key=secret_key,
            secret_key_id=secret_key_id,
            previous_secret_keys=previous,
            token_issuer=self.text("TOKEN_ISSUER", "ketafollow"),
            token_audience=self.text("TOKEN_AUDIENCE", "ketafollow-api"),
            access_token_ttl=access_ttl,
            refresh_token_idle_ttl=idle_ttl,
            refresh_token_absolute_ttl=absolute_ttl,
            max_query_depth=self.integer("GRAPHQL_MAX_DEPTH", 12, minimum=2, maximum=50),
            max_aliases=self.integer("GRAPHQL_MAX_ALIASES", 15, minimum=1, maximum=200),
            max_tokens=self.integer("GRAPHQL_MAX_TOKENS", 2000, minimum=100, maximum=100_000),
            max_page_size=self.integer("GRAPHQL_MAX_PAGE_SIZE", 100, minimum=1, maximum=1000),
            max_query_cost=self.integer("GRAPHQL_MAX_COST", 10_000, minimum=100, maximum=10_000_000),
            max_body_bytes=self.integer("MAX_BODY_BYTES", 256 * 1024, minimum=1024, maximum=16 * 1024 * 1024),
            log_level=self.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=self.choice("LOG_FORMAT", "json" if production else "text", ("json", "text")),
            run_scheduler=self.boolean("RUN_SCHEDULER", True),
            forwarded_allow_ips=self.text("FORWARDED_ALLOW_IPS", ""),
            event_bus_url=event_bus_url,
            event_bus_channel=self.text("EVENT_BUS_CHANNEL", DEFAULT_EVENT_BUS_CHANNEL),
            notify_webhook_url=self._webhook_url(production),
            notify_webhook_secret=self.values.get("NOTIFY_WEBHOOK_SECRET", "").strip() or None,
            apns=read_apns(self.values, production=production, problems=self.problems),
            fcm=read_fcm(self.values, production=production, problems=self.problems),
            mail=read_mail(self.values, production=production, problems=self.problems),
            crisis_resources=self.text("CRISIS_RESOURCES", US_CRISIS_RESOURCES),
            on_call_contact=self.text("CLINIC_ON_CALL", "") or None,
            crisis_phrases=self._crisis_phrases(),
            clinic_policy_overrides=self._clinic_policy(),
            cors_allowed_origins=self._cors_origins(production),
            cors_max_age=self.integer("CORS_MAX_AGE_SECONDS", 600, minimum=0, maximum=86400),
            hsts_seconds=self.integer("HSTS_SECONDS", 0, minimum=0, maximum=2 * 365 * 86400),
            user_rate=self.bucket("RATE_LIMIT_USER", DEFAULT_USER_RATE),
            client_rate=self.bucket("RATE_LIMIT_CLIENT", DEFAULT_CLIENT_RATE),
            anonymous_rate=self.bucket("RATE_LIMIT_ANONYMOUS", DEFAULT_ANONYMOUS_RATE),
            rate_limit_url=self._redis_url("RATE_LIMIT_URL") or event_bus_url,
            rate_limit_key_prefix=self.text("RATE_LIMIT_KEY_PREFIX", DEFAULT_RATE_LIMIT_KEY_PREFIX),
            login_check_ttl=self.seconds("LOGIN_CHECK_CACHE_SECONDS", timedelta(seconds=3), minimum=0, maximum=5),
            redis_socket_timeout=self.fractional_seconds("REDIS_SOCKET_TIMEOUT_SECONDS", 0.25, minimum=0.01, maximum=5),
            redis_connect_timeout=self.fractional_seconds(
                "REDIS_CONNECT_TIMEOUT_SECONDS", 0.25, minimum=0.01, maximum=5
            ),
            redis_max_connections=self.integer("REDIS_MAX_CONNECTIONS", 512, minimum=8, maximum=100_000),
            socket_rate=self.bucket("RATE_LIMIT_SOCKET", DEFAULT_SOCKET_RATE),
            socket_init_timeout=self.seconds(
                "SOCKET_INIT_TIMEOUT_SECONDS", timedelta(seconds=10), minimum=1, maximum=60
            ),
            max_sockets_per_viewer=self.integer("SOCKETS_PER_VIEWER", 10, minimum=1, maximum=1000),
            max_subscriptions_per_socket=self.integer("SUBSCRIPTIONS_PER_SOCKET", 20, minimum=1, maximum=1000),
            max_subscriptions_per_viewer=self.integer("SUBSCRIPTIONS_PER_VIEWER", 50, minimum=1, maximum=10_000),
            socket_sign_in_audit_window=self.seconds(
                "SOCKET_SIGN_IN_AUDIT_WINDOW_SECONDS", timedelta(seconds=60), minimum=10, maximum=3600
            ),
            request_timeout=self.fractional_seconds("REQUEST_TIMEOUT_SECONDS", 8.0, minimum=0.1, maximum=60),
            db_statement_timeout=self.fractional_seconds("DB_STATEMENT_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=300),
            db_pool_timeout=self.fractional_seconds("DB_POOL_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60),
            db_connect_timeout=self.fractional_seconds("DB_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60),
            sqlite_busy_timeout=self.fractional_seconds("SQLITE_BUSY_TIMEOUT_SECONDS", 5.0, minimum=0, maximum=60),
            ready_timeout=self.fractional_seconds("READY_TIMEOUT_SECONDS", 1.5, minimum=0.1, maximum=1.9),
            shutdown_timeout=self.fractional_seconds("SHUTDOWN_TIMEOUT_SECONDS", 15.0, minimum=1, maximum=20),
            mfa_required_roles=self._mfa_required_roles(production),
        )
        self._check_waits(settings)
        if settings.notify_webhook_url and (settings.apns or settings.fcm):
            self.problems.append(
                "NOTIFY_WEBHOOK_URL and push (APNS_*, FCM_*) are both set: notifications go one way, choose one"
            )
        self.problems += exposure_problems(settings, settings.host)
        if self.problems:
            raise SettingsError(self.problems)
        return settings

    def _check_waits(self, settings: Settings) -> None:
        """The database's own bounds must bite before the request's deadline does, so a slow
        statement ends as a database error (rolled back, answered 503) rather than by cancellation."""
        deadline = settings.request_timeout
        # Only the bounds of the database in use: SQLite has no statement timeout or pool, and
        # PostgreSQL no busy timeout.
        bounds: tuple[tuple[str, float], ...]
        if urlsplit(settings.database_url).scheme == "sqlite":
            bounds = (("SQLITE_BUSY_TIMEOUT_SECONDS", settings.sqlite_busy_timeout),)
        else:
            bounds = (
                ("DB_STATEMENT_TIMEOUT_SECONDS", settings.db_statement_timeout),
                ("DB_POOL_TIMEOUT_SECONDS", settings.db_pool_timeout),
            )
        for name, value in bounds:
            if value > deadline:
                self.problems.append(f"{name} ({value:g}) must not exceed REQUEST_TIMEOUT_SECONDS ({deadline:g})")

    def _check_secret(self, name: str, value: str) -> None:
        if value == DEVELOPMENT_SECRET_KEY:
            self.problems.append(f"{name} is the development default; set a random secret in production")
        elif len(value) < MINIMUM_SECRET_LENGTH:
            self.problems.append(f"{name} must be at least {MINIMUM_SECRET_LENGTH} characters in production")
        elif len(set(value)) < 10:
            self.problems.append(f"{name} is too weak (too few distinct characters); use a random secret")

    def _previous_keys(self, production: bool) -> dict[str, str]:
        raw = self.values.get("PREVIOUS_SECRET_KEYS", "").strip()
        keys: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            kid, separator, key = item.partition("=")
            if not separator or not kid.strip() or not key.strip():
                self.problems.append("PREVIOUS_SECRET_KEYS must be a comma-separated list of kid=secret")
                continue
            if production:
                self._check_secret(f"PREVIOUS_SECRET_KEYS[{kid.strip()}]", key.strip())
            keys[kid.strip()] = key.strip()
        return keys

    def _event_bus_url(self) -> str | None:
        return self._redis_url("EVENT_BUS_URL")

    def _redis_url(self, name: str) -> str | None:
        url = self.values.get(name, "").strip()
        if url and urlsplit(url).scheme not in {"redis", "rediss"}:
            self.problems.append(f"{name} must be a redis:// or rediss:// URL, got {url!r}")
        return url or None

    def _cors_origins(self, production: bool) -> tuple[str, ...]:
        """Origins as a browser sends them (lower case, no default port), so they compare equal."""
        raw = self.values.get("CORS_ALLOWED_ORIGINS", "")
        origins: list[str] = []
        for item in filter(None, (part.strip() for part in raw.split(","))):
            if item == "*":
                if production:
                    self.problems.append("CORS_ALLOWED_ORIGINS must list origins in production, not '*'")
                origins.append(item)
                continue
            origin = _origin(item)
            if origin is None:
                self.problems.append(
                    f"CORS_ALLOWED_ORIGINS: {item!r} is not an origin (scheme://host[:port], "
                    "http or https, no path, query or wildcard)"
                )
            elif production and not origin.startswith("https://"):
                self.problems.append(f"CORS_ALLOWED_ORIGINS: {item!r} must use https in production")
            else:
                origins.append(origin)
        return tuple(dict.fromkeys(origins))

    def _mfa_required_roles(self, production: bool) -> frozenset[Role]:
        default = "PROVIDER,ADMIN" if production else ""
        raw = self.values.get("MFA_REQUIRED_ROLES", default).strip()
        roles = []
        for item in (part.strip().upper() for part in raw.split(",") if part.strip()):
            if item in {"NONE", "-"}:
                continue
            if item not in Role.__members__:
                self.problems.append(f"MFA_REQUIRED_ROLES: {item!r} is not a role (PATIENT, PROVIDER, ADMIN)")
                continue
            roles.append(Role(item))
        return frozenset(roles)

    def _clinic_policy(self) -> dict[str, object]:
        raw = self.values.get("CLINIC_POLICY_FILE", "").strip()
        if not raw:
            return {}
        try:
            overrides = policy_overrides(json.loads(Path(raw).read_text(encoding="utf-8")))
            if problem := dose_limits_problem(replace(DEFAULT_POLICY, **overrides)):  # type: ignore[arg-type]
                raise PolicyFileError(problem)
            return overrides
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            self.problems.append(f"CLINIC_POLICY_FILE: {raw}: cannot be read as JSON ({error})")
        except PolicyFileError as error:
            self.problems.append(f"CLINIC_POLICY_FILE: {raw}: {error}")
        return {}

    def _crisis_phrases(self) -> tuple[str, ...]:
        path = Path(self.text("CRISIS_PHRASES_FILE", str(SEED_CRISIS_PHRASES_FILE)))
        try:
            return read_crisis_phrases(path)
        except CrisisPhrasesError as error:
            self.problems.append(f"CRISIS_PHRASES_FILE: {error}")
            return DEFAULT_POLICY.crisis_phrases

    def _webhook_url(self, production: bool) -> str | None:
        url = self.values.get("NOTIFY_WEBHOOK_URL", "").strip()
        if not url:
            return None
        scheme = urlsplit(url).scheme
        if scheme not in {"http", "https"}:
            self.problems.append(f"NOTIFY_WEBHOOK_URL must be an http(s) URL, got {url!r}")
        elif production and scheme != "https":
            self.problems.append("NOTIFY_WEBHOOK_URL must use https in production (its requests name the recipient)")
        if len(self.values.get("NOTIFY_WEBHOOK_SECRET", "").strip()) < MINIMUM_SECRET_LENGTH:
            self.problems.append(
                f"NOTIFY_WEBHOOK_SECRET must be set ({MINIMUM_SECRET_LENGTH}+ characters) with NOTIFY_WEBHOOK_URL"
            )
        return url

    def _database_url(self) -> str:
        url = self.text("DATABASE_URL", DEFAULT_DATABASE_URL)
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if url in {"sqlite://", "sqlite:///"}:
                self.problems.append("DATABASE_URL for SQLite needs a file path, e.g. sqlite://var/ketafollow.sqlite3")
        elif scheme in {"postgres", "postgresql"}:
            if not urlsplit(url).path.strip("/"):
                self.problems.append("DATABASE_URL for PostgreSQL needs a database name")
        else:
            self.problems.append(
                f"DATABASE_URL must start with sqlite:// or postgres://, got scheme {scheme or '(none)'!r}"
            )
        return url

    def _migration_database_url(self, database_url: str) -> str | None:
        """The owner role's URL: the same PostgreSQL database as DATABASE_URL, another user."""
        url = self.values.get("MIGRATION_DATABASE_URL", "").strip()
        if not url:
            return None
        service, owner = urlsplit(database_url), urlsplit(url)
        try:
            same_database = (owner.hostname, owner.port, owner.path.strip("/")) == (
                service.hostname,
                service.port,
                service.path.strip("/"),
            )
        except ValueError:  # a port that is not a number
            same_database = False
        if service.scheme not in {"postgres", "postgresql"}:
            self.problems.append(
                "MIGRATION_DATABASE_URL is for PostgreSQL only (SQLite has no roles: "
                "the database file's permissions are the boundary)"
            )
        elif owner.scheme not in {"postgres", "postgresql"}:
            self.problems.append(f"MIGRATION_DATABASE_URL must start with postgres://, got scheme {owner.scheme!r}")
        elif not same_database:
            self.problems.append("MIGRATION_DATABASE_URL must name the same host, port and database as DATABASE_URL")
        elif not owner.username or not service.username:
            self.problems.append("MIGRATION_DATABASE_URL and DATABASE_URL must each name their user (role)")
        elif owner.username == service.username:
            self.problems.append(
                "MIGRATION_DATABASE_URL must name another user than DATABASE_URL: the role serving "
                "requests must not own the tables (docs/deployment.md, PostgreSQL roles)"
            )
        return url


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(text: str) -> str | None:
    """An `Origin` header as it compares with CORS_ALLOWED_ORIGINS, or None if it is not one."""
    return _origin(text.strip())


def _origin(text: str) -> str | None:
    """`text` serialised as a browser's `Origin` header, or None if it is not an origin."""
    if "*" in text:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or text.endswith(("?", "#"))
    ):
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")
