"""Pure tests of herald.domain.apikeys against notify-v2.md section 2 (key layout, JWT, checks in order)."""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any, cast

import jwt
import pytest

from herald.domain import apikeys
from herald.domain.apikeys import AuthError, KnownKey

DOCS = "https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header"
UNDECODABLE = f"Invalid token: make sure your API token matches the example at {DOCS}"
CLOCK = "Error: Your system clock must be accurate to within 30 seconds"
NOW = 1_800_000_000

SERVICE_ID = "6a9b3b1c-6a4e-4bd3-9e7b-0c2b7a3f1d11"
SECRET = "0f4d2c8e-2b6d-4f1a-9a3c-5e7b9d1f3a55"


def _key(secret: str = SECRET, *, revoked: bool = False, key_id: str = "k1") -> KnownKey:
    return KnownKey(key_id, "normal", secret, datetime(2026, 1, 1, tzinfo=UTC) if revoked else None)


def _token(claims: dict[str, Any], secret: str | None = SECRET, alg: str = "HS256") -> str:
    """Signed as given: PyJWS, unlike jwt.encode, lets a test put any value in any claim."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)  # HS512 with a 36-byte secret
        return jwt.api_jws.encode(json.dumps(claims).encode(), cast(str, secret), algorithm=alg)


def _auth_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(AuthError) as err:
        call(*args, **kwargs)
    assert str(err.value) == err.value.message
    return err.value.code, err.value.message


# --- key strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["live", "my-key-with-dashes", "key_name 2", ""])
def test_split_key_slices_as_notifys_client_does(name: str) -> None:
    api_key = f"{name}-{SERVICE_ID}-{SECRET}"
    parts = apikeys.split_key(api_key)
    assert parts.service_id == api_key[-73:-37] == SERVICE_ID
    assert parts.secret == api_key[-36:] == SECRET


def test_format_key_round_trips_through_split_key() -> None:
    secret = apikeys.new_secret()
    assert len(secret) == 36
    assert str(uuid.UUID(secret)) == secret
    api_key = apikeys.format_key("my key", SERVICE_ID, secret)
    assert api_key == f"my key-{SERVICE_ID}-{secret}"
    assert apikeys.split_key(api_key) == apikeys.ApiKeyParts(SERVICE_ID, secret)


def test_new_secrets_differ() -> None:
    assert apikeys.new_secret() != apikeys.new_secret()


# --- tokens ---------------------------------------------------------------------------------------


def test_token_is_notifys_hs256_jwt() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW + 0.9)
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "HS256"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False})
    assert claims == {"iss": SERVICE_ID, "iat": NOW}  # whole epoch seconds, no exp or jti


def test_token_round_trip() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW)
    assert apikeys.issuer(apikeys.token_from_header(f"Bearer {token}")) == SERVICE_ID
    key = _key()
    assert apikeys.match_key(token, [key], now=NOW) is key


def test_token_defaults_to_now() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID)
    assert apikeys.match_key(token, [_key()]).id == "k1"


# --- the Authorization header (401) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Unauthorized: authentication token must be provided"),
        ("", "Unauthorized: authentication token must be provided"),
        ("Basic abc", "Unauthorized: authentication bearer scheme must be used"),
        ("Token abc", "Unauthorized: authentication bearer scheme must be used"),
        ("Bearer", "Unauthorized: authentication bearer scheme must be used"),
        ("Bearerabc", "Unauthorized: authentication bearer scheme must be used"),
    ],
)
def test_header_errors_are_401(header: str | None, message: str) -> None:
    assert _auth_error(apikeys.token_from_header, header) == (401, message)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_any_case(scheme: str) -> None:
    """Notify compares `header[:7].title()` with "Bearer "."""
    assert apikeys.token_from_header(f"{scheme} abc.def.ghi") == "abc.def.ghi"


# --- the issuer (403) -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "", "Bearer"])
def test_undecodable_token(token: str) -> None:
    assert _auth_error(apikeys.issuer, token) == (403, UNDECODABLE)


def test_no_iss() -> None:
    token = _token({"iat": NOW})
    assert _auth_error(apikeys.issuer, token) == (403, "Invalid token: iss field not provided")


@pytest.mark.parametrize("iss", ["not-a-uuid", "123", 123, SERVICE_ID + "0"])
def test_iss_not_a_uuid(iss: Any) -> None:
    token = _token({"iss": iss, "iat": NOW})
    assert _auth_error(apikeys.issuer, token) == (403, "Invalid token: service id is not the right data type")


def test_issuer_does_not_check_the_signature() -> None:
    """It only says which service's keys to try."""
    token = _token({"iss": SERVICE_ID, "iat": NOW}, secret="someone else's secret, long enough for hs256")
    assert apikeys.issuer(token) == SERVICE_ID


