"""The providers' delivery receipts, posted in their own formats as Notify receives them, each behind a
per-provider credential (HTTP Basic), passed to callbacks' ReportDelivery: answered 200 only once the
receipt is durable, so a provider that gets anything else posts it again.

MMG posts JSON (`status`, `CID` = Herald's reference, `substatus`); Firetext posts a form (`status`,
`reference`, `code`); SES reaches us through Amazon SNS, whose signature is checked: a
`SubscriptionConfirmation` is confirmed by fetching its SubscribeURL, a `Notification` carries the SES
event, whose `notification_id` tag is Herald's reference. Answers are Notify's for these routes:
`{"result": "success"}` or `{"result": "error", "message": ...}`.

Received text messages come the same way (`/notifications/sms/receive/mmg` and `.../firetext`, behind the
same credentials), to callbacks' ReceiveText: `{"status": "ok"}` once durable, as Notify answers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import grpc
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from herald.v1 import callbacks_pb2
from services.gateway.calls import Callbacks
from services.gateway.errors import NotifyError
from services.gateway.observability import JSONResponse, observed
from services.gateway.reading import body_bytes
from services.gateway.sns import CertificateUnavailable, NotSigned, SnsVerifier

log = logging.getLogger(__name__)

SUCCESS: Final = {"result": "success"}
# What Notify answers a provider's inbound message, kept or dropped (a number no service owns) alike.
RECEIVED: Final = {"status": "ok"}
INBOUND_MODULE: Final = "receive_notifications"


def amazon_sns_url(url: str) -> bool:
    """Only SNS itself is fetched (subscription confirmations, signing certificates): never a host a
    message names at will."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" and host.startswith("sns.") and host.endswith(".amazonaws.com")


def sns_urls(trusted_prefix: str) -> Callable[[str], bool]:
    """Amazon SNS's URLs, and those under `trusted_prefix` (the provider simulator's, in development and
    tests; empty in production)."""
    if not trusted_prefix:
        return amazon_sns_url
    prefix = trusted_prefix if trusted_prefix.endswith("/") else trusted_prefix + "/"
    return lambda url: amazon_sns_url(url) or url.startswith(prefix)


def _error(status_code: int, message: str | list[str]) -> JSONResponse:
    return JSONResponse({"result": "error", "message": message}, status_code=status_code)


def _authorised(request: Request, credential: str) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not credential:
        return False
    try:
        _, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode(), credential.encode())


def _missing(data: Mapping[str, Any], fields: tuple[str, ...], client_name: str) -> list[str]:
    """Notify's validate_callback_data."""
    return [f"{client_name} callback failed: {f} missing" for f in fields if not str(data.get(f, "") or "")]


def mmg_text(value: str) -> str:
    """MMG's encoding of a message (Notify's format_mmg_message): URL-encoded with "+" for a space, then
    backslash escapes ("\\U0001f600") for characters sent as escapes. A text whose escapes do not decode is
    kept as URL-decoded rather than refused: it is what the sender wrote."""
    text = unquote(value.replace("+", " "))
    try:
        return text.encode("raw_unicode_escape").decode("unicode_escape")
    except UnicodeDecodeError:
        return text


def _inbound_fields(
    data: Mapping[str, Any],
    required: tuple[str, ...],
    present: tuple[str, ...],
    optional: tuple[str, ...],
    client_name: str,
) -> dict[str, str] | Response:
    """The fields as text: `required` ones not empty, `present` ones there (an empty text is a message),
    `optional` ones if given. Numbers are taken as their digits; anything else is a 400."""
    missing = [f for f in required if data.get(f) in (None, "")] + [f for f in present if data.get(f) is None]
    if missing:
        return _error(400, [f"{client_name} inbound SMS failed: {f} missing" for f in missing])
    fields: dict[str, str] = {}
    for name in (*required, *present, *optional):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and name not in present:
            value = str(value)
        if not isinstance(value, str):
            return _error(400, f"{client_name} inbound SMS failed: {name} is not text")
        fields[name] = value
    return fields


async def _kept(handing: Awaitable[object], invalid: str, not_kept: str, answer: Mapping[str, str]) -> Response:
    """A receipt or received text handed to callbacks: 200 with `answer` once it is kept, 400 when callbacks
    refuse it, else 503 (not kept: any answer but 200 makes the provider post it again)."""
    try:
        await handing
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return _error(400, exc.details() or invalid)
        return _error(503, not_kept)
    return JSONResponse(answer)


