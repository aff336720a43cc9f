"""Notify-style API keys: `{key_name}-{service_id}-{secret}` and an HS256 JWT signed with the secret.

The checks and their messages follow Notify's `app/authentication/auth.py` in the same order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt

CLOCK_SKEW_SECONDS = 30
KEY_TYPES = ("normal", "team", "test")
DOCS_URL = "https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header"


class AuthError(Exception):
    """`code` 401 maps to UNAUTHENTICATED, 403 to PERMISSION_DENIED."""

    def __init__(self, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class ApiKeyParts:
    service_id: str
    secret: str


@dataclass(frozen=True, slots=True)
class KnownKey:
    id: str
    key_type: str
    secret: str
    revoked_at: datetime | None


def split_key(api_key: str) -> ApiKeyParts:
    """The client library's own slicing: service id at [-73:-37], secret at [-36:]."""
    return ApiKeyParts(service_id=api_key[-73:-37], secret=api_key[-36:])


def format_key(name: str, service_id: str, secret: str) -> str:
    return f"{name}-{service_id}-{secret}"


def new_secret() -> str:
    return str(uuid.uuid4())


def create_token(secret: str, service_id: str, now: float | None = None) -> str:
    iat = int(now if now is not None else time.time())
    return jwt.encode({"iss": service_id, "iat": iat}, secret, algorithm="HS256", headers={"typ": "JWT"})


def token_from_header(header: str | None) -> str:
    if not header:
        raise AuthError("Unauthorized: authentication token must be provided", 401)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Unauthorized: authentication bearer scheme must be used", 401)
    return token.strip()


def issuer_claim(token: str) -> str:
    """The unverified `iss`. The algorithm is checked later, per key, as Notify does."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError(f"Invalid token: make sure your API token matches the example at {DOCS_URL}") from None
    if "iss" not in claims:
        raise AuthError("Invalid token: iss field not provided")
    return str(claims["iss"])


def issuer(token: str) -> str:
    """The unverified `iss` as a service id: which service's keys to try."""
    iss = issuer_claim(token)
    try:
        uuid.UUID(iss)
    except ValueError:
        raise AuthError("Invalid token: service id is not the right data type") from None
    return iss


def match_key(token: str, keys: Sequence[KnownKey], now: float | None = None) -> KnownKey:
    """The key whose secret signed `token`, after the clock and revocation checks."""
    if not keys:
        raise AuthError("Invalid token: service has no API keys")
    # Whole epoch seconds, as Notify compares: a token exactly 30 s old is still good.
    current = int(now if now is not None else time.time())
    for key in keys:
        try:
            claims = jwt.decode(
                token, key.secret, algorithms=["HS256"], options={"verify_iat": False, "require": ["iat"]}
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidAlgorithmError:
            raise AuthError("Invalid token: algorithm used is not HS256") from None
        except jwt.PyJWTError:
            raise AuthError(f"Invalid token: make sure your API token matches the example at {DOCS_URL}") from None
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or abs(current - int(iat)) > CLOCK_SKEW_SECONDS:
            raise AuthError("Error: Your system clock must be accurate to within 30 seconds")
        if key.revoked_at is not None:
            raise AuthError("Invalid token: API key revoked")
        return key
    raise AuthError("Invalid token: API key not found")


ADMIN_ISSUER = "herald-admin"


def create_admin_token(admin_secret: str, now: float | None = None) -> str:
    return create_token(admin_secret, ADMIN_ISSUER, now)


def verify_admin_token(token: str, admin_secret: str, now: float | None = None) -> None:
    """Admin calls: the same token shape as API keys, signed with the one admin secret."""
    if issuer_claim(token) != ADMIN_ISSUER:
        raise AuthError("Invalid token: not an admin token")
    match_key(token, [KnownKey("admin", "admin", admin_secret, None)], now)
