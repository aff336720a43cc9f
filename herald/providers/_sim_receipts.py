"""The provider simulator's receipts, posted when due and retried through outages, by one of two ways:

* to the gateway's provider webhooks, as real providers post them (``WebhookReceipts``): MMG's JSON,
  Firetext's form, and SES's events inside Amazon SNS Notification messages signed as SNS signs them,
  each with that provider's credential (HTTP Basic); anything but a 200 is posted again, as providers do;
* to callbacks' ``ReportDelivery`` over gRPC (``GrpcReceipts``), where no gateway runs (bench, chaos).

Both post from the simulator's event loop (grpc.aio, httpx's async client): one receipt per message,
many in flight at once, none holding a thread.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import logging
import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Protocol, TypeVar
from urllib.parse import urlencode

import grpc
import grpc.aio
import httptools
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from herald.providers._sim_http import HttpClient
from herald.providers._sim_sends import Outcome
from herald.providers.sns_messages import HASHES, string_to_sign
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc

logger = logging.getLogger("herald.providers.simulator")

# (provider, outcome) -> (status, code) as that provider words its receipt.
_RECEIPT_WORDING: dict[tuple[str, Outcome], tuple[str, str]] = {
    ("mmg", "delivered"): ("3", ""),
    ("mmg", "temporary"): ("4", ""),
    ("mmg", "permanent"): ("5", ""),
    ("firetext", "delivered"): ("0", ""),
    ("firetext", "temporary"): ("1", "102"),
    ("firetext", "permanent"): ("1", "101"),
    ("ses", "delivered"): ("Delivery", ""),
    ("ses", "temporary"): ("Bounce", "Transient"),
    ("ses", "permanent"): ("Bounce", "Permanent"),
}

# Any failure but a refusal of the receipt itself is worth posting again, as a provider retries any 5xx.
_FINAL_RPC_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
_POST_TIMEOUT_SECONDS = 5.0
# gRPC posts in flight at once: a thousand receipts a second still flow when callbacks takes 200 ms to
# answer each, yet a callbacks that has fallen further behind is not buried under ever more calls.
_GRPC_IN_FLIGHT = 256
# Webhook posts in flight at once, each on a keep-alive connection of its own (as many connections).
_WEBHOOK_IN_FLIGHT = 32
# Receipts falling due within this long of each other go out together (so up to this much late): started
# back to back, their gRPC calls share wake-ups and writes, which cut the simulator's CPU per receipt by
# about a third at a thousand a second (measured).
_TICK_SECONDS = 0.02
# gRPC's own reconnect backoff starts at 1 s; shorten it so a callbacks restart is noticed quickly.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# Where the simulator serves the certificate its SNS messages are signed with (SNS's names end in .pem).
SNS_CERTIFICATE_PATH: Final = "/_sns/SimpleNotificationService-simulator.pem"
SNS_TOPIC_ARN: Final = "arn:aws:sns:eu-west-2:123456789012:herald-ses-events"
# The simulator's stand-in for SNS's ConfirmSubscription action, which a SubscribeURL names.
SNS_SUBSCRIBE_PATH: Final = "/_sns/confirm-subscription"
WEBHOOK_PATHS: Final = {
    "mmg": "/notifications/sms/mmg",
    "firetext": "/notifications/sms/firetext",
    "ses": "/notifications/email/ses",
}


@dataclass(frozen=True, slots=True)
class Receipt:
    """One receipt as a webhook carries it."""

    provider: str
    reference: str
    to: str
    status: str
    code: str
    # The provider's own id for the message (MMG's reference, SES's messageId, SNS's MessageId).
    provider_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One post's outcome: `final` when posting it again cannot help."""

    taken: bool
    final: bool = False
    detail: str = ""


P = TypeVar("P")


class Transport(Protocol[P]):
    """How receipts travel. A receipt is prepared once, and a retry posts what was prepared: the same
    bytes, as a provider's retry is. At most `in_flight` posts go at once."""

    in_flight: int

    def prepare(self, provider: str, reference: str, to: str, status: str, code: str) -> P: ...

    async def post(self, prepared: P) -> Attempt: ...

    async def close(self) -> None: ...


