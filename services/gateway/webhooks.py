"""The providers' delivery receipts, posted in their own formats as Notify receives them, each behind a
per-provider credential (HTTP Basic), passed to callbacks' ReportDelivery: answered 200 only once the
receipt is durable, so a provider that gets anything else posts it again.

MMG posts JSON (`status`, `CID` = Herald's reference, `substatus`); Firetext posts a form (`status`,
`reference`, `code`); SES reaches us through Amazon SNS, whose signature is checked: a
`SubscriptionConfirmation` is confirmed by fetching its SubscribeURL, a `Notification` carries the SES
event, whose `notification_id` tag is Herald's reference. Answers are Notify's for these routes:
`{"result": "success"}` or `{"result": "error", "message": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import grpc
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway.calls import Callbacks
from services.gateway.errors import NotifyError
from services.gateway.observability import JSONResponse, observed
from services.gateway.reading import body_bytes
from services.gateway.sns import CertificateUnavailable, NotSigned, SnsVerifier

log = logging.getLogger(__name__)

SUCCESS: Final = {"result": "success"}


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
        ]

    async def _report(self, provider: str, reference: str, status: str, code: str) -> Response:
        try:
            await self._callbacks.report(provider, reference, status, code)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return _error(400, exc.details() or "Invalid receipt")
            # Not kept: any answer but 200 makes the provider post it again.
            return _error(503, "Receipt not kept, try again")
        return JSONResponse(SUCCESS)

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