@pytest.mark.parametrize("iss", ["", None])
def test_empty_iss_is_not_the_right_data_type(iss: Any) -> None:
    token = _token({"iss": iss, "iat": NOW})
    assert _auth_error(apikeys.issuer, token) == (403, "Invalid token: service id is not the right data type")


# --- algorithm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["HS512", "HS384", "none"])
def test_other_algorithms_are_rejected(alg: str) -> None:
    """The whole check as the Authenticator runs it: issuer, then the service's keys."""
    token = _token({"iss": SERVICE_ID, "iat": NOW}, secret=None if alg == "none" else SECRET, alg=alg)

    def check() -> KnownKey:
        apikeys.issuer(token)
        return apikeys.match_key(token, [_key()], now=NOW)

    assert _auth_error(check) == (403, "Invalid token: algorithm used is not HS256")


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iat": NOW}, "Invalid token: iss field not provided"),
        ({"iss": "not-a-uuid", "iat": NOW}, "Invalid token: service id is not the right data type"),
    ],
)
def test_algorithm_is_checked_after_the_issuer(claims: dict[str, Any], message: str) -> None:
    token = _token(claims, alg="HS512")
    assert _auth_error(apikeys.issuer, token) == (403, message)


@pytest.mark.parametrize("alg", ["HS512", "none"])
def test_match_key_names_the_wrong_algorithm(alg: str) -> None:
    token = _token({"iss": SERVICE_ID, "iat": NOW}, secret=None if alg == "none" else SECRET, alg=alg)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (
        403,
        "Invalid token: algorithm used is not HS256",
    )


# --- the service's keys (403) ---------------------------------------------------------------------


def test_service_has_no_api_keys() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW)
    expected = (403, "Invalid token: service has no API keys")
    assert _auth_error(apikeys.match_key, token, [], now=NOW) == expected


@pytest.mark.parametrize("skew", [-30, -29, 0, 29, 30])
def test_iat_within_30_seconds_either_side_is_accepted(skew: int) -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW + skew)
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"


@pytest.mark.parametrize("skew", [-31, 31, -3600, 3600])
def test_iat_31_seconds_either_side_is_rejected(skew: int) -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW + skew)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, CLOCK)


def test_iat_exactly_30_seconds_old_is_accepted_all_through_the_second() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW - 30)
    assert apikeys.match_key(token, [_key()], now=NOW + 0.5).id == "k1"


def test_iat_that_is_not_a_number_is_a_clock_error() -> None:
    token = _token({"iss": SERVICE_ID, "iat": "yesterday"})
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, CLOCK)


def test_revoked_key() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW)
    assert _auth_error(apikeys.match_key, token, [_key(revoked=True)], now=NOW) == (
        403,
        "Invalid token: API key revoked",
    )


def test_clock_is_checked_before_revocation() -> None:
    token = apikeys.create_token(SECRET, SERVICE_ID, NOW - 60)
    assert _auth_error(apikeys.match_key, token, [_key(revoked=True)], now=NOW) == (403, CLOCK)


def test_wrong_secret_is_key_not_found() -> None:
    token = apikeys.create_token(str(uuid.uuid4()), SERVICE_ID, NOW)
    keys = [_key(), _key(str(uuid.uuid4()), key_id="k2")]
    assert _auth_error(apikeys.match_key, token, keys, now=NOW) == (403, "Invalid token: API key not found")


def test_wrong_secret_with_bad_clock_is_still_key_not_found() -> None:
    """The signature is checked first: a token no key signed says nothing about the clock."""
    token = apikeys.create_token(str(uuid.uuid4()), SERVICE_ID, NOW - 3600)
    expected = (403, "Invalid token: API key not found")
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == expected


def test_second_key_matches() -> None:
    other = str(uuid.uuid4())
    keys = [_key(key_id="first"), _key(other, key_id="second")]
    token = apikeys.create_token(other, SERVICE_ID, NOW)
    assert apikeys.match_key(token, keys, now=NOW).id == "second"


def test_revoked_key_that_did_not_sign_is_skipped() -> None:
    other = str(uuid.uuid4())
    keys = [_key(key_id="old", revoked=True), _key(other, key_id="new")]
    token = apikeys.create_token(other, SERVICE_ID, NOW)
    assert apikeys.match_key(token, keys, now=NOW).id == "new"


def test_second_key_matches_but_is_revoked() -> None:
    other = str(uuid.uuid4())
    keys = [_key(key_id="live"), _key(other, key_id="old", revoked=True)]
    token = apikeys.create_token(other, SERVICE_ID, NOW)
    assert _auth_error(apikeys.match_key, token, keys, now=NOW) == (403, "Invalid token: API key revoked")


def test_auth_error_defaults_to_403() -> None:
    error = AuthError("Invalid token: service not found")
    assert (error.code, error.message, str(error)) == (403, "Invalid token: service not found", error.message)