class GrpcReceipts:
    """To callbacks' ReportDelivery over one long-lived grpc.aio channel (made on the running loop)."""

    in_flight = _GRPC_IN_FLIGHT

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._report = callbacks_pb2_grpc.CallbacksStub(self._channel).ReportDelivery

    def prepare(self, provider: str, reference: str, to: str, status: str, code: str) -> callbacks_pb2.DeliveryReceipt:
        return callbacks_pb2.DeliveryReceipt(provider=provider, reference=reference, status=status, code=code)

    async def post(self, prepared: callbacks_pb2.DeliveryReceipt) -> Attempt:
        try:
            await self._report(prepared, timeout=_POST_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            return Attempt(False, exc.code() in _FINAL_RPC_CODES, exc.code().name)
        return Attempt(True)

    async def close(self) -> None:
        # Closing the channel cancels the RPCs still in flight.
        await self._channel.close()


def _iso(at: datetime) -> str:
    """AWS's timestamps: 2026-01-01T10:00:00.000Z."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class SnsSigner:
    """Signs SNS messages as Amazon SNS does (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA), with a
    key and self-signed certificate of its own that the simulator serves at SNS_CERTIFICATE_PATH."""

    def __init__(self, signature_version: str = "2") -> None:
        if signature_version not in HASHES:
            raise ValueError(f"SignatureVersion must be one of {', '.join(HASHES)}")
        self._version = signature_version
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.eu-west-2.amazonaws.com")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .sign(self._key, hashes.SHA256())
        )
        self.pem = certificate.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: Mapping[str, str], certificate_url: str) -> dict[str, str]:
        signed = {**message, "SignatureVersion": self._version, "SigningCertURL": certificate_url}
        signature = self._key.sign(string_to_sign(signed), padding.PKCS1v15(), HASHES[self._version]())
        return {**signed, "Signature": base64.b64encode(signature).decode()}


def mmg_receipt(receipt: Receipt) -> dict[str, str]:
    body = {
        "reference": receipt.provider_id,
        "CID": receipt.reference,
        "MSISDN": receipt.to,
        "status": receipt.status,
        "deliverytime": receipt.at.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return body | ({"substatus": receipt.code} if receipt.code else {})


def firetext_receipt(receipt: Receipt) -> dict[str, str]:
    form = {"mobile": receipt.to, "status": receipt.status, "time": receipt.at.strftime("%Y-%m-%d %H:%M:%S")}
    return form | {"reference": receipt.reference} | ({"code": receipt.code} if receipt.code else {})


def ses_event(receipt: Receipt) -> dict[str, Any]:
    """SES's event (configuration-set event publishing), as SNS carries it in `Message`."""
    stamp = _iso(receipt.at)
    event: dict[str, Any] = {
        "eventType": receipt.status,
        "mail": {
            "timestamp": stamp,
            "messageId": receipt.provider_id,
            "sendingAccountId": "123456789012",
            "destination": [receipt.to],
            "headersTruncated": False,
            "tags": {"notification_id": [receipt.reference]},
        },
    }
    if receipt.status == "Bounce":
        permanent = receipt.code == "Permanent"
        event["bounce"] = {
            "bounceType": receipt.code,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": receipt.to,
                    "action": "failed",
                    "status": "5.1.1" if permanent else "4.4.7",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown" if permanent else "smtp; 421 try again later",
                }
            ],
            "timestamp": stamp,
            "feedbackId": f"{receipt.provider_id}-000000",
        }
    else:
        event["delivery"] = {
            "timestamp": stamp,
            "processingTimeMillis": 500,
            "recipients": [receipt.to],
            "smtpResponse": "250 2.6.0 Message received",
        }
    return event


class WebhookReceipts:
    """To the gateway's provider webhooks under `base_url`, each in its provider's format and with its
    credential; SES's through SNS, signed by `signer`, whose certificate is at `certificate_url`.
    Posted from the running loop; a receipt is prepared as the whole HTTP request, posted again as is."""

    in_flight = _WEBHOOK_IN_FLIGHT

    def __init__(self, base_url: str, credentials: Mapping[str, str], signer: SnsSigner, certificate_url: str) -> None:
        self._client = HttpClient(base_url, _POST_TIMEOUT_SECONDS)
        self._authorization = {
            provider: "Basic " + base64.b64encode(f"herald:{password}".encode()).decode()
            for provider, password in credentials.items()
        }
        self._signer = signer
        self._certificate_url = certificate_url

    def prepare(self, provider: str, reference: str, to: str, status: str, code: str) -> bytes:
        receipt = Receipt(provider, reference, to, status, code, str(uuid.uuid4()), datetime.now(UTC))
        if provider == "mmg":
            return self._ready("mmg", orjson.dumps(mmg_receipt(receipt)), {"Content-Type": "application/json"})
        if provider == "firetext":
            form = urlencode(firetext_receipt(receipt)).encode()
            return self._ready("firetext", form, {"Content-Type": "application/x-www-form-urlencoded"})
        message_id = receipt.provider_id
        notification = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": SNS_TOPIC_ARN,
            "Message": orjson.dumps(ses_event(receipt)).decode(),
            "Timestamp": _iso(receipt.at),
        }
        content = orjson.dumps(self._signer.sign(notification, self._certificate_url))
        # SNS posts JSON as text/plain, and names the message in headers too.
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": message_id,
            "x-amz-sns-topic-arn": SNS_TOPIC_ARN,
        }
        return self._ready("ses", content, headers)

    async def post(self, prepared: bytes) -> Attempt:
        try:
            status = await self._client.post(prepared)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            return Attempt(False, detail=type(exc).__name__)
        return Attempt(status == 200, detail=f"HTTP {status}")

    async def confirm_subscription(self, subscribe_url: str) -> Attempt:
        """The SubscriptionConfirmation SNS posts when an HTTPS subscription to the SES events' topic is
        made; the gateway confirms it by fetching `subscribe_url`."""
        now = datetime.now(UTC)
        token = uuid.uuid4().hex
        message = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": SNS_TOPIC_ARN,
            "Message": f"You have chosen to subscribe to the topic {SNS_TOPIC_ARN}.\nTo confirm the "
            "subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": f"{subscribe_url}?{urlencode({'Action': 'ConfirmSubscription', 'Token': token})}",
            "Timestamp": _iso(now),
        }
        content = orjson.dumps(self._signer.sign(message, self._certificate_url))
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "SubscriptionConfirmation",
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": SNS_TOPIC_ARN,
        }
        return await self.post(self._ready("ses", content, headers))

    def _ready(self, provider: str, content: bytes, headers: dict[str, str]) -> bytes:
        headers = headers | {"Authorization": self._authorization[provider]}
        return self._client.request(WEBHOOK_PATHS[provider], content, headers)

    async def close(self) -> None:
        self._client.close()


