"""Pure tests of herald.domain.apikeys against notify-v2.md section 2 (key layout, JWT, checks in order)."""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any, cast

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- bad input is one of Notify's auth errors, never another exception ---------------------------

WRONG_ALGORITHM = "Invalid token: algorithm used is not HS256"
NOT_FOUND = "Invalid token: API key not found"
DATA_TYPE = "Invalid token: service id is not the right data type"
STANDARD_HEADER = b'{"alg":"HS256","typ":"JWT"}'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(payload: bytes, header: bytes = STANDARD_HEADER, secret: str = SECRET) -> str:
    """Signed as written: JSON that no encoder would produce (NaN, 1e400, a bare array) included."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    return f"{signing_input}.{_b64(hmac.digest(secret.encode(), signing_input.encode(), 'sha256'))}"


def _claims(iat: str = str(NOW), iss: str = json.dumps(SERVICE_ID), extra: str = "") -> bytes:
    return f'{{"iss":{iss},"iat":{iat}{extra}}}'.encode()


@pytest.fixture(autouse=True)
def _empty_verified_cache() -> None:
    apikeys._verified.clear()


@pytest.mark.parametrize(
    ("iat", "message"),
    [
        ("NaN", CLOCK),
        ("Infinity", CLOCK),
        ("-Infinity", CLOCK),
        ("1e400", CLOCK),  # read as infinity
        ("-1e400", CLOCK),
        ("1e30", CLOCK),
        ("1000000000000000000000000000000", CLOCK),
        ("-1", CLOCK),
        ("0", CLOCK),
        ('"yesterday"', CLOCK),
        ('""', CLOCK),
        ('"1e9"', CLOCK),
        ('"' + "9" * 5000 + '"', CLOCK),  # more digits than int() will read
        ("true", CLOCK),
        ("false", CLOCK),
        ("null", CLOCK),
        ("[]", CLOCK),
        (f"[{NOW}]", CLOCK),
        ("{}", CLOCK),
        (f'{{"iat":{NOW}}}', CLOCK),
    ],
)
def test_iat_of_the_wrong_type_or_out_of_range_is_the_clock_error(iat: str, message: str) -> None:
    token = _raw_token(_claims(iat=iat))
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, message)


@pytest.mark.parametrize("iat", [f'"{NOW}"', f'" {NOW} "', f"{NOW}.9", f"{NOW - 30}.999"])
def test_iat_is_read_as_notify_reads_it(iat: str) -> None:
    """Notify's `int(claims["iat"])`: a numeric string counts, a fraction is cut off."""
    token = _raw_token(_claims(iat=iat))
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"


def test_missing_iat_is_key_not_found_as_in_notify() -> None:
    """Notify's client raises TokenIssuedAtError, a TokenDecodeError: the server moves on to the next key."""
    token = _raw_token(f'{{"iss":"{SERVICE_ID}"}}'.encode())
    assert apikeys.issuer(token) == SERVICE_ID
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, NOT_FOUND)


def test_missing_iss_is_key_not_found_in_match_key() -> None:
    token = _raw_token(f'{{"iat":{NOW}}}'.encode())
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, NOT_FOUND)


def test_a_bad_iat_is_reported_before_other_bad_claims() -> None:
    """PyJWT (as Notify calls it) checks iat before nbf, exp and aud."""
    token = _raw_token(_claims(iat="NaN", extra=',"aud":"x","exp":"soon"'))
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, CLOCK)


@pytest.mark.parametrize(
    "iss",
    ["123", "1.5", "true", "null", "[]", f'["{SERVICE_ID}"]', "{}", f'{{"id":"{SERVICE_ID}"}}', '""', '"not-a-uuid"']
    + [
        json.dumps(spelling)
        for spelling in (
            f"urn:uuid:{SERVICE_ID}",
            f"{{{SERVICE_ID}}}",
            SERVICE_ID.replace("-", ""),
            "-" + SERVICE_ID,
            SERVICE_ID + "\n",
            SERVICE_ID[:-1] + "\x00",
        )
    ],
)
def test_iss_that_is_not_a_canonical_uuid_string(iss: str) -> None:
    token = _raw_token(_claims(iss=iss))
    assert _auth_error(apikeys.issuer, token) == (403, DATA_TYPE)


