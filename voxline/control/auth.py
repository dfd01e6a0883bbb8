"""Bearer-token authentication: static tokens and Ed25519-signed JWTs.

A request's identity is (token id, tenant). Static tokens (``api_tokens``) map to
tenant ``default`` and are compared in constant time; their id is a short hash,
so logs and rate-limit keys never hold the secret. JWTs are verified with PyJWT
against the configured Ed25519 public key: ``alg`` must be ``EdDSA`` (``none``,
HS256 with the public key as a secret, and every other algorithm are refused
before any verification), ``sub``, ``tenant`` and ``exp`` are required,
``nbf``/``iat`` are honoured with a small leeway, and a token whose ``jti`` is in
``jwt_revoked`` is refused. A JWT is scoped to this service: ``aud`` must name
``jwt_audience`` (and ``iss`` be ``jwt_issuer`` when one is set), it may live at
most ``jwt_max_lifetime`` (``exp`` past ``iat``, or past now without ``iat``), and
it cannot claim tenant ``default``, which belongs to the static tokens: a token
minted elsewhere, one that never expires, or one that reads the static tokens'
sessions is refused.

A bearer token is the RFC 6750 ``b64token`` alphabet and at most 8 KiB; anything
else (non-ASCII bytes, spaces, control characters) is refused as malformed before
it is hashed or parsed.

PyJWT rather than hand-rolled verification over ``cryptography``: the parsing of
the compact form, base64url, the claim types and time checks are exactly where
home-made JWT code goes wrong; PyJWT uses ``cryptography`` (already a dependency
through aiortc) for the Ed25519 signature itself.

With no token configured every request is allowed as ``anonymous`` in tenant
``default``; the serve command then binds loopback only (see serve.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from voxline.config import ConfigError, ServiceConfig, read_key

__all__ = ["AuthError", "Authenticator", "Identity", "ANONYMOUS", "DEFAULT_TENANT"]

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
LEEWAY = 10.0  # seconds of clock skew allowed on exp/nbf/iat
REQUIRED_CLAIMS = ("sub", "tenant", "exp")
ALGORITHM = "EdDSA"
MAX_TOKEN = 8192
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 section 2.1


@dataclass(frozen=True, slots=True)
class Identity:
    token_id: str  # never the secret: "static:<hash>", "jwt:<jti or sub>", "anonymous"
    tenant: str
    subject: str = ""


ANONYMOUS = Identity("anonymous", DEFAULT_TENANT, "anonymous")


class AuthError(Exception):
    """The request carries no usable credentials; the message says why (for the 401)."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.missing = missing  # no credentials at all (RFC 6750: no error code then)

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header value for the 401."""
        if self.missing:
            return 'Bearer realm="voxline"'
        desc = self.message.replace('"', "'")
        return f'Bearer realm="voxline", error="invalid_token", error_description="{desc}"'


def _token_id(token: str) -> str:
    return "static:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def load_public_key(value: str) -> Ed25519PublicKey:
    """The configured key (inline PEM or a path) as an Ed25519 public key, or ConfigError."""
    try:
        pem = read_key(value)
        key = load_pem_public_key(pem.encode())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"jwt_public_key: cannot load a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"jwt_public_key must be an Ed25519 key, got {type(key).__name__}")
    return key


class Authenticator:
    def __init__(self, config: ServiceConfig) -> None:
        # Hash the static tokens once: comparing fixed-length digests keeps the
        # comparison constant-time whatever the presented token's length.
        self._static = [(hashlib.sha256(t.encode()).digest(), _token_id(t)) for t in config.api_tokens if t]
        self._key = load_public_key(config.jwt_public_key) if config.jwt_public_key else None
        self._revoked = frozenset(config.jwt_revoked)
        self._audience = config.jwt_audience or None
        self._issuer = config.jwt_issuer or None
        self._max_lifetime = config.jwt_max_lifetime

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._key is not None

    def authenticate_header(self, header: str | None) -> Identity:
        """Identity from an ``Authorization`` header value, or AuthError."""
        if not self.enabled:
            return ANONYMOUS
        if not header:
            raise AuthError("missing bearer token", missing=True)
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization must be 'Bearer <token>'")
        return self.authenticate(token.strip())

    def authenticate(self, token: str) -> Identity:
        """Identity for a bare token, or AuthError."""
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise AuthError("missing bearer token", missing=True)
        if len(token) > MAX_TOKEN or _B64TOKEN.fullmatch(token) is None:
            raise AuthError("malformed token: a bearer token is at most 8 KiB of the RFC 6750 b64token alphabet")
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for known, token_id in self._static:
            # No early exit: every configured token is compared every time.
            if hmac.compare_digest(digest, known):
                found = token_id
        if found is not None:
            return Identity(found, DEFAULT_TENANT, found)
        if self._key is not None and token.count(".") == 2:  # the JWS compact form
            return self._verify_jwt(token)
        raise AuthError("invalid token")

    def _verify_jwt(self, token: str) -> Identity:
        assert self._key is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        # Checked before verification, and again by PyJWT's allow-list below.
        if header.get("alg") != ALGORITHM:
            raise AuthError(f"token alg must be {ALGORITHM}, got {header.get('alg')!r}")
        required = list(REQUIRED_CLAIMS) + (["aud"] if self._audience else []) + (["iss"] if self._issuer else [])
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                leeway=LEEWAY,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("token not yet valid") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token signature is invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"token is not for this service (aud must be {self._audience!r})") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(f"token issuer must be {self._issuer!r}") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        sub, tenant, jti = claims.get("sub"), claims.get("tenant"), claims.get("jti")
        if not isinstance(sub, str) or not sub:
            raise AuthError("token sub must be a non-empty string")
        if not isinstance(tenant, str) or not tenant:
            raise AuthError("token tenant must be a non-empty string")
        if tenant == DEFAULT_TENANT:
            raise AuthError(f"tenant {DEFAULT_TENANT!r} is reserved for the static tokens")
        start = claims.get("iat")
        start = start if isinstance(start, (int, float)) else time.time()
        if claims["exp"] - start > self._max_lifetime + LEEWAY:
            raise AuthError(f"token lives longer than the {self._max_lifetime:.0f} s allowed")
        if jti is not None and not isinstance(jti, str):
            raise AuthError("token jti must be a string")
        if jti is not None and jti in self._revoked:
            log.info("refused revoked token jti=%s sub=%s", jti, sub)
            raise AuthError("token revoked")
        token_id = f"jwt:{jti}" if jti else f"jwt:{tenant}/{sub}"
        return Identity(token_id, tenant, sub)