@dataclass(slots=True)
class _Due(Generic[P]):
    prepared: P
    provider: str
    reference: str
    first_due: float
    generation: int
    attempt: int = 1


class ReceiptPoster(Generic[P]):
    """Posts receipts through `transport` once they fall due, from the running event loop (make it there).

    Due times, retries included, wait in one heap under one loop timer, so a receipt waiting holds no
    thread and no task; at most the transport's `in_flight` posts are in flight at once. ``counts()`` may be read from
    any thread; everything else runs on the loop.
    """

    def __init__(
        self, transport: Transport[P], delay: float, retry_seconds: float, backoff: float, max_backoff: float
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._delay = delay
        self._retry_seconds = retry_seconds
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._due: list[tuple[float, int, _Due[P]]] = []
        self._sequence = itertools.count()  # orders receipts due at the same instant
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._pumped_at = -math.inf
        self._in_flight: set[asyncio.Task[None]] = set()
        # Bumped by reset(): receipts scheduled before it are not posted, or if already in flight not counted.
        self._generation = 0
        self._closed = False
        self._counts_lock = threading.Lock()
        self._posted = 0
        self._dropped = 0
        self._pending = 0  # scheduled, and neither taken nor dropped yet

    def schedule(self, provider: str, reference: str, outcome: Outcome, to: str) -> None:
        status, code = _RECEIPT_WORDING[(provider, outcome)]
        due = self._loop.time() + self._delay
        prepared = self._transport.prepare(provider, reference, to, status, code)
        with self._counts_lock:
            self._pending += 1
        self._push(due, _Due(prepared, provider, reference, due, self._generation))

    def counts(self) -> tuple[int, int, int]:
        """(posted, dropped, pending) since the last reset."""
        with self._counts_lock:
            return self._posted, self._dropped, self._pending

    def reset(self) -> None:
        self._generation += 1
        self._due.clear()
        with self._counts_lock:
            self._posted = self._dropped = self._pending = 0

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        waiting = len(self._due) + len(self._in_flight)
        self._due.clear()
        for task in self._in_flight:
            task.cancel()
        await self._transport.close()
        if waiting:
            logger.info("provider simulator stopped with %d receipts not yet posted", waiting)

    def _push(self, due: float, item: _Due[P]) -> None:
        heapq.heappush(self._due, (due, next(self._sequence), item))
        if due < self._timer_at:
            self._arm(max(due, self._pumped_at + _TICK_SECONDS))

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._pump)

    def _pump(self) -> None:
        """Start the posts that are due, as many as may be in flight; wake again for the next one due."""
        self._timer, self._timer_at = None, math.inf
        if self._closed:
            return
        now = self._pumped_at = self._loop.time()
        due = self._due
        while due and due[0][0] <= now and len(self._in_flight) < self._transport.in_flight:
            self._in_flight.add(self._loop.create_task(self._post(heapq.heappop(due)[2])))
        # With every slot taken, the next post to finish pumps again.
        if due and len(self._in_flight) < self._transport.in_flight:
            self._arm(max(due[0][0], now + _TICK_SECONDS))

    async def _post(self, item: _Due[P]) -> None:
        try:
            attempt = await self._transport.post(item.prepared)
        except Exception as exc:  # a transport's bug must not lose the receipt's accounting
            logger.exception("provider simulator: posting a receipt failed")
            attempt = Attempt(False, detail=type(exc).__name__)
        if self._closed:
            return
        self._in_flight.discard(asyncio.current_task())
        if item.generation == self._generation:
            self._done(item, attempt)
        if self._due and self._timer is None:
            self._pump()  # due receipts were waiting for a slot

    def _done(self, item: _Due[P], attempt: Attempt) -> None:
        if attempt.taken:
            with self._counts_lock:
                self._posted += 1
                self._pending -= 1
            return
        backoff = min(self._backoff * 2 ** (item.attempt - 1), self._max_backoff)
        retry_at = self._loop.time() + backoff
        if not attempt.final and retry_at - item.first_due <= self._retry_seconds:
            item.attempt += 1
            self._push(retry_at, item)
            return
        with self._counts_lock:
            self._dropped += 1
            self._pending -= 1
        logger.warning(
            "dropped %s receipt for %s after %d attempt(s): %s",
            item.provider,
            item.reference,
            item.attempt,
            attempt.detail,
        )