def test_iss_in_capitals_is_the_same_service() -> None:
    """PostgreSQL reads either case; the service id is looked up (and cached) in lowercase."""
    token = _raw_token(_claims(iss=json.dumps(SERVICE_ID.upper())))
    assert apikeys.issuer(token) == SERVICE_ID


def test_issuer_claim_refuses_a_non_string() -> None:
    assert _auth_error(apikeys.issuer_claim, _raw_token(_claims(iss="123"))) == (403, DATA_TYPE)


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"none","typ":"JWT"}',
        b'{"alg":"RS256","typ":"JWT"}',
        b'{"alg":"HS512","typ":"JWT"}',
        b'{"alg":"hs256","typ":"JWT"}',
        b'{"alg":"HS256 ","typ":"JWT"}',
        b'{"alg":"","typ":"JWT"}',
        b'{"alg":null,"typ":"JWT"}',
        b'{"alg":["HS256"],"typ":"JWT"}',
        b'{"alg":256}',
        b'{"typ":"JWT"}',
        b"{}",
    ],
)
def test_any_algorithm_but_hs256_is_the_algorithm_error(header: bytes) -> None:
    token = _raw_token(_claims(), header=header)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, WRONG_ALGORITHM)


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"HS256"}',
        b'{"typ":"JWT","alg":"HS256"}',
        b'{"alg":"HS256","typ":"JWS"}',
        b'{"alg":"HS256","typ":1}',
        b'{"alg":"HS256","typ":null,"kid":"key-1","x":[1,{"y":NaN}]}',
        b'{"alg":"HS256","crit":["b64"],"b64":true}',
    ],
)
def test_typ_and_unknown_header_fields_are_ignored_as_pyjwt_does(header: bytes) -> None:
    token = _raw_token(_claims(), header=header)
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg":"HS256","kid":1}',
        b'{"alg":"HS256","crit":[]}',
        b'{"alg":"HS256","crit":"b64","b64":true}',
        b'{"alg":"HS256","crit":["exp"],"exp":1}',
        b'{"alg":"HS256","crit":["b64"]}',
        b'{"alg":"HS256","b64":false,"crit":["b64"]}',
        b'{"alg":"HS256","b64":false}',
        b'["alg","HS256"]',
        b'"HS256"',
        b"null",
        b"{",
        b"",
        b"\xff\xfe",
    ],
)
def test_headers_pyjwt_cannot_read_are_undecodable(header: bytes) -> None:
    token = _raw_token(_claims(), header=header)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, UNDECODABLE)
    assert _auth_error(apikeys.issuer, token) == (403, UNDECODABLE)


def _good_token() -> str:
    return apikeys.create_token(SECRET, SERVICE_ID, NOW)


def _segments() -> list[str]:
    return _good_token().split(".")


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "...",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        _good_token() + ".",
        "." + _good_token(),
        _good_token().replace(".", ".."),
        _good_token() + "===",  # three padding characters
        _good_token() + "==",  # padding that does not make a multiple of 4
        _segments()[0] + "=." + ".".join(_segments()[1:]),
        ".".join(_segments()[:2]) + "." + _segments()[2][:-2],  # a length no base64 has (1 mod 4)
        _segments()[0].replace("J", "+", 1) + "." + ".".join(_segments()[1:]),  # standard, not url-safe
        _segments()[0].replace("J", "/", 1) + "." + ".".join(_segments()[1:]),
        _segments()[0][:-1] + "!." + ".".join(_segments()[1:]),
        _segments()[0][:5] + " " + _segments()[0][5:] + "." + ".".join(_segments()[1:]),
        _segments()[0] + "é." + ".".join(_segments()[1:]),
        _segments()[0] + "\ud800." + ".".join(_segments()[1:]),
        ".".join(_segments()[:2]) + "." + _segments()[2][:-1] + "B",  # non-canonical last character
        "Bearer " + _good_token(),
    ],
)
def test_malformed_tokens_are_undecodable(token: str) -> None:
    assert _auth_error(apikeys.issuer, token) == (403, UNDECODABLE)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, UNDECODABLE)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[]", b'"iss"', b"null", b"1", b"{", b"[" * 100_000, b'{"iss":"a"}x', b"\xff\xfe"],
)
def test_signed_payload_that_is_not_a_json_object_is_undecodable(payload: bytes) -> None:
    token = _raw_token(payload)
    assert _auth_error(apikeys.issuer, token) == (403, UNDECODABLE)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, UNDECODABLE)


