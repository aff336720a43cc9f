"""Callbacks to services (Notify's service callbacks), signed so that receivers can verify them: delivery
statuses, and received text messages (Notify's inbound API). A service registers each kind on its own.

Three parts. Registration (`check_url`, `check_token`, `new_signing_secret`; the Admin API stores them). The
trigger (`CallbackTrigger`): ReceiptApplier asks it, inside its transaction, for a ServiceCallback per
notification that reached a final status and whose service has a delivery-status callback, and
InboundStorer for one per stored text whose service has an inbound-SMS callback; each publishes them after
its commit. The sender (`CallbackSender`, the service-callbacks dispatcher role): POSTs Notify's body for the
kind with the bearer token and an HMAC-SHA256 signature; a connection error, a 5xx or a 429 is retried
`RETRIES` times through service-callbacks-retry (a broker-side delay, never a sleep), then given up: a
metric, a log line and a dead letter. Delivery is at least once: a receiver must be idempotent by id (and
status, for delivery statuses).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine

from herald import metrics
from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.domain import inputs
from herald.queues import Delivery
from herald.queues.codec import pack
from herald.queues.deadletter import BatchPublish, Settlement
from herald.queues.topology import SERVICE_CALLBACK_QUEUE, SERVICE_CALLBACK_RETRY_QUEUE
from herald.service_layer.errors import InvalidRequest
from herald.v1.queue_pb2 import InboundSms, ServiceCallback, ServiceCallbackBatch

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 10  # Notify's
MAX_URL_LENGTH = 2000
MAX_TOKEN_LENGTH = 1000
# Notify's send-delivery-status task: max_retries=5 (Celery's count of retries after the first call), so
# a callback is POSTed at most 6 times and given up after the sixth failure.
RETRIES = 5
TIMEOUT_SECONDS = 5.0  # Notify's
SIGNATURE_HEADER = "X-Herald-Signature"
_NOTIFY_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # Notify's DATETIME_FORMAT
# A queued callback's kind, as the service registered it (service_callbacks.callback_type).
KINDS: dict[int, str] = {
    ServiceCallback.DELIVERY_STATUS: services_db.DELIVERY_STATUS,
    ServiceCallback.INBOUND_SMS: services_db.INBOUND_SMS,
}


# --- Registration


def check_url(url: str, *, allow_http: bool) -> str:
    """An absolute https URL (http too when `allow_http`, i.e. make run's local mode)."""
    try:
        inputs.check_text(url, "url", max_length=MAX_URL_LENGTH)
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        host = None
    if not host or any(c.isspace() for c in url) or parts.scheme not in ("https", "http"):
        raise InvalidRequest.one("url", "url is not a valid https URL")
    if parts.scheme == "http" and not allow_http:
        raise InvalidRequest.one("url", "url must be https")
    return url


def check_token(token: str) -> str:
    try:
        inputs.check_text(token, "bearer_token", max_length=MAX_TOKEN_LENGTH)
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidRequest.one("bearer_token", f"bearer_token must be at least {MIN_TOKEN_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in token):
        raise InvalidRequest.one("bearer_token", "bearer_token cannot contain spaces or control characters")
    return token


def new_signing_secret() -> str:
    return secrets.token_urlsafe(32)


# --- What is sent


def _notify_time(value: Any) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(_NOTIFY_DATETIME)


def callback_body(callback: ServiceCallback) -> bytes:
    """Notify's body for the callback's kind, as Notify serialises it (json.dumps)."""
    if callback.kind == ServiceCallback.INBOUND_SMS:
        return _inbound_body(callback.text)
    body = {
        "id": callback.id,
        "reference": callback.reference if callback.HasField("reference") else None,
        "to": callback.to,
        "status": callback.status,
        "created_at": _notify_time(callback.created_at.ToDatetime(tzinfo=UTC)),
        "completed_at": _notify_time(callback.completed_at.ToDatetime(tzinfo=UTC))
        if callback.HasField("completed_at")
        else None,
        "sent_at": _notify_time(callback.sent_at.ToDatetime(tzinfo=UTC)) if callback.HasField("sent_at") else None,
        "notification_type": callback.notification_type,
        "template_id": callback.template_id,
        "template_version": callback.template_version,
    }
    return json.dumps(body).encode()


def _inbound_body(text: InboundSms) -> bytes:
    """Notify's send-inbound-sms body. Notify's date_received is the provider's date; a text whose provider
    gave none has the time Herald received it."""
    received = text.provider_date if text.HasField("provider_date") else text.received_at
    body = {
        "id": text.id,
        "source_number": text.user_number,
        "destination_number": text.notify_number,
        "message": text.content,
        "date_received": _notify_time(received.ToDatetime(tzinfo=UTC)),
    }
    return json.dumps(body).encode()


def well_formed(callback: ServiceCallback) -> bool:
    """Whether the callback can ever be sent: a kind this Herald knows, an inbound one with its text."""
    return callback.kind in KINDS and (callback.kind != ServiceCallback.INBOUND_SMS or callback.HasField("text"))


def signature(secret: str, body: bytes) -> str:
    """The X-Herald-Signature value: sha256=<hex HMAC-SHA256 of the exact body bytes>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _callback(row: Any) -> bytes:
    callback = ServiceCallback(
        service_id=str(row.service_id),
        id=str(row.id),
        to=row.to,
        status=row.status,
        notification_type=row.notification_type,
        template_id=str(row.template_id),
        template_version=row.template_version,
    )
    if row.reference is not None:
        callback.reference = row.reference
    callback.created_at.FromDatetime(row.created_at)
    if row.updated_at is not None:
        callback.completed_at.FromDatetime(row.updated_at)
    if row.sent_at is not None:
        callback.sent_at.FromDatetime(row.sent_at)
    return callback.SerializeToString()


# --- The trigger


class CallbackTrigger:
    """Which services have a callback of each kind is read at most once per `cache_seconds` (so a new or
    removed callback applies within that time); a batch with final notifications of services with a
    delivery-status callback costs one more read, and none otherwise."""

    def __init__(
        self, publisher: BatchPublish, cache_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._publisher = publisher
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._services: dict[str, frozenset[str]] = {}
        self._read_at: float | None = None

    def _with_callback(self, conn: Connection, kind: str) -> frozenset[str]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._cache_seconds:
            self._services, self._read_at = services_db.services_with_callbacks(conn), now
        return self._services.get(kind, frozenset())

    def collect(self, conn: Connection, final_ids: Sequence[str]) -> list[bytes]:
        """Serialised ServiceCallbacks for `final_ids` (notifications in a final status), read in the
        caller's transaction."""
        if not final_ids:
            return []
        services = self._with_callback(conn, services_db.DELIVERY_STATUS)
        if not services:
            return []
        return [_callback(row) for row in services_db.callback_payloads(conn, list(final_ids), list(services))]

    def collect_inbound(self, conn: Connection, texts: Sequence[tuple[str, InboundSms]]) -> list[bytes]:
        """Serialised ServiceCallbacks for received texts, each with the id of the service it was stored
        for, whose service has an inbound-SMS callback; each text once."""
        if not texts:
            return []
        services = self._with_callback(conn, services_db.INBOUND_SMS)
        found: dict[str, bytes] = {}
        for service_id, text in texts:
            if service_id in services:
                callback = ServiceCallback(service_id=service_id, id=text.id, kind=ServiceCallback.INBOUND_SMS)
                callback.text.CopyFrom(text)
                found[text.id] = callback.SerializeToString()
        return list(found.values())

    def publish(self, callbacks: Sequence[bytes]) -> None:
        """After the commit; raises PublishFailed (transient: the receipts' batch is handled again and the
        callbacks published again, as duplicates of any that went out)."""
        if callbacks:
            self._publisher.publish_batch([(SERVICE_CALLBACK_QUEUE, pack(callbacks))])
            metrics.incr("service_callbacks_queued", len(callbacks))


# --- The sender

# What a POST's outcome means: sent, try again later, or refused for good (a 4xx other than 429).
SENT, RETRY, REFUSED = "sent", "retry", "refused"


def classify(status_code: int) -> str:
    if 200 <= status_code < 300:
        return SENT
    if status_code >= 500 or status_code == 429:
        return RETRY
    return REFUSED


@dataclass(frozen=True, slots=True)
class _Receiver:
    url: str
    token: str
    secret: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc.rpartition("@")[2]


class CallbackSender:
    """The service-callbacks role. A batch's callbacks are POSTed side by side (`concurrency`), at most
    `per_receiver` at once to one host; a host that fails to answer (connection error or timeout) is not
    called again within the batch: its other callbacks count that failure too, so a dead receiver costs a
    batch one timeout per lane rather than one per callback. Retries are published to
    service-callbacks-retry with their attempt count (`retry_seconds` there is the queue's TTL);
    `retries=False` (a broker without TTL queues: the in-process one) gives up at the first failure."""

    def __init__(
        self,
        engine: Engine,
        box: SecretBox,
        publisher: BatchPublish,
        *,
        concurrency: int,
        per_receiver: int,
        cache_seconds: float,
        retries: bool = True,
        client: httpx.Client | None = None,
    ) -> None:
        self._engine = engine
        self._box = box
        self._publisher = publisher
        self._per_receiver = max(1, per_receiver)
        self._cache_seconds = cache_seconds
        self._retries = retries
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="service-callback")
        # Imported where callbacks are sent, not where they are queued (receipts, the scheduler): httpx
        # brings its command line's packages (click, pygments), 13 MB of each such process's memory.
        import httpx

        self._client = client or httpx.Client(
            timeout=TIMEOUT_SECONDS, limits=httpx.Limits(max_connections=max(1, concurrency)), follow_redirects=False
        )
        # By (service id, kind).
        self._receivers: dict[tuple[str, str], _Receiver | None] = {}
        self._read_at: dict[tuple[str, str], float] = {}

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        settlement = Settlement()
        callbacks = settlement.well_formed(
            batch, lambda body: ServiceCallbackBatch.FromString(body).callbacks, well_formed
        )
        receivers = self._receivers_for({(c.service_id, KINDS[c.kind]) for c in callbacks})
        by_host: dict[str, list[tuple[ServiceCallback, _Receiver]]] = {}
        for callback in callbacks:
            receiver = receivers.get((callback.service_id, KINDS[callback.kind]))
            if receiver is None:  # removed since the callback was queued
                metrics.incr("service_callbacks", outcome="no-callback", kind=KINDS[callback.kind])
                continue
            by_host.setdefault(receiver.host, []).append((callback, receiver))
        retry: list[bytes] = []
        given_up: list[bytes] = []
        lock = threading.Lock()

        def lane(work: list[tuple[ServiceCallback, _Receiver]], down: threading.Event) -> None:
            for callback, receiver in work:
                outcome, detail = (RETRY, "receiver-down") if down.is_set() else self._post(callback, receiver)
                if detail in ("connection-error", "timeout"):
                    down.set()
                if outcome == SENT:
                    metrics.incr("service_callbacks", outcome=SENT, kind=KINDS[callback.kind])
                    continue
                with lock:
                    self._failed(callback, receiver, outcome, detail, retry, given_up)

        futures: list[Future[None]] = []
        for work in by_host.values():
            down = threading.Event()
            lanes = min(self._per_receiver, len(work))
            futures.extend(self._pool.submit(lane, work[i::lanes], down) for i in range(lanes))
        for future in futures:
            future.result()
        if retry:
            self._publisher.publish_batch([(SERVICE_CALLBACK_RETRY_QUEUE, pack(retry))])
        if given_up:
            settlement.dead_letter(SERVICE_CALLBACK_QUEUE, "callback-gave-up", given_up)
        settlement.settle(self._publisher, batch)

    def _post(self, callback: ServiceCallback, receiver: _Receiver) -> tuple[str, str]:
        """(outcome, detail): detail is the status code or the kind of failure, never the receiver's text."""
        body = callback_body(callback)
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {receiver.token}",
            SIGNATURE_HEADER: signature(receiver.secret, body),
        }
        import httpx  # loaded by __init__: a dictionary lookup here

        started = time.monotonic()
        try:
            response = self._client.post(receiver.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return RETRY, "timeout"
        except httpx.TransportError:
            return RETRY, "connection-error"
        finally:
            metrics.observe("service_callback", time.monotonic() - started)
        return classify(response.status_code), str(response.status_code)

    def _failed(
        self,
        callback: ServiceCallback,
        receiver: _Receiver,
        outcome: str,
        detail: str,
        retry: list[bytes],
        given_up: list[bytes],
    ) -> None:
        failures = callback.attempt + 1
        kind = KINDS[callback.kind]
        if outcome == RETRY and self._retries and failures <= RETRIES:
            callback.attempt = failures
            retry.append(callback.SerializeToString())
            metrics.incr("service_callbacks", outcome="failed", kind=kind)
            return
        metrics.incr("service_callbacks", outcome="given-up" if outcome == RETRY else "refused", kind=kind)
        # No personal data: the host only (a URL's path and query may carry anything), never the body.
        about = (
            {"inbound_id": callback.id}
            if callback.kind == ServiceCallback.INBOUND_SMS
            else {"notification_id": callback.id, "status": callback.status}
        )
        log.warning(
            "service callback given up",
            extra={
                "service_id": callback.service_id,
                "kind": kind,
                **about,
                "receiver_host": receiver.host,
                "attempts": failures,
                "error": detail,
            },
        )
        given_up.append(callback.SerializeToString())

    def _receivers_for(self, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], _Receiver | None]:
        """Each (service, kind)'s URL, token and secret, read at most once per cache_seconds."""
        now = time.monotonic()
        stale = [k for k in wanted if now - self._read_at.get(k, float("-inf")) >= self._cache_seconds]
        by_kind: dict[str, list[str]] = {}
        for service_id, kind in stale:
            by_kind.setdefault(kind, []).append(service_id)
        if by_kind:
            with self._engine.connect() as conn:
                rows = {kind: services_db.callbacks(conn, kind, ids) for kind, ids in by_kind.items()}
            for service_id, kind in stale:
                row = rows[kind].get(service_id)
                self._receivers[(service_id, kind)] = (
                    None
                    if row is None
                    else _Receiver(
                        row.url,
                        self._box.decrypt(row.bearer_token_encrypted),
                        self._box.decrypt(row.signing_secret_encrypted),
                    )
                )
                self._read_at[(service_id, kind)] = now
        return {k: self._receivers[k] for k in wanted}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
