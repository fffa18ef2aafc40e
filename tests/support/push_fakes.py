"""Local stand-ins for APNs and FCM (the edge of the world), served on 127.0.0.1 by the tests.

Both check what the real services check before accepting a push: the fake APNs speaks only
HTTP/2 and verifies the provider JWT (ES256, `kid`, `iss`) with the team's public key; the fake
FCM verifies the service account's RS256 assertion at its token endpoint and the access token it
issued on every send. Each records what it received; `script` queues answers per device token.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.kernel.clock import Clock
from models.notifications.push.fcm import JWT_BEARER, SCOPE

TEAM_ID = "TEAM123456"
KEY_ID = "KEY7890ABC"
TOPIC = "org.example.ketafollow"
PROJECT_ID = "ketafollow-test"
CLIENT_EMAIL = "push@ketafollow-test.iam.gserviceaccount.com"
FCM_KEY_ID = "fcm-key-1"


def pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class Scripted:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    device_token: str
    headers: dict[str, str]
    body: dict[str, Any]
    http_version: str


class FakeApns:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.received: list[Received] = []
        self.script: dict[str, list[Scripted]] = {}
        self.provider_tokens: list[str] = []
        self.url = ""

    async def push(self, request: Request) -> Response:
        device_token = request.path_params["token"]
        body = await request.json()  # read before answering, whatever the answer
        if request.scope.get("http_version") != "2":
            return JSONResponse({"reason": "HTTP/2 required"}, status_code=505)
        scheme, _, provider_token = request.headers.get("authorization", "").partition(" ")
        try:
            header = jwt.get_unverified_header(provider_token)
            claims = jwt.decode(
                provider_token,
                self.key.public_key(),
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},  # times: against the test's clock
            )
        except jwt.PyJWTError:
            return JSONResponse({"reason": "InvalidProviderToken"}, status_code=403)
        age = self.clock.now().timestamp() - claims["iat"]
        if age > 3600:
            return JSONResponse({"reason": "ExpiredProviderToken"}, status_code=403)
        if age < -60:
            return JSONResponse({"reason": "InvalidProviderToken"}, status_code=403)
        if scheme.lower() != "bearer" or header.get("kid") != KEY_ID or claims["iss"] != TEAM_ID:
            return JSONResponse({"reason": "InvalidProviderToken"}, status_code=403)
        if request.headers.get("apns-topic") != TOPIC:
            return JSONResponse({"reason": "TopicDisallowed"}, status_code=400)
        if request.headers.get("apns-push-type") != "alert":
            return JSONResponse({"reason": "InvalidPushType"}, status_code=400)
        self.provider_tokens.append(provider_token)
        self.received.append(Received(device_token, dict(request.headers), body, "2"))
        queued = self.script.get(device_token) or []
        if queued:
            answer = queued.pop(0)
            return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
        return Response(status_code=200, headers={"apns-id": secrets.token_hex(16)})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeApns]:
        """HTTP/2 over cleartext (prior knowledge) on a loopback port, by hypercorn."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = HypercornConfig()
        config.bind = [f"fd://{listener.fileno()}"]
        config.accesslog = config.errorlog = None
        app = Starlette(routes=[Route("/3/device/{token}", self.push, methods=["POST"])])
        stop = asyncio.Event()
        task = asyncio.create_task(hypercorn_serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            yield self
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
            listener.detach()  # hypercorn closed the descriptor

    def environment(self, folder: Path, *, key: ec.EllipticCurvePrivateKey | None = None) -> dict[str, str]:
        key_file = folder / "AuthKey.p8"
        key_file.write_text(pem(key or self.key))
        return {
            "APNS_KEY_FILE": str(key_file),
            "APNS_KEY_ID": KEY_ID,
            "APNS_TEAM_ID": TEAM_ID,
            "APNS_TOPIC": TOPIC,
            "APNS_URL": self.url,
        }


class FakeFcm:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.received: list[Received] = []
        self.script: dict[str, list[Scripted]] = {}
        self.issued: set[str] = set()
        self.token_requests = 0
        self.url = ""

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    async def token(self, request: Request) -> Response:
        form = {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}
        self.token_requests += 1
        assertion = str(form.get("assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp", "scope"], "verify_iat": False, "verify_exp": False},
            )
        except jwt.PyJWTError:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = self.clock.now().timestamp()
        if not claims["iat"] - 60 <= now < claims["exp"] or claims["exp"] - claims["iat"] > 3600:
            return JSONResponse({"error": "invalid_grant", "error_description": "bad times"}, status_code=400)
        if (
            form.get("grant_type") != JWT_BEARER
            or header.get("kid") != FCM_KEY_ID
            or claims["iss"] != CLIENT_EMAIL
            or claims["scope"] != SCOPE
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access_token = secrets.token_urlsafe(24)
        self.issued.add(access_token)
        return JSONResponse({"access_token": access_token, "expires_in": 3599, "token_type": "Bearer"})

    async def send(self, request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        body = await request.json()
        if request.path_params["project"] != PROJECT_ID:
            return JSONResponse({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, status_code=403)
        if not authorization.startswith("Bearer ") or authorization[7:] not in self.issued:
            return JSONResponse({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status_code=401)
        device_token = body["message"]["token"]
        self.received.append(Received(device_token, dict(request.headers), body, request.scope["http_version"]))
        queued = self.script.get(device_token) or []
        if queued:
            answer = queued.pop(0)
            return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
        return JSONResponse({"name": f"projects/{PROJECT_ID}/messages/{secrets.token_hex(8)}"})

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[FakeFcm]:
        app = Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self.send, methods=["POST"]),
            ]
        )
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
        task = asyncio.create_task(server.serve())
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=10)

    def environment(self, folder: Path) -> dict[str, str]:
        account = {
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": FCM_KEY_ID,
            "private_key": pem(self.key),
            "client_email": CLIENT_EMAIL,
            "token_uri": self.token_uri,
        }
        account_file = folder / "service-account.json"
        account_file.write_text(json.dumps(account))
        return {"FCM_SERVICE_ACCOUNT_FILE": str(account_file), "FCM_URL": self.url}


def unregistered_fcm() -> Scripted:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
    error = {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND", "details": [detail]}
    return Scripted(404, {"error": error})