class Webhooks:
    def __init__(
        self,
        callbacks: Callbacks,
        credentials: Mapping[str, str],
        may_fetch: Callable[[str], bool] = amazon_sns_url,
    ) -> None:
        self._callbacks = callbacks
        self._credentials = credentials
        self._may_fetch = may_fetch
        self._sns = SnsVerifier(may_fetch)

    def table(self) -> list[Route]:
        sms, ses = "notifications_sms_callback", "notifications_ses_callback"
        return [
            Route("/notifications/sms/mmg", observed(sms, "process_mmg_response", self.mmg), methods=["POST"]),
            Route(
                "/notifications/sms/firetext",
                observed(sms, "process_firetext_response", self.firetext),
                methods=["POST"],
            ),
            Route("/notifications/email/ses", observed(ses, "process_ses_response", self.ses), methods=["POST"]),
            Route(
                "/notifications/sms/receive/mmg",
                observed(INBOUND_MODULE, "receive_mmg_sms", self.mmg_inbound),
                methods=["POST"],
            ),
            Route(
                "/notifications/sms/receive/firetext",
                observed(INBOUND_MODULE, "receive_firetext_sms", self.firetext_inbound),
                methods=["POST"],
            ),
        ]

    async def _report(self, provider: str, reference: str, status: str, code: str) -> Response:
        return await _kept(
            self._callbacks.report(provider, reference, status, code),
            "Invalid receipt",
            "Receipt not kept, try again",
            SUCCESS,
        )

    async def _body(self, request: Request, provider: str) -> bytes | Response:
        if not _authorised(request, self._credentials[provider]):
            return _error(401, "Unauthorized")
        try:
            return await body_bytes(request)
        except NotifyError as exc:
            return _error(400, exc.errors[0][1])

    async def mmg(self, request: Request) -> Response:
        body = await self._body(request, "mmg")
        if isinstance(body, Response):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "MMG callback failed: invalid JSON")
        if not isinstance(data, dict):
            return _error(400, "MMG callback failed: invalid JSON")
        missing = _missing(data, ("status", "CID"), "MMG")
        if missing:
            return _error(400, missing)
        substatus = data.get("substatus")
        return await self._report(
            "mmg", str(data["CID"]), str(data["status"]), "" if substatus is None else str(substatus)
        )

    async def firetext(self, request: Request) -> Response:
        body = await self._body(request, "firetext")
        if isinstance(body, Response):
            return body
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        missing = _missing(form, ("status", "reference"), "Firetext")
        if missing:
            return _error(400, missing)
        return await self._report("firetext", form["reference"], form["status"], form.get("code", ""))

    async def ses(self, request: Request) -> Response:
        body = await self._body(request, "ses")
        if isinstance(body, Response):
            return body
        try:
            envelope = orjson.loads(body)  # SNS posts JSON as text/plain
            kind = envelope.get("Type") if isinstance(envelope, dict) else None
        except orjson.JSONDecodeError:
            kind = None
        if kind is None:
            return _error(400, "SES callback failed: not an SNS message")
        try:
            await self._sns.verify(envelope)
        except NotSigned:
            return _error(403, "SES callback failed: not signed by Amazon SNS")
        except CertificateUnavailable:
            return _error(503, "SNS signing certificate not available, try again")
        if kind == "SubscriptionConfirmation":
            return await self._confirm(envelope)
        if kind != "Notification":
            return _error(400, "SES callback failed: not an SNS notification")
        try:
            event = orjson.loads(envelope["Message"])
            kind = event.get("eventType") or event.get("notificationType")
            reference = event["mail"]["tags"]["notification_id"][0]
            code = str(event.get("bounce", {}).get("bounceType", "")) if kind == "Bounce" else ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            return _error(400, "SES callback failed: not an SES event for a Herald notification")
        return await self._report("ses", str(reference), str(kind), code)

    async def _receive(self, text: callbacks_pb2.InboundText) -> Response:
        return await _kept(
            self._callbacks.receive_text(text), "Invalid inbound message", "Message not kept, try again", RECEIVED
        )

    async def mmg_inbound(self, request: Request) -> Response:
        """MMG's JSON: `MSISDN` (the sender), `Number` (Herald's inbound number), `Message` (URL-encoded,
        "+" for a space, then Python-style escapes for what GSM cannot carry), `ID`, and optionally
        `DateRecieved` (sic; London time, URL-encoded)."""
        body = await self._body(request, "mmg")
        if isinstance(body, Response):
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return _error(400, "MMG inbound SMS failed: invalid JSON")
        fields = _inbound_fields(data, ("MSISDN", "Number", "ID"), ("Message",), ("DateRecieved",), "MMG")
        if isinstance(fields, Response):
            return fields
        return await self._receive(
            callbacks_pb2.InboundText(
                provider="mmg",
                notify_number=fields["Number"],
                user_number=fields["MSISDN"],
                content=mmg_text(fields["Message"]),
                provider_reference=fields["ID"],
                provider_date=mmg_text(fields.get("DateRecieved", "")),
            )
        )

    async def firetext_inbound(self, request: Request) -> Response:
        """Firetext's form: `source` (the sender), `destination` (Herald's inbound number), `message`,
        `time` (London time)."""
        body = await self._body(request, "firetext")
        if isinstance(body, Response):
            return body
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            return _error(400, "Firetext inbound SMS failed: not UTF-8")
        fields = _inbound_fields(form, ("source", "destination", "time"), ("message",), (), "Firetext")
        if isinstance(fields, Response):
            return fields
        return await self._receive(
            callbacks_pb2.InboundText(
                provider="firetext",
                notify_number=fields["destination"],
                user_number=fields["source"],
                content=fields["message"],
                provider_date=fields["time"],
            )
        )

    async def _confirm(self, envelope: dict[str, Any]) -> Response:
        url = envelope.get("SubscribeURL")
        if not isinstance(url, str) or not self._may_fetch(url):
            return _error(400, "SES callback failed: SubscribeURL is not Amazon SNS's")
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                (await client.get(url)).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("sns subscription not confirmed", extra={"error": type(exc).__name__})
            return _error(503, "SNS subscription not confirmed, try again")
        log.info("sns subscription confirmed", extra={"topic": envelope.get("TopicArn", "")})
        return JSONResponse(SUCCESS)
