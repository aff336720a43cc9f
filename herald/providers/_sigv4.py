"""AWS Signature Version 4, checked the way AWS checks it: the simulator's side of SES's authentication.

The signature is recomputed from the request as received (method, path, the headers the client signed,
a SHA-256 of the body) with the secret key of the access key it names. Only requests without a query
string are checked (SESv2's SendEmail has none), and not their age: the simulator has no clock skew to
guard against.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"


class SignatureError(Exception):
    """The request is not signed by the configured key; ``code`` is the error type AWS answers with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def verify(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    access_key_id: str,
    secret_access_key: str,
) -> None:
    """Raise ``SignatureError`` unless the request carries a valid SigV4 signature by ``access_key_id``.

    ``headers`` are keyed by lower-case name.
    """
    authorization = headers.get("authorization")
    if not authorization:
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("IncompleteSignatureException", f"Unsupported authorization type: {algorithm}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts[key] = value
    credential, signed_headers, signature = (parts.get(k, "") for k in ("Credential", "SignedHeaders", "Signature"))
    scope_parts = credential.split("/")
    if len(scope_parts) != 5 or not signed_headers or not signature:
        raise SignatureError("IncompleteSignatureException", "Authorization header is incomplete")
    key_id, date, region, scope_service, terminator = scope_parts
    if key_id != access_key_id:
        raise SignatureError("UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    if scope_service != service or terminator != "aws4_request" or not amz_date.startswith(date):
        raise SignatureError("IncompleteSignatureException", "Credential scope does not match the request")
    names = signed_headers.split(";")
    if "host" not in names or any(name not in headers for name in names):
        raise SignatureError("IncompleteSignatureException", "SignedHeaders must include host and be present")

    canonical_request = "\n".join(
        [
            method,
            quote(path, safe="/~"),
            "",  # the canonical query string
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
            signed_headers,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = "/".join(scope_parts[1:])
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    signing_key = f"AWS4{secret_access_key}".encode()
    for step in (date, region, scope_service, terminator):
        signing_key = hmac.new(signing_key, step.encode(), hashlib.sha256).digest()
    expected = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
