"""Fixtures for the control API tests: keys, tokens, a fake clock, a live test server."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from voxline.config import ServiceConfig
from voxline.control.app import STATE, create_app, mark_listening

from voxline.transports.webrtc_call import EXAMPLE_OFFER

from .fakes import ANSWER, FakeRuntime

__all__ = [
    "STATIC_TOKEN",
    "OFFER_SDP",
    "FakeClock",
    "Keys",
    "keys",
    "make_client",
    "offer",
    "bearer",
    "unsigned_token",
]

STATIC_TOKEN = "static-token-0123456789"
OFFER_SDP = EXAMPLE_OFFER
assert ANSWER


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Keys:
    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public_pem = (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def token(self, tenant: str = "acme", sub: str = "alice", ttl: float = 3600, **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"sub": sub, "tenant": tenant, "exp": now + ttl, "iat": now, "aud": "voxline"}
        body.update(claims)
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.private, algorithm="EdDSA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def keys() -> Keys:
    return Keys()


MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(keys: Keys) -> AsyncIterator[MakeClient]:
    """Start the real app over real HTTP on loopback; closes every server it started."""
    clients: list[TestClient[Any, Any]] = []

    async def make(
        config: ServiceConfig | None = None,
        factory: Any = FakeRuntime,
        clock: FakeClock | None = None,
        listening: bool = True,
        wait_started: bool = True,
    ) -> TestClient[Any, Any]:
        if config is None:
            config = ServiceConfig(api_tokens=(STATIC_TOKEN,), jwt_public_key=keys.public_pem)
        app = create_app(config, factory, clock=clock or FakeClock())
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        start = app[STATE].start_task
        if wait_started and start is not None:
            await start
        if listening:
            mark_listening(app)
        return client

    yield make
    for client in clients:
        await client.close()


async def offer(
    client: TestClient[Any, Any], token: str = STATIC_TOKEN, **body: Any
) -> tuple[int, dict[str, Any], Any]:
    payload = {"sdp": OFFER_SDP, "type": "offer", **body}
    resp = await client.post("/v1/webrtc/offer", json=payload, headers=bearer(token))
    return resp.status, await resp.json(), resp.headers
