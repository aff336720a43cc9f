"""The provider simulator's side of each provider's send API: reading requests, wording answers.

MMG's JSON, Firetext's form and SESv2's SendEmail (SigV4-checked) are parsed into a ``Send``; what to
answer is an ``Answer``, refusals worded as each provider words them (SES's with ``x-amzn-ErrorType``,
which botocore reads).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

from herald.providers._base import NOTIFICATION_ID_HEADER, NOTIFICATION_ID_TAG
from herald.providers._sigv4 import SignatureError, verify

Outcome = Literal["delivered", "temporary", "permanent", "error"]

SES_SEND_EMAIL_PATH = "/v2/email/outbound-emails"
MAX_BODY_BYTES = 1 << 20
# SES takes messages up to 40 MB. botocore sends JSON with every non-ASCII character escaped
# (\uXXXX, up to three times its UTF-8 size), so the request itself may be larger.
SES_MAX_MESSAGE_BYTES = 40 * 1024 * 1024
SES_MAX_BODY_BYTES = 3 * SES_MAX_MESSAGE_BYTES + MAX_BODY_BYTES
# How SES words an HTTP status in x-amzn-ErrorType, for failures the simulator injects.
SES_ERROR_CODES = {
    400: "BadRequestException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


def sms_outcome(number: str) -> Outcome:
    number = number.strip()
    if number.endswith("7700900500"):
        return "error"
    if number.endswith(("7700900003", "3333333")):
        return "temporary"
    if number.endswith(("7700900002", "2222222")):
        return "permanent"
    return "delivered"


def email_outcome(address: str) -> Outcome:
    address = address.strip().lower()
    if address.startswith("provider-error"):
        return "error"
    if address.startswith("temp-fail"):
        return "temporary"
    if address.startswith("perm-fail"):
        return "permanent"
    return "delivered"


class BadRequest(Exception):
    def __init__(self, message: str, *, status: int = 400, ses_code: str = "BadRequestException") -> None:
        super().__init__(message)
        self.status = status
        self.ses_code = ses_code


@dataclass(frozen=True, slots=True)
class Send:
    provider: str
    reference: str
    outcome: Outcome
    answer: dict[str, Any]
    to: str = ""  # the recipient, as the provider's receipt names it
    # An email's reply-to addresses and its headers beyond Herald's notification id, when it has any.
    details: Mapping[str, Any] = field(default_factory=dict)
    # An email's plain-text and HTML parts.
    parts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the handler writes back: ``payload`` as JSON, or ``raw`` as it is (with its Content-Type in
    ``headers``); ``drop`` closes the connection without writing anything."""

    status: int
    payload: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    raw: bytes | None = None


DROP = Answer(0, drop=True)


def refusal(provider: str, status: int, code: str, message: str, *, ses_code: str = "InternalFailure") -> Answer:
    if provider == "ses":
        # botocore reads the error code from this header (AWS's rest-json protocol).
        return Answer(status, {"message": message}, (("x-amzn-ErrorType", f"{ses_code}:"),))
    return Answer(status, error(code, message))


def injected(provider: str, status: int) -> Answer:
    ses_code = SES_ERROR_CODES.get(status, "InjectedFailure")
    return refusal(provider, status, "injected_failure", f"injected HTTP {status}", ses_code=ses_code)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise BadRequest("body must be a JSON object")
    return parsed


def _text(container: dict[str, Any], key: str, where: str = "") -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"missing or empty field: {where}{key}")
    return value


