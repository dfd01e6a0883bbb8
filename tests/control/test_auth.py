"""Authentication over real HTTP, and the authenticator and rate limiter on their own."""

from __future__ import annotations

import hashlib
import hmac
import asyncio
import base64
import time

import pytest

from voxline.config import ConfigError, ServiceConfig
from voxline.control.auth import ANONYMOUS, AuthError, Authenticator
from voxline.control.ratelimit import RateLimiter

from .api_fixtures import (  # noqa: F401  (fixtures)
    STATIC_TOKEN,
    FakeClock,
    Keys,
    bearer,
    keys,
    make_client,
    offer,
    unsigned_token,
)


async def _status(client, token: str | None, path: str = "/v1/sessions") -> tuple[int, dict, dict]:
    headers = bearer(token) if token is not None else {}
    resp = await client.get(path, headers=headers)
    return resp.status, await resp.json(), dict(resp.headers)


async def test_no_token_is_401_with_a_bearer_challenge(make_client) -> None:
    client = await make_client()
    status, body, headers = await _status(client, None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"] == 'Bearer realm="voxline"'
    resp = await client.get("/v1/sessions", headers={"Authorization": f"Basic {STATIC_TOKEN}"})
    assert resp.status == 401


async def test_bad_static_token_is_401(make_client) -> None:
    client = await make_client()
    status, body, headers = await _status(client, STATIC_TOKEN + "x")
    assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert (await _status(client, STATIC_TOKEN))[0] == 200


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "token expired"),
        ("not_yet", "token not yet valid"),
        ("no_tenant", "tenant"),
        ("no_exp", "exp"),
        ("other_key", "signature"),
        ("alg_none", "alg must be EdDSA"),
        ("hs256_confusion", "alg must be EdDSA"),
        ("revoked", "token revoked"),
        ("garbage", "malformed"),
        ("no_aud", "aud"),
        ("other_aud", "not for this service"),
        ("forever", "lives longer than"),
        ("forever_from_the_future", "not yet valid"),
        ("default_tenant", "reserved for the static tokens"),
        ("wrong_issuer", "issuer must be"),
    ],
)
async def test_bad_jwts_are_401(make_client, keys: Keys, case: str, message: str) -> None:
    now = int(time.time())
    issuer = "https://id.example" if case == "wrong_issuer" else ""
    config = ServiceConfig(api_tokens=(STATIC_TOKEN,), jwt_public_key=keys.public_pem, jwt_revoked=("gone",),
                           jwt_issuer=issuer)
    client = await make_client(config)
    claims = {"sub": "mallory", "tenant": "acme", "exp": now + 3600}
    token = {
        "expired": lambda: keys.token(ttl=-3600),
        "not_yet": lambda: keys.token(nbf=now + 3600),
        "no_tenant": lambda: keys.token(tenant=None),
        "no_exp": lambda: keys.token(exp=None),
        "other_key": lambda: Keys().token(),
        "alg_none": lambda: unsigned_token({"alg": "none", "typ": "JWT"}, claims),
        # HS256 keyed with the public key: the classic algorithm-confusion forgery.
        "hs256_confusion": lambda: _hs256(claims, keys.public_pem.encode()),
        "revoked": lambda: keys.token(jti="gone"),
        "garbage": lambda: "abc.def.ghi",
        "no_aud": lambda: keys.token(aud=None),
        "other_aud": lambda: keys.token(aud="another-service"),
        "forever": lambda: keys.token(exp=10**18),
        "forever_from_the_future": lambda: keys.token(exp=10**18, iat=10**18 - 60),
        "default_tenant": lambda: keys.token(tenant="default"),
        "wrong_issuer": lambda: keys.token(iss="https://elsewhere.example"),
    }[case]()
    status, body, headers = await _status(client, token)
    assert status == 401, body
    assert message in body["error"]["message"]
    good = keys.token(jti="fine", iss=issuer or None)
    assert (await _status(client, good))[0] == 200  # the good token still works


def _hs256(claims: dict, secret: bytes) -> str:
    head_payload = unsigned_token({"alg": "HS256", "typ": "JWT"}, claims).rsplit(".", 1)[0]
    sig = hmac.new(secret, head_payload.encode(), hashlib.sha256).digest()
    return head_payload + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


