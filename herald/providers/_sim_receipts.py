"""The provider simulator's receipts, posted when due and retried through outages, by one of two ways:

* to the gateway's provider webhooks, as real providers post them (``WebhookReceipts``): MMG's JSON,
  Firetext's form, and SES's events inside Amazon SNS Notification messages signed as SNS signs them,
  each with that provider's credential (HTTP Basic); anything but a 200 is posted again, as providers do;
* to callbacks' ``ReportDelivery`` over gRPC (``GrpcReceipts``), where no gateway runs (bench, chaos).
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import grpc
import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

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
_RECEIPT_WORKERS = 16
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
    """One receipt: posted again, it is the same bytes, as a provider's retry is."""

    provider: str
    reference: str
    to: str
    status: str
    code: str
    # The provider's own id for the message (MMG's reference, SES's messageId, SNS's MessageId).
    provider_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One post's outcome: `final` when posting it again cannot help."""

    taken: bool
    final: bool = False
    detail: str = ""


class Transport(Protocol):
    def post(self, receipt: Receipt) -> Attempt: ...

    def close(self) -> None: ...


class GrpcReceipts:
    """To callbacks' ReportDelivery over one long-lived channel."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = callbacks_pb2_grpc.CallbacksStub(self._channel)

    def post(self, receipt: Receipt) -> Attempt:
        message = callbacks_pb2.DeliveryReceipt(
            provider=receipt.provider, reference=receipt.reference, status=receipt.status, code=receipt.code
        )
        try:
            self._stub.ReportDelivery(message, timeout=_POST_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            return Attempt(False, exc.code() in _FINAL_RPC_CODES, exc.code().name)
        return Attempt(True)

    def close(self) -> None:
        # Closing the channel cancels in-flight RPCs, so the pool drains at once.
        self._channel.close()


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
    credential; SES's through SNS, signed by `signer`, whose certificate is at `certificate_url`."""

    def __init__(self, base_url: str, credentials: Mapping[str, str], signer: SnsSigner, certificate_url: str) -> None:
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=_POST_TIMEOUT_SECONDS)
        self._credentials = dict(credentials)
        self._signer = signer
        self._certificate_url = certificate_url

    def post(self, receipt: Receipt) -> Attempt:
        headers: dict[str, str]
        if receipt.provider == "mmg":
            content = orjson.dumps(mmg_receipt(receipt))
            headers = {"Content-Type": "application/json"}
        elif receipt.provider == "firetext":
            content = urlencode(firetext_receipt(receipt)).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        else:
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
        return self._post(receipt.provider, content, headers)

    def confirm_subscription(self, subscribe_url: str) -> Attempt:
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
        return self._post("ses", content, headers)

    def _post(self, provider: str, content: bytes, headers: dict[str, str]) -> Attempt:
        try:
            answer = self._client.post(
                WEBHOOK_PATHS[provider], content=content, headers=headers, auth=("herald", self._credentials[provider])
            )
        except httpx.HTTPError as exc:
            return Attempt(False, detail=type(exc).__name__)
        return Attempt(answer.status_code == 200, detail=f"HTTP {answer.status_code}")

    def close(self) -> None:
        self._client.close()


@dataclass(order=True, slots=True)
class _DueReceipt:
    due: float
    sequence: int
    generation: int = field(compare=False)
    first_due: float = field(compare=False)
    attempt: int = field(compare=False)
    receipt: Receipt = field(compare=False)


class ReceiptPoster:
    """Posts receipts through `transport` once they fall due.

    One scheduler thread holds the due times, retries included, so a receipt waiting to be retried
    holds no thread; a small pool does the posts.
    """

    def __init__(
        self, transport: Transport, delay: float, retry_seconds: float, backoff: float, max_backoff: float
    ) -> None:
        self._transport = transport
        self._delay = delay
        self._retry_seconds = retry_seconds
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._pool = ThreadPoolExecutor(max_workers=_RECEIPT_WORKERS, thread_name_prefix="provider-sim-receipt")
        self._cond = threading.Condition()
        self._due: list[_DueReceipt] = []
        self._sequence = itertools.count()
        # Bumped by reset(): receipts scheduled before it are not posted, or if already in flight not counted.
        self._generation = 0
        self._closed = threading.Event()
        self._scheduler = threading.Thread(target=self._run, name="provider-sim-receipts", daemon=True)
        self._posted = 0
        self._dropped = 0
        self._in_flight = 0

    def start(self) -> None:
        self._scheduler.start()

    def schedule(self, provider: str, reference: str, outcome: Outcome, to: str) -> None:
        status, code = _RECEIPT_WORDING[(provider, outcome)]
        receipt = Receipt(provider, reference, to, status, code)
        due = time.monotonic() + self._delay
        with self._cond:
            heapq.heappush(self._due, _DueReceipt(due, next(self._sequence), self._generation, due, 1, receipt))
            self._cond.notify()

    def counts(self) -> tuple[int, int, int]:
        """(posted, dropped, pending) since the last reset."""
        with self._cond:
            return self._posted, self._dropped, len(self._due) + self._in_flight

    def reset(self) -> None:
        with self._cond:
            self._generation += 1
            self._due.clear()
            self._posted = 0
            self._dropped = 0
            self._in_flight = 0

    def stop(self) -> None:
        with self._cond:
            self._closed.set()
            pending = len(self._due)
            self._due.clear()
            self._cond.notify()
        if self._scheduler.is_alive():
            self._scheduler.join()
        self._transport.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if pending:
            logger.info("provider simulator stopped with %d receipts not yet posted", pending)

    def _run(self) -> None:
        with self._cond:
            while not self._closed.is_set():
                if not self._due:
                    self._cond.wait()
                    continue
                wait = self._due[0].due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                item = heapq.heappop(self._due)
                self._in_flight += 1
                self._pool.submit(self._post, item)

    def _post(self, item: _DueReceipt) -> None:
        attempt = self._transport.post(item.receipt)
        with self._cond:
            if item.generation != self._generation or self._closed.is_set():
                return
            self._in_flight -= 1
            if attempt.taken:
                self._posted += 1
                return
            backoff = min(self._backoff * 2 ** (item.attempt - 1), self._max_backoff)
            retry_at = time.monotonic() + backoff
            if not attempt.final and retry_at - item.first_due <= self._retry_seconds:
                item.due, item.sequence, item.attempt = retry_at, next(self._sequence), item.attempt + 1
                heapq.heappush(self._due, item)
                self._cond.notify()
                return
            self._dropped += 1
        logger.warning(
            "dropped %s receipt for %s after %d attempt(s): %s",
            item.receipt.provider,
            item.receipt.reference,
            item.attempt,
            attempt.detail,
        )