def _object(container: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise BadRequest(f"missing or non-object field: {where}{key}")
    return value


def parse_mmg(body: bytes, headers: Mapping[str, str]) -> Send:
    data = json_object(body)
    to = _text(data, "MSISDN")
    _text(data, "msg")
    _text(data, "sender")
    reference = _text(data, "cid")
    return Send("mmg", reference, sms_outcome(to), {"reference": str(uuid.uuid4())}, to)


def _form(text: str) -> dict[str, str]:
    """A form's fields, the first value of each (as ``parse_qs`` reads it, blank values kept), unquoting
    only what is quoted: most fields are not, and this runs for every Firetext send."""
    form: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name not in form:
            form[name] = unquote_plus(value) if "%" in value or "+" in value else value
    return form


def parse_firetext(body: bytes, headers: Mapping[str, str]) -> Send:
    try:
        form = _form(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8 form data") from exc
    to = _text(form, "to")
    _text(form, "from")
    _text(form, "message")
    reference = _text(form, "reference")
    answer = {"code": 0, "description": "SMS successfully queued"}
    return Send("firetext", reference, sms_outcome(to), answer, to)


def parse_ses(access_key_id: str, secret_access_key: str, body: bytes, headers: Mapping[str, str]) -> Send:
    try:
        verify(
            "POST",
            SES_SEND_EMAIL_PATH,
            headers,
            body,
            service="ses",
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    except SignatureError as exc:
        raise BadRequest(str(exc), status=403, ses_code=exc.code) from exc
    data = json_object(body)
    _text(data, "FromEmailAddress")
    addresses = _object(data, "Destination").get("ToAddresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a.strip() for a in addresses):
        raise BadRequest("Destination.ToAddresses must be a non-empty list of addresses")
    content = _object(data, "Content")
    if "Simple" not in content:
        raise BadRequest("Content.Simple is required: the simulator takes neither Raw nor Template content")
    simple = _object(content, "Simple", "Content.")
    size = len(_text(_object(simple, "Subject", "Content.Simple."), "Data", "Content.Simple.Subject.").encode())
    message_body = _object(simple, "Body", "Content.Simple.")
    parts = [message_body.get(part) for part in ("Text", "Html") if part in message_body]
    if not parts or not all(isinstance(p, dict) and isinstance(p.get("Data"), str) for p in parts):
        raise BadRequest("Content.Simple.Body needs Text or Html with Data")
    size += sum(len(p["Data"].encode()) for p in parts if isinstance(p, dict))
    message_headers = _ses_headers(simple.get("Headers", []))
    size += sum(len(name) + len(value) for name, value in message_headers)
    if size > SES_MAX_MESSAGE_BYTES:
        raise BadRequest("Message length is more than 40 megabytes", ses_code="MessageRejected")
    reference = _ses_reference(data.get("EmailTags", []), message_headers)
    answer = {"MessageId": str(uuid.uuid4())}
    return Send(
        "ses",
        reference,
        email_outcome(addresses[0]),
        answer,
        addresses[0],
        _ses_details(data, message_headers),
        {part.lower(): message_body[part]["Data"] for part in ("Text", "Html") if part in message_body},
    )


def _ses_details(data: dict[str, Any], headers: list[tuple[str, str]]) -> dict[str, Any]:
    """What the simulator keeps of an email for tests to see: its reply-to addresses and its headers
    (List-Unsubscribe...), beyond the notification id. Nothing for an email with neither."""
    reply_to = data.get("ReplyToAddresses", [])
    if not isinstance(reply_to, list) or not all(isinstance(a, str) for a in reply_to):
        raise BadRequest("ReplyToAddresses must be a list of addresses")
    extra = {name: value for name, value in headers if name.lower() != NOTIFICATION_ID_HEADER.lower()}
    return {"reply_to": reply_to, "headers": extra} if reply_to or extra else {}


def _ses_headers(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not all(
        isinstance(h, dict) and isinstance(h.get("Name"), str) and isinstance(h.get("Value"), str) for h in raw
    ):
        raise BadRequest("Content.Simple.Headers must be a list of {Name, Value}")
    return [(h["Name"], h["Value"]) for h in raw]


def _ses_reference(tags: Any, headers: list[tuple[str, str]]) -> str:
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise BadRequest("EmailTags must be a list of {Name, Value}")
    for tag in tags:
        if tag.get("Name") == NOTIFICATION_ID_TAG and isinstance(tag.get("Value"), str) and tag["Value"]:
            return str(tag["Value"])
    for name, value in headers:
        if name.lower() == NOTIFICATION_ID_HEADER.lower() and value:
            return value
    raise BadRequest(f"the simulator needs the {NOTIFICATION_ID_TAG!r} EmailTag or the {NOTIFICATION_ID_HEADER} header")


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": code, "message": message}
