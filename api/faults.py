"""Clear answers when a backend fails, and the request deadline (docs/operations.md).

`FaultMiddleware` sits inside `RequestContextMiddleware` and `SecurityHeadersMiddleware`, so what
it answers carries `X-Request-ID` and every security header, and the access line shows its status.

- An HTTP request that runs past `REQUEST_TIMEOUT_SECONDS` is cancelled (an open transaction rolls
  back as it unwinds) and answered `503` with `Retry-After`; so is one still running when the
  server's graceful shutdown ends (uvicorn cancels it).
- A backend that does not answer (models.kernel.faults: the database cut, hung past its timeouts, locked
  past the busy timeout) is answered `503` with `Retry-After`; anything else unexpected `500`.
- Each answer is JSON in the path's own shape: a GraphQL error (`SERVICE_UNAVAILABLE` or
  `INTERNAL_SERVER_ERROR`, with the request id) on `/graphql`, OAuth2's `temporarily_unavailable` or
  `server_error` on `/auth/*`, `{"error", "message", "requestId"}` elsewhere; logged once with
  the request id. A keep-alive connection stays usable: every request gets its answer.
- A WebSocket whose handler fails on a backend is closed with 1013 (try again later), on any other
  error with 1011; operations on an open socket report their own errors (schema.extensions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.middleware import send_json_error
from models.kernel.faults import RETRY_AFTER_SECONDS, SERVICE_UNAVAILABLE, is_backend_unavailable, unavailable_message

logger = logging.getLogger("ketafollow.faults")

# WebSocket close codes (RFC 6455): 1013 "try again later", 1011 "internal error".
TRY_AGAIN_LATER = 1013
INTERNAL_ERROR = 1011

# The code of a masked unexpected error, as inside GraphQL (schema.extensions.make_public).
INTERNAL_ERROR_CODE = "INTERNAL_SERVER_ERROR"


def internal_message(request_id: str | None) -> str:
    return f"Unexpected error. Reference: {request_id}" if request_id else "Unexpected error."


def answer_for(path: str, *, unavailable: bool, message: str, request_id: str | None) -> dict[str, object]:
    """The body of a 503 (`unavailable`) or 500 in the shape of `path`'s own answers."""
    if path.startswith("/auth/"):
        return {"error": "temporarily_unavailable" if unavailable else "server_error", "error_description": message}
    code = SERVICE_UNAVAILABLE if unavailable else INTERNAL_ERROR_CODE
    if path.startswith("/graphql"):
        extensions: dict[str, object] = {"code": code, "requestId": request_id}
        if unavailable:
            extensions["retryAfter"] = RETRY_AFTER_SECONDS
        return {"data": None, "errors": [{"message": message, "extensions": extensions}]}
    return {"error": code.lower(), "message": message, "requestId": request_id}


def unavailable_headers() -> Mapping[str, str]:
    return {"retry-after": str(RETRY_AFTER_SECONDS), "cache-control": "no-store", "pragma": "no-cache"}


def _unwound(work: asyncio.Future[None]) -> None:
    """A request cancelled at its deadline has finished unwinding: log how it ended (once)."""
    if not work.cancelled() and (error := work.exception()) is not None:
        logger.warning("a request cancelled at its deadline failed as it unwound", exc_info=error)


class FaultMiddleware:
    """The request deadline and the answers to backend failures (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, request_timeout: float) -> None:
        self.app = app
        self.request_timeout = request_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # past its deadline the request was answered 503: what it sends now is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        request_id = scope.get("state", {}).get("request_id")
        # The request runs as a task of its own: at the deadline it is cancelled and answered at
        # once, while it unwinds in the background (a rollback on a hung database waits for the
        # driver's own timeout; the client must not).
        work = asyncio.ensure_future(self.app(scope, receive, tracking_send))
        try:
            done, _ = await asyncio.wait({work}, timeout=self.request_timeout)
        except asyncio.CancelledError:
            work.cancel()
            # uvicorn cancels what is still running when its graceful shutdown ends: the client is
            # answered (the connection then closes) instead of losing it without a word.
            if not started:
                answered = True
                logger.error("%s %s was cancelled: the server is stopping", scope.get("method"), scope.get("path"))
                message = unavailable_message(request_id, stopping=True)
                body = answer_for(scope.get("path", ""), unavailable=True, message=message, request_id=request_id)
                with contextlib.suppress(Exception):
                    await send_json_error(send, 503, body, headers={**unavailable_headers(), "connection": "close"})
            raise
        expired = not done
        failure: BaseException | None = None
        if expired:
            work.cancel()
            work.add_done_callback(_unwound)
            if started:  # too late for another answer: the connection ends
                answered = True
                return
        else:
            failure = asyncio.CancelledError() if work.cancelled() else work.exception()
            if failure is None:
                return
            if started:  # too late for another answer: the connection ends (uvicorn logs it)
                raise failure
        answered = True
        path = scope.get("path", "")
        if expired:
            logger.error("%s %s ran past its deadline of %g s and was cancelled", scope.get("method"), path,
                         self.request_timeout)  # fmt: skip
            unavailable, message = True, unavailable_message(request_id, deadline=self.request_timeout)
        elif isinstance(failure, Exception) and is_backend_unavailable(failure):
            logger.error("%s %s failed: a backend is unavailable", scope.get("method"), path, exc_info=failure)
            unavailable, message = True, unavailable_message(request_id)
        else:
            logger.error("%s %s failed unexpectedly", scope.get("method"), path, exc_info=failure)
            unavailable, message = False, internal_message(request_id)
        body = answer_for(path, unavailable=unavailable, message=message, request_id=request_id)
        headers = unavailable_headers() if unavailable else {"cache-control": "no-store"}
        await send_json_error(send, 503 if unavailable else 500, body, headers=headers)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = closed = False

        async def tracking_send(message: Message) -> None:
            nonlocal accepted, closed
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close":
                closed = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            if is_backend_unavailable(error):
                logger.error("a socket failed: a backend is unavailable", exc_info=error)
                code, reason = TRY_AGAIN_LATER, "service temporarily unavailable: reconnect in a few seconds"
            else:
                logger.error("a socket failed unexpectedly", exc_info=error)
                code, reason = INTERNAL_ERROR, "unexpected error: reconnect"
            if closed:
                return
            if not accepted:  # a close before the accept refuses the handshake (403)
                await send({"type": "websocket.close", "code": code, "reason": reason})
                return
            with contextlib.suppress(OSError, RuntimeError):  # the client has gone already
                await send({"type": "websocket.close", "code": code, "reason": reason})
