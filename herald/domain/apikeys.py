"""Notify-style API keys: `{key_name}-{service_id}-{secret}` and an HS256 JWT signed with the secret.

The checks and their messages follow Notify's `app/authentication/auth.py` in the same order. Tokens
are read by hand rather than with PyJWT (which cost more than the rest of a send): the reading
refuses exactly what PyJWT's `decode(token, secret, algorithms=["HS256"])` refuses, and every claim of
the wrong type or out of range is one of Notify's auth errors, never an exception of another kind.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from herald.domain.inputs import InputError, canonical_uuid

CLOCK_SKEW_SECONDS = 30
KEY_TYPES = ("normal", "team", "test")
DOCS_URL = "https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header"

UNDECODABLE = f"Invalid token: make sure your API token matches the example at {DOCS_URL}"
CLOCK = "Error: Your system clock must be accurate to within 30 seconds"
WRONG_ALGORITHM = "Invalid token: algorithm used is not HS256"
NO_ISSUER = "Invalid token: iss field not provided"
ISSUER_NOT_A_UUID = "Invalid token: service id is not the right data type"

# Tokens already verified, so that a client reusing one (Notify's clients mint one per request, the same
# for every request within a second) skips the parsing and the HMAC. Only tokens whose claims cannot
# expire but by `iat` are kept; an entry is dropped when it is found outside the clock window, and the
# oldest goes first when the cache is full (only a key holder can add entries).
VERIFIED_CACHE_SIZE = 10_000


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


_HEADER_SEGMENT = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def create_token(secret: str, service_id: str, now: float | None = None) -> str:
    """The token Notify's clients send (byte for byte what PyJWT's `jwt.encode` writes)."""
    iat = int(now if now is not None else time.time())
    claims = json.dumps({"iss": service_id, "iat": iat}, separators=(",", ":")).encode()
    signing_input = _HEADER_SEGMENT + b"." + base64.urlsafe_b64encode(claims).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.digest(secret.encode(), signing_input, "sha256")).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def token_from_header(header: str | None) -> str:
    if not header:
        raise AuthError("Unauthorized: authentication token must be provided", 401)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Unauthorized: authentication bearer scheme must be used", 401)
    return token.strip()


def issuer_claim(token: str) -> str:
    """The unverified `iss`. The algorithm is checked later, per key, as Notify does."""
    cached = _verified.get(token)
    if cached is not None:
        return cached.issuer
    claims = _claims(_parse(token).payload)
    if "iss" not in claims:
        raise AuthError(NO_ISSUER)
    iss = claims["iss"]
    if type(iss) is not str:
        raise AuthError(ISSUER_NOT_A_UUID)
    return iss


def issuer(token: str) -> str:
    """The unverified `iss` as a service id (canonical, lowercase): which service's keys to try."""
    try:
        return canonical_uuid(issuer_claim(token), "iss")
    except InputError:
        raise AuthError(ISSUER_NOT_A_UUID) from None


def match_key(token: str, keys: Sequence[KnownKey], now: float | None = None) -> KnownKey:
    """The key whose secret signed `token`, after the clock and revocation checks.

    Notify's order: each key in turn (a signature that does not match moves on to the next; so does a
    token without `iss` or `iat`, as Notify's client raises a decode error for those), then the clock,
    then revocation; the algorithm is refused before any signature is checked."""
    if not keys:
        raise AuthError("Invalid token: service has no API keys")
    current = now if now is not None else time.time()
    cached = _verified.get(token)
    if cached is not None:
        for key in keys:
            if key.secret == cached.secret:
                if not _in_window(cached.iat, current):
                    _verified.pop(token, None)
                return _accepted(key, cached.iat, current)
    parsed = _parse(token)
    if parsed.header.get("alg") != "HS256":  # absent, empty or another algorithm: PyJWT's order
        raise AuthError(WRONG_ALGORITHM)
    for key in keys:
        # PyJWT refuses an empty HMAC key; no stored key has one, so it can match nothing.
        if not key.secret or not hmac.compare_digest(
            parsed.signature, hmac.digest(key.secret.encode(), parsed.signing_input, "sha256")
        ):
            continue
        claims = _claims(parsed.payload)
        iat = _issued_at(claims)
        _check_registered_claims(claims, current)
        if iat is None or "iss" not in claims:
            continue
        iss = claims["iss"]
        if type(iss) is str and "nbf" not in claims and "exp" not in claims and _in_window(iat, current):
            _remember(token, _Verified(key.secret, iss, iat))
        return _accepted(key, iat, current)
    raise AuthError("Invalid token: API key not found")


ADMIN_ISSUER = "herald-admin"


def create_admin_token(admin_secret: str, now: float | None = None) -> str:
    return create_token(admin_secret, ADMIN_ISSUER, now)


def verify_admin_token(token: str, admin_secret: str, now: float | None = None) -> None:
    """Admin calls: the same token shape as API keys, signed with the one admin secret."""
    cached = _verified.get(token)
    if cached is not None:
        iss: Any = cached.issuer
    else:
        claims = _claims(_parse(token).payload)
        if "iss" not in claims:
            raise AuthError(NO_ISSUER)
        iss = claims["iss"]
    if iss != ADMIN_ISSUER:
        raise AuthError("Invalid token: not an admin token")
    match_key(token, [KnownKey("admin", "admin", admin_secret, None)], now)


