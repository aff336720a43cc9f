"""Notify's error bodies, and the gRPC statuses of Herald's services turned into them.

`{"status_code": N, "errors": [{"error": "<Notify's class name>", "message": "..."}]}`, as Notify's v2 API
answers (app/v2/errors.py). The gateway holds no rules: every message it shows came from ingest, except
those about the HTTP request itself (its JSON, its shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from herald.grpcsrv.errors import field_violations

VALIDATION = "ValidationError"
BAD_REQUEST = "BadRequestError"
AUTH = "AuthError"


class NotifyError(Exception):
    """An answer in Notify's error format; raised anywhere in a route, rendered by the app."""

    def __init__(self, status_code: int, errors: Sequence[tuple[str, str]]) -> None:
        super().__init__(errors[0][1])
        self.status_code = status_code
        self.errors = list(errors)

    @classmethod
    def one(cls, status_code: int, error: str, message: str) -> NotifyError:
        return cls(status_code, [(error, message)])

    def body(self) -> dict[str, Any]:
        return {
            "status_code": self.status_code,
            "errors": [{"error": error, "message": message} for error, message in self.errors],
        }


def invalid_json() -> NotifyError:
    return NotifyError.one(400, BAD_REQUEST, "Invalid JSON supplied in POST data")


# Business rules whose messages begin with a field's name all the same ("sms_sender_id <id> does not
# exist in database for service id <id>": a BadRequestError in Notify).
_NAMED_RULE = " does not exist in database for service id "


def _invalid_argument(exc: grpc.RpcError) -> NotifyError:
    """Notify tells schema errors ("phone_number Not enough digits", "template_id is not a valid UUID",
    each starting with the field's name) from business rules ("Template not found", "Missing
    personalisation: a"); the BadRequest's field violations say which is which."""
    violations = field_violations(exc)
    if not violations:
        return NotifyError.one(400, BAD_REQUEST, exc.details() or "Bad request")
    return NotifyError(
        400,
        [
            (
                VALIDATION if description.startswith(f"{field} ") and _NAMED_RULE not in description else BAD_REQUEST,
                description,
            )
            for field, description in violations
        ],
    )


def from_rpc_error(exc: grpc.RpcError) -> NotifyError:
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return _invalid_argument(exc)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return NotifyError.one(401, AUTH, details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return NotifyError.one(403, AUTH, details)
    if code == grpc.StatusCode.NOT_FOUND:
        return NotifyError.one(404, "NoResultFound", details or "No result found")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if details.startswith("Exceeded rate limit"):
            return NotifyError.one(429, "RateLimitError", details)
        if details.startswith("Exceeded send limits"):
            return NotifyError.one(429, "TooManyRequestsError", details)
        # grpcio's own: the request is larger than ingest takes in one message.
        return NotifyError.one(400, BAD_REQUEST, "Request too large")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        # Ingest's answer when the broker may hold the message says how to send it once; any other text
        # may be the channel's own (addresses, socket errors) and is not shown.
        message = details if "idempotency-key" in details else "Service temporarily unavailable, try again"
        return NotifyError.one(503, "ServiceUnavailable", message)
    return NotifyError.one(500, "InternalServerError", "Internal server error")