async def test_another_tenants_sessions_do_not_exist(make_client, keys: Keys) -> None:
    client = await make_client()
    alice, bob = keys.token(tenant="acme", sub="alice"), keys.token(tenant="globex", sub="bob")
    status, created, _ = await offer(client, token=alice)
    assert status == 201
    sid = created["session_id"]
    for method, path in (
        ("GET", f"/v1/sessions/{sid}"),
        ("DELETE", f"/v1/sessions/{sid}"),
        ("POST", f"/v1/sessions/{sid}/interrupt"),
    ):
        resp = await client.request(method, path, headers=bearer(bob))
        assert resp.status == 404, (method, path)
    resp = await client.post(f"/v1/sessions/{sid}/say", json={"text": "hi"}, headers=bearer(bob))
    assert resp.status == 404
    resp = await client.get("/v1/sessions", headers=bearer(bob))
    assert (await resp.json())["sessions"] == []
    # The static token is tenant "default": not acme either.
    assert (await client.get(f"/v1/sessions/{sid}", headers=bearer(STATIC_TOKEN))).status == 404
    resp = await client.get(f"/v1/sessions/{sid}", headers=bearer(keys.token(tenant="acme", sub="carol")))
    assert resp.status == 200  # same tenant, another user of it


def test_identities() -> None:
    keys = Keys()
    auth = Authenticator(ServiceConfig(api_tokens=("a-token", "b-token"), jwt_public_key=keys.public_pem))
    a = auth.authenticate("a-token")
    assert a.tenant == "default" and a.token_id.startswith("static:") and "a-token" not in a.token_id
    assert auth.authenticate("b-token").token_id != a.token_id
    jwt_id = auth.authenticate(keys.token(tenant="acme", sub="alice", jti="j1"))
    assert (jwt_id.token_id, jwt_id.tenant, jwt_id.subject) == ("jwt:j1", "acme", "alice")
    with pytest.raises(AuthError):
        auth.authenticate("c-token")
    assert Authenticator(ServiceConfig()).authenticate_header(None) is ANONYMOUS


def test_a_key_that_is_not_ed25519_is_a_config_error(tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    with pytest.raises(ConfigError, match="Ed25519"):
        Authenticator(ServiceConfig(jwt_public_key=str(path)))
    with pytest.raises(ConfigError, match="jwt_public_key"):
        Authenticator(ServiceConfig(jwt_public_key=str(tmp_path / "missing.pem")))
    keys = Keys()
    (tmp_path / "ed.pem").write_text(keys.public_pem)
    assert Authenticator(ServiceConfig(jwt_public_key=str(tmp_path / "ed.pem"))).enabled


def test_token_bucket() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(per_minute=30, burst=3, clock=clock, max_keys=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)  # 0.5 tokens/s
    clock.now += 1.0
    assert limiter.take("a") == pytest.approx(1.0)  # half a token back: still short
    clock.now += 1.0
    assert limiter.take("a") == 0.0
    clock.now += 3600
    assert [limiter.take("a") for _ in range(4)][-1] > 0  # refills only up to the burst
    limiter.take("b")
    limiter.take("c")
    assert len(limiter) == 2  # bounded: the least recently used bucket went
    assert RateLimiter(0, 1, clock).take("x") == 0.0  # rate 0: no limit


async def _raw(port: int, request: bytes) -> bytes:
    """Send ``request`` as bytes (no client library would send these headers) and read the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer \xff\xfe\xfd",
        b"Authorization: Bearer caf\xc3\xa9",  # UTF-8, but not the token alphabet
        b"Authorization: Bearer a b",
        b"Authorization: \xc0\xaf",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: voxline.v1, bearer.\xff\xfe",
    ],
    ids=["latin1-bytes", "utf8-outside-alphabet", "space", "overlong-utf8", "ws-subprotocol"],
)
async def test_tokens_that_are_not_the_token_alphabet_are_401_not_500(make_client, header: bytes) -> None:
    client = await make_client()
    port = client.server.port
    assert port is not None
    reply = await _raw(port, b"GET /v1/sessions HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"malformed token" in reply or b"authorization must be" in reply
    assert (await _status(client, STATIC_TOKEN))[0] == 200
