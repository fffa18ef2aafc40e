"""Pure ASGI middleware: request ids and the access line, security headers, the body size limit.

Pure ASGI (not `BaseHTTPMiddleware`) so WebSocket traffic passes through untouched and responses
are not buffered.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.database import use_database
from api.log import request_id_var

access_log = logging.getLogger("ketafollow.access")

_INCOMING_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Health data: no browser or proxy keeps a copy of any answer.
    "cache-control": "no-store",
}
# The API answers JSON only: a document served from it may load nothing, run nothing, be framed
# nowhere. GraphiQL (an HTML page, development only) loads its scripts and is left without it.
API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


async def send_json_error(
    send: Send, status: int, body: Mapping[str, object], *, headers: Mapping[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Gives each request an id, returns it in `X-Request-ID`, logs one access line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        # Our own id goes into logs and audit rows (a client must not choose it); a sane id the
        # client sent is logged beside it, to correlate with the app's own logs.
        incoming = Headers(scope=scope).get("x-request-id", "")
        client_request_id = incoming if _INCOMING_REQUEST_ID.match(incoming) else None
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Path only: query strings may carry identifiers.
            access_log.info(
                "%s %s %s",
                scope.get("method", "WS"),
                scope["path"],
                status,
                extra={
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    **({"client_request_id": client_request_id} if client_request_id else {}),
                },
            )
            request_id_var.reset(token)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response, HSTS only when `hsts_seconds` is set
    (a deployment whose clients reach it over TLS only: a browser then refuses plain HTTP)."""

    def __init__(self, app: ASGIApp, hsts_seconds: int = 0) -> None:
        self.app = app
        self.headers = dict(SECURITY_HEADERS)
        if hsts_seconds:
            self.headers["strict-transport-security"] = f"max-age={hsts_seconds}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if not headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", API_CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class DatabaseContextMiddleware:
    """Makes the app's database (opened by the lifespan) the current one for each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        database = getattr(scope["app"].state, "database", None) if "app" in scope else None
        if scope["type"] == "lifespan" or database is None:
            await self.app(scope, receive, send)
            return
        with use_database(database):
            await self.app(scope, receive, send)


class _BodyRefused(Exception):
    def __init__(self, status: int, error: Mapping[str, object]) -> None:
        self.status = status
        self.error = error


# A NUL character has no place in any field of this API, and PostgreSQL cannot store one in text:
# refused at the door (raw, JSON-escaped or form-encoded) instead of failing deep inside.
_NUL_FORMS = (b"\x00", b"\\u0000", b"%00")


class BodySizeLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, whether announced or streamed, and
    bodies carrying a NUL character with 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = {"error": "request_too_large", "message": f"request body is larger than {self.max_bytes} bytes"}
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await send_json_error(send, 413, too_large)
            return
        received = 0
        tail = b""
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    raise _BodyRefused(413, too_large)
                window = tail + chunk  # a NUL escape split across two chunks is still seen
                if any(form in window for form in _NUL_FORMS):
                    raise _BodyRefused(400, {"error": "invalid_request", "message": "NUL characters are not allowed"})
                tail = window[-5:]
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyRefused as refused:
            if response_started:
                raise
            await send_json_error(send, refused.status, refused.error)
