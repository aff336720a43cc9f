"""Shared pieces of Herald's provider clients: requests, protocols, errors and the HTTP plumbing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import quote_plus

import orjson

from herald.providers._transport import HttpAnswer, HttpPost, PooledTransport, Transport, TransportFailed, post_all

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


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, four times the
# cost, paid once per hand-off.
@dataclass(slots=True)
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
    """An SMS provider's HTTP API, in two halves (what to post, what its answer means), so that a batch's
    hand-offs go out side by side through ``send_sms_all``."""

    name: str

    def sms_post(self, request: SmsRequest) -> HttpPost:
        """The request that hands the message to the provider."""
        ...

    def sms_sent(self, request: SmsRequest, outcome: HttpAnswer | TransportFailed) -> str:
        """The provider's id for the message, from what became of its request; raises ProviderError."""
        ...

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

    def _request(
        self, path: str, *, json: dict[str, Any] | None = None, form: dict[str, str] | None = None
    ) -> HttpPost:
        if json is not None:
            # Copied to its own size: orjson's bytes sit in a 4 kB buffer whatever their length, and a send
            # batch builds all its requests before the first goes out (5,000 SMS held 20 MB).
            return self._http, path, bytes(memoryview(orjson.dumps(json))), self._json_headers
        # urlencode's checks of every key and value cost more than their quoting; the keys are our own names.
        content = "&".join([f"{key}={quote_plus(value)}" for key, value in (form or {}).items()])
        return self._http, path, content.encode(), self._form_headers

    def _answer(self, reference: str, outcome: HttpAnswer | TransportFailed) -> dict[str, Any]:
        """The JSON object the provider answered, or raise ``ProviderError``."""
        if isinstance(outcome, TransportFailed):
            if outcome.kind == "connect":
                # The request never left: no provider holds the message.
                logger.warning("%s: could not connect to hand off %s: %s", self.name, reference, outcome.detail)
                raise ProviderError(self.name, f"connection failed ({outcome.detail})", retryable=True) from outcome
            if outcome.kind == "timeout":
                logger.warning("%s: timed out handing off %s", self.name, reference)
                raise ProviderError(self.name, "timed out", retryable=True, ambiguous=True) from outcome
            logger.warning("%s: connection failed handing off %s: %s", self.name, reference, outcome.detail)
            raise ProviderError(
                self.name, f"connection failed ({outcome.detail})", retryable=True, ambiguous=True
            ) from outcome

        status = outcome.status
        if not 200 <= status < 300:
            retryable = _is_retryable_status(status)
            logger.warning("%s: refused %s with HTTP %d", self.name, reference, status)
            # The answer body is left out: a provider may echo the recipient back in it.
            raise ProviderError(self.name, f"HTTP {status}", retryable=retryable, status_code=status)
        try:
            answer = orjson.loads(outcome.content)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            # A 2xx means the provider may hold the message: resending risks a duplicate.
            logger.warning("%s: malformed answer for %s", self.name, reference)
            raise ProviderError(self.name, "malformed answer", retryable=False, status_code=status)
        return answer

    def sms_post(self, request: SmsRequest) -> HttpPost:
        raise NotImplementedError

    def sms_sent(self, request: SmsRequest, outcome: HttpAnswer | TransportFailed) -> str:
        raise NotImplementedError

    def send_sms(self, request: SmsRequest) -> str:
        """One hand-off on its own (a batch's go out together through ``send_sms_all``)."""
        [(outcome, _)] = post_all([self.sms_post(request)], 1)
        return self.sms_sent(request, outcome)

    def _field(self, answer: dict[str, Any], key: str, reference: str) -> str:
        value = answer.get(key)
        if not isinstance(value, str) or not value:
            logger.warning("%s: answer for %s has no %r", self.name, reference, key)
            raise ProviderError(self.name, f"answer has no {key!r}", retryable=False)
        return value


def send_sms_all(
    handoffs: Sequence[tuple[SmsProvider, SmsRequest]], in_flight: int
) -> list[tuple[str | ProviderError, float]]:
    """Every hand-off, at most ``in_flight`` at a time, side by side from this thread: for each, the
    provider's id for the message or why the provider did not take it, and how long it took (seconds)."""
    posted = post_all([provider.sms_post(request) for provider, request in handoffs], in_flight)
    results: list[tuple[str | ProviderError, float]] = []
    for (provider, request), (outcome, seconds) in zip(handoffs, posted, strict=True):
        try:
            results.append((provider.sms_sent(request, outcome), seconds))
        except ProviderError as exc:
            results.append((exc, seconds))
    return results