def test_unsigned_bad_payload_is_key_not_found() -> None:
    """PyJWT reads the payload only after the signature: another key's token says nothing more."""
    token = _raw_token(b"not json", secret=str(uuid.uuid4()))
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, NOT_FOUND)


@pytest.mark.parametrize(
    "extra",
    [
        f',"exp":{NOW - 31}',
        ',"exp":"tomorrow"',
        ',"exp":NaN',
        ',"exp":null',
        f',"nbf":{NOW + 31}',
        ',"nbf":[]',
        ',"aud":"notify"',
        ',"aud":["x"]',
        ',"sub":1',
        ',"jti":{}',
    ],
)
def test_other_registered_claims_are_checked_as_pyjwt_does(extra: str) -> None:
    token = _raw_token(_claims(extra=extra))
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW) == (403, UNDECODABLE)


@pytest.mark.parametrize(
    "extra",
    [f',"exp":{NOW - 29}', f',"nbf":{NOW + 30}', ',"aud":""', ',"aud":[]', ',"sub":"me"', ',"jti":"1"', ',"x":NaN'],
)
def test_registered_claims_within_notifys_leeway_are_accepted(extra: str) -> None:
    token = _raw_token(_claims(extra=extra))
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"


def test_padded_segments_are_accepted_as_pyjwt_accepts_them() -> None:
    header, payload, signature = _good_token().split(".")
    padded = ".".join(segment + "=" * (-len(segment) % 4) for segment in (header, payload, signature))
    assert padded != _good_token()
    assert apikeys.issuer(padded) == SERVICE_ID
    assert apikeys.match_key(padded, [_key()], now=NOW).id == "k1"


def test_create_token_is_byte_for_byte_pyjwts() -> None:
    for service_id in (SERVICE_ID, "herald-admin", "ünïcode"):
        expected = jwt.encode({"iss": service_id, "iat": NOW}, SECRET, algorithm="HS256", headers={"typ": "JWT"})
        assert apikeys.create_token(SECRET, service_id, NOW) == expected


def test_admin_token_with_a_non_string_iss_is_not_an_admin_token() -> None:
    token = _raw_token(_claims(iss="123"))
    assert _auth_error(apikeys.verify_admin_token, token, SECRET, now=NOW) == (403, "Invalid token: not an admin token")


def test_admin_token_round_trip() -> None:
    token = apikeys.create_admin_token(SECRET, NOW)
    apikeys.verify_admin_token(token, SECRET, now=NOW)
    apikeys.verify_admin_token(token, SECRET, now=NOW)  # from the cache
    assert _auth_error(apikeys.verify_admin_token, token, "another secret", now=NOW) == (403, NOT_FOUND)
    assert _auth_error(apikeys.verify_admin_token, _good_token(), SECRET, now=NOW) == (
        403,
        "Invalid token: not an admin token",
    )


# --- the cache of verified tokens -----------------------------------------------------------------


def test_a_reused_token_skips_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _good_token()
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"

    def no_hmac(*args: object) -> bytes:
        raise AssertionError("the signature was checked again")

    monkeypatch.setattr(hmac, "digest", no_hmac)
    assert apikeys.match_key(token, [_key()], now=NOW + 30).id == "k1"
    assert apikeys.issuer(token) == SERVICE_ID