# --- reading a token ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    header: dict[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class _Verified:
    secret: str
    issuer: str
    iat: int


_verified: OrderedDict[str, _Verified] = OrderedDict()
_verified_lock = threading.Lock()

# A segment whose length is 2 or 3 modulo 4 ends in a character with 4 or 2 unused bits. PyJWT refuses
# the token unless they are zero (the one canonical spelling of those bytes): these characters are those.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _parse(token: str) -> _Token:
    """PyJWT's structural checks (segments, base64url, header object, `kid`, `crit`, `b64`)."""
    if not token.isascii():  # a non-ASCII character is never in the base64url alphabet
        raise AuthError(UNDECODABLE)
    header_segment, dot, rest = token.partition(".")
    payload_segment, dot2, signature_segment = rest.partition(".")
    if not dot or not dot2:
        raise AuthError(UNDECODABLE)  # PyJWT: "Not enough segments"; a third dot fails the alphabet below
    header = _header(header_segment)
    payload = _segment(payload_segment)
    signature = _segment(signature_segment)
    return _Token(header, f"{header_segment}.{payload_segment}".encode(), payload, signature)


def _segment(text: str) -> bytes:
    """PyJWT's base64url: up to two `=` of padding if the length is then a multiple of 4, nothing outside
    the alphabet, no impossible length, and the canonical last character."""
    stripped = text.rstrip("=")
    padding = len(text) - len(stripped)
    remainder = len(stripped) % 4
    if (
        padding > 2
        or (padding and len(text) % 4)
        or remainder == 1
        or (remainder and stripped[-1] not in _CANONICAL_LAST[remainder])
        or "+" in stripped  # "+" and "/" are standard base64, which the strict decoder below would take
        or "/" in stripped
    ):
        raise AuthError(UNDECODABLE)
    standard = stripped.replace("-", "+").replace("_", "/") + "=" * (-remainder % 4)
    try:
        return binascii.a2b_base64(standard, strict_mode=True)  # refuses any other character
    except binascii.Error:
        raise AuthError(UNDECODABLE) from None


@functools.lru_cache(maxsize=64)
def _header(segment: str) -> dict[str, Any]:
    """Kept per segment: nearly every client sends one of two headers."""
    header = _json(_segment(segment))
    if type(header) is not dict or not _header_is_supported(header):
        raise AuthError(UNDECODABLE)
    return header


def _header_is_supported(header: dict[str, Any]) -> bool:
    """PyJWT refuses a non-string `kid`, a `crit` naming anything but a present `b64`, and `b64: false`
    (a detached payload, which a Notify token never has)."""
    if "kid" in header and type(header["kid"]) is not str:
        return False
    if header.get("b64", True) is False:
        return False
    if "crit" in header:
        crit = header["crit"]
        if type(crit) is not list or not crit or any(ext != "b64" for ext in crit) or "b64" not in header:
            return False
    return True


def _json(data: bytes) -> Any:
    """What Python's json.loads (PyJWT's parser) reads, fast: orjson reads strict JSON the same way, and
    what it refuses (NaN, 1e400, a lone surrogate escape, UTF-16) is left to json itself."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise AuthError(UNDECODABLE) from None


def _claims(payload: bytes) -> dict[str, Any]:
    claims = _json(payload)
    if type(claims) is not dict:
        raise AuthError(UNDECODABLE)
    return claims


def _issued_at(claims: dict[str, Any]) -> int | None:
    """`iat` as Notify reads it, `int(claims["iat"])`: NaN, infinities, a string that is not a number,
    a list or an object are the clock error."""
    if "iat" not in claims:
        return None
    try:
        return int(claims["iat"])
    except (ValueError, TypeError, OverflowError):
        raise AuthError(CLOCK) from None


def _check_registered_claims(claims: dict[str, Any], current: float) -> None:
    """The other claims PyJWT checks when present (with Notify's 30 s leeway): a Notify token has none."""
    if "nbf" in claims and _timestamp(claims["nbf"]) > current + CLOCK_SKEW_SECONDS:
        raise AuthError(UNDECODABLE)
    if "exp" in claims and _timestamp(claims["exp"]) <= current - CLOCK_SKEW_SECONDS:
        raise AuthError(UNDECODABLE)
    if claims.get("aud"):  # no audience is expected, so any audience is refused
        raise AuthError(UNDECODABLE)
    if "sub" in claims and type(claims["sub"]) is not str:
        raise AuthError(UNDECODABLE)
    if "jti" in claims and type(claims["jti"]) is not str:
        raise AuthError(UNDECODABLE)


def _timestamp(value: Any) -> int:
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        raise AuthError(UNDECODABLE) from None


def _in_window(iat: int, current: float) -> bool:
    # Whole epoch seconds, as Notify compares: a token exactly 30 s old is still good.
    return abs(int(current) - iat) <= CLOCK_SKEW_SECONDS


def _accepted(key: KnownKey, iat: int, current: float) -> KnownKey:
    if not _in_window(iat, current):
        raise AuthError(CLOCK)
    if key.revoked_at is not None:
        raise AuthError("Invalid token: API key revoked")
    return key


def _remember(token: str, verified: _Verified) -> None:
    with _verified_lock:
        _verified[token] = verified
        if len(_verified) > VERIFIED_CACHE_SIZE:
            _verified.popitem(last=False)
