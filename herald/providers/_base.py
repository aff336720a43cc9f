"""Shared pieces of Herald's provider clients: requests, protocols, errors and the HTTP plumbing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlencode

import orjson

from herald.providers._transport import PooledTransport, Transport, TransportFailed

logger = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}

# How an email names its notification. SES events carry the message's tags (mail.tags), so receipts
# name the notification without a lookup, and SES's simulator de-duplicates by it; the header is for
# whoever reads the message itself (bounces, complaints, support).
NOTIFICATION_ID_TAG = "notification_id"
NOTIFICATION_ID_HEADER = "X-Herald-Notification-Id"


class ProviderError(Exception):
    """A provider did not take the message.

    ``retryable`` tells the dispatcher whether sending again may succeed: connection errors, timeouts,
    5xx and 429 are transient; any other refusal (4xx, a malformed answer) will not change on retry.

    ``ambiguous`` says the request reached the provider but its answer did not come back (a read
    timeout, a connection dropped mid-answer): the provider may hold the message. Resend it to the
    same provider, which de-duplicates by Herald's reference; another provider would send it again.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable
        self.status_code = status_code
        self.ambiguous = ambiguous


@dataclass(frozen=True, slots=True)
class SmsRequest:
    reference: str
    to: str
    body: str
    sender: str


@dataclass(frozen=True, slots=True)
class EmailRequest:
    reference: str
    to: str
    subject: str
    body: str
    html: str
    from_address: str
    reply_to: str | None = None
    # Sent as List-Unsubscribe (with one-click List-Unsubscribe-Post) when set.
    unsubscribe_url: str | None = None


class SmsProvider(Protocol):
    name: str

    def send_sms(self, request: SmsRequest) -> str:
        """Hand the message to the provider and return the provider's id for it."""
        ...


class EmailProvider(Protocol):
    name: str

    def send_email(self, request: EmailRequest) -> str:
        """Hand the message to the provider and return the provider's id for it."""
        ...


def _is_retryable_status(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


class ClosingClient:
    """A provider client that holds a connection pool: usable as a context manager that closes it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class HttpProviderClient(ClosingClient):
    """One long-lived connection pool per provider (``PooledTransport`` unless a test passes its own
    transport), with failures mapped to ``ProviderError``.

    Nothing here logs or raises with a recipient or message body: only the provider name, Herald's
    reference (a notification id) and the HTTP status.
    """

    name: str

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        timeout: float = 5.0,
        max_connections: int = 16,
        transport: Transport | None = None,
    ) -> None:
        self._api_key = api_key
        self._http: Transport = transport or PooledTransport(base_url, timeout=timeout, maxsize=max_connections)
        auth = self._auth_headers(api_key)
        self._json_headers, self._form_headers = {**auth, **_JSON}, {**auth, **_FORM}

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        """How the key travels, per provider; by default it does not travel in a header."""
        return {}

    def close(self) -> None:
        self._http.close()

    def _post(
        self,
        path: str,
        reference: str,
        *,
        json: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST and return the JSON object the provider answered, or raise ``ProviderError``."""
        if json is not None:
            content, headers = orjson.dumps(json), self._json_headers
        else:
            content, headers = urlencode(form or {}).encode(), self._form_headers
        try:
            response = self._http.post(path, content, headers)
        except TransportFailed as exc:
            if exc.kind == "connect":
                # The request never left: no provider holds the message.
                logger.warning("%s: could not connect to hand off %s: %s", self.name, reference, exc.detail)
                raise ProviderError(self.name, f"connection failed ({exc.detail})", retryable=True) from exc
            if exc.kind == "timeout":
                logger.warning("%s: timed out handing off %s", self.name, reference)
                raise ProviderError(self.name, "timed out", retryable=True, ambiguous=True) from exc
            logger.warning("%s: connection failed handing off %s: %s", self.name, reference, exc.detail)
            raise ProviderError(self.name, f"connection failed ({exc.detail})", retryable=True, ambiguous=True) from exc

        status = response.status
        if not 200 <= status < 300:
            retryable = _is_retryable_status(status)
            logger.warning("%s: refused %s with HTTP %d", self.name, reference, status)
            # The answer body is left out: a provider may echo the recipient back in it.
            raise ProviderError(self.name, f"HTTP {status}", retryable=retryable, status_code=status)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            # A 2xx means the provider may hold the message: resending risks a duplicate.
            logger.warning("%s: malformed answer for %s", self.name, reference)
            raise ProviderError(self.name, "malformed answer", retryable=False, status_code=status)
        return answer

    def _field(self, answer: dict[str, Any], key: str, reference: str) -> str:
        value = answer.get(key)
        if not isinstance(value, str) or not value:
            logger.warning("%s: answer for %s has no %r", self.name, reference, key)
            raise ProviderError(self.name, f"answer has no {key!r}", retryable=False)
        return value