def test_a_cached_token_still_meets_the_clock_and_revocation() -> None:
    token = _good_token()
    other = str(uuid.uuid4())
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"
    assert _auth_error(apikeys.match_key, token, [_key(revoked=True)], now=NOW) == (
        403,
        "Invalid token: API key revoked",
    )
    # The cached secret is looked up among the keys given now, first match first, as a full check would.
    keys = [_key(other, key_id="k0"), _key(key_id="k2"), _key(key_id="k3")]
    assert apikeys.match_key(token, keys, now=NOW).id == "k2"
    assert _auth_error(apikeys.match_key, token, [_key(other)], now=NOW) == (403, NOT_FOUND)
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW + 31) == (403, CLOCK)
    assert token not in apikeys._verified  # dropped once outside the window


def test_tokens_that_can_expire_otherwise_are_not_cached() -> None:
    token = _raw_token(_claims(extra=f',"exp":{NOW + 10}'))
    assert apikeys.match_key(token, [_key()], now=NOW).id == "k1"
    assert token not in apikeys._verified
    assert _auth_error(apikeys.match_key, token, [_key()], now=NOW + 41) == (403, UNDECODABLE)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apikeys, "VERIFIED_CACHE_SIZE", 3)
    tokens = [apikeys.create_token(SECRET, SERVICE_ID, NOW - age) for age in range(5)]
    for token in tokens:
        apikeys.match_key(token, [_key()], now=NOW)
    assert list(apikeys._verified) == tokens[2:]


# --- never anything but AuthError, and read exactly as PyJWT reads ---------------------------------

_TOKEN_CHARACTERS = st.sampled_from("AQgwBJ09-_=.+/ é\x00") | st.characters(exclude_categories=())


@st.composite
def _mutated_tokens(draw: st.DrawFn) -> str:
    header = draw(
        st.sampled_from(
            [
                STANDARD_HEADER,
                b'{"alg":"HS512"}',
                b'{"alg":"none"}',
                b'{"alg":"HS256","kid":1}',
                b'{"alg":"HS256","crit":["b64"],"b64":true}',
                b'{"alg":"HS256","b64":false,"crit":["b64"]}',
                b"[]",
            ]
        )
    )
    iat = draw(st.sampled_from([str(NOW), "NaN", "1e400", '"x"', "[]", str(NOW - 31)]))
    token = _raw_token(_claims(iat=iat), header=header)
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(token)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if action == "truncate":
            token = token[:position]
        elif action == "delete":
            token = token[:position] + token[position + 1 :]
        else:
            char = draw(_TOKEN_CHARACTERS)
            token = token[:position] + char + token[position + (action == "replace") :]
    return token


def _pyjwt_verdict(token: str) -> str:
    """What Herald answered when it called PyJWT, for the parts PyJWT decides (structure, alg, signature)."""
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False})
    except jwt.InvalidSignatureError:
        return NOT_FOUND
    except jwt.InvalidAlgorithmError:
        return WRONG_ALGORITHM
    except jwt.PyJWTError:
        return UNDECODABLE
    except UnicodeEncodeError:  # a lone surrogate: PyJWT raised it, an INTERNAL before this change
        return UNDECODABLE
    try:
        iat = int(claims["iat"])
    except (ValueError, TypeError, OverflowError):
        return CLOCK
    return "k1" if abs(NOW - iat) <= 30 else CLOCK


def _verdict(token: str) -> str:
    try:
        return apikeys.match_key(token, [_key()], now=NOW).id
    except AuthError as err:
        return err.message


@settings(max_examples=400, deadline=None)
@given(_mutated_tokens())
def test_match_key_reads_tokens_as_pyjwt_does(token: str) -> None:
    apikeys._verified.clear()
    assert _verdict(token) == _pyjwt_verdict(token)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_TOKEN_CHARACTERS, max_size=200) | _mutated_tokens())
def test_nothing_but_auth_error_escapes(token: str) -> None:
    for call in (apikeys.issuer, apikeys.issuer_claim):
        with contextlib.suppress(AuthError):
            call(token)
    _verdict(token)
    with contextlib.suppress(AuthError):
        apikeys.verify_admin_token(token, SECRET, now=NOW)
