"""Provider simulator: a small HTTP server speaking MMG's, Firetext's and SES's (v2) send APIs.

Herald's provider clients send to it exactly as they would to a real provider: MMG's JSON at
``POST /mmg/send``, Firetext's form at ``POST /firetext/send`` and SESv2's SendEmail at
``POST /v2/email/outbound-emails`` (SigV4-signed by the configured access key; answers
``{"MessageId": ...}``, errors with ``x-amzn-ErrorType`` as botocore expects). After ``receipt_delay``
seconds it reports a delivery receipt to Herald's ``callbacks`` service over gRPC, in that provider's
own vocabulary (``receipts_url`` empty), or, given the gateway's base URL as ``receipts_url``, posts it
as the provider itself would to the gateway's provider webhooks: MMG's JSON to
``/notifications/sms/mmg``, Firetext's form to ``/notifications/sms/firetext``, and SES's event inside an
Amazon SNS Notification to ``/notifications/email/ses``, signed as SNS signs (the certificate is served
at ``GET /_sns/SimpleNotificationService-simulator.pem``: the gateway must be told to trust this URL),
each with the provider's credential (HTTP Basic). Like SNS once a subscription is made, it first posts
a SubscriptionConfirmation there, whose SubscribeURL (``GET /_sns/confirm-subscription``, on the
simulator) the gateway fetches to confirm it (``sns_subscription_confirmed`` in ``/_stats``). The
recipient picks the outcome, so tests can provoke every case:

=====================================================  =============================================
recipient                                              outcome
=====================================================  =============================================
SMS ending ``7700900003`` or ``3333333``               temporary failure (MMG ``4``; Firetext ``1``/``102``)
SMS ending ``7700900002`` or ``2222222``               permanent failure (MMG ``5``; Firetext ``1``/``101``)
SMS ending ``7700900500``                              the send answers HTTP 500, no receipt
email starting ``temp-fail``                           SES ``Bounce``/``Transient``
email starting ``perm-fail``                           SES ``Bounce``/``Permanent``
email starting ``provider-error``                      the send answers HTTP 500, no receipt
anything else                                          delivered (MMG ``3``; Firetext ``0``; SES ``Delivery``)
=====================================================  =============================================

Like a provider with idempotent requests, each provider de-duplicates by Herald's reference (MMG's
``cid``, Firetext's ``reference``, SES's ``notification_id`` EmailTag or else the
``X-Herald-Notification-Id`` header): a repeat of a request it accepted gets the first answer and no
second receipt. Providers do not share what they accepted: the same reference accepted by MMG and then
by Firetext is two hand-offs, as it would be two text messages. An SES email may be up to 40 MB
(SES's limit); an SMS request up to 1 MiB.

Control endpoints, for tests and benchmarks:

* ``POST /_control`` sets whichever of these the JSON object names (``provider`` is ``mmg``,
  ``firetext``, ``ses`` or ``all``, the default):

  - ``{"fail_next": N, "status": S, "delay": D, "provider": P}`` applies to the next N sends. With
    ``status`` they are refused with that HTTP status (no hand-off); with only ``delay`` they are
    accepted at once but answered D seconds later, so a test can kill a dispatcher mid-hand-off; with
    neither they are refused with 503. ``fail_next: 0`` clears it.
  - ``{"fail_all": MODE, "status": S, "provider": P}`` refuses every send to P until cleared with
    ``fail_all: false``: MODE ``"status"`` answers S (default 503), ``"drop"`` closes the connection
    without an answer, ``"timeout"`` holds the request unanswered until the outage is cleared or
    for at most 30 s (then drops it). None of them hands the message off.
  - ``{"latency": L}`` answers every send L seconds late (0 clears it).

* ``GET /_stats`` ``{"sends": {reference: n}, "requests": {reference: n}, "duplicates": n, "total": n,
  "receipts_posted": n, "receipts_dropped": n, "receipts_pending": n}``: ``sends`` counts the
  providers that accepted each reference (more than 1 means the message went out twice),
  ``requests`` every send request naming it, ``duplicates`` the repeats answered from the
  de-duplication, ``total`` the accepted hand-offs.
* ``GET /_emails`` ``{"emails": {reference: {"reply_to": [...], "headers": {name: value}}}}``: for each
  accepted email that had any, its reply-to addresses and headers beyond the notification id
  (``List-Unsubscribe`` and ``List-Unsubscribe-Post``), as SES received them.
* ``POST /_inbound`` ``{"provider": "mmg" | "firetext", "to": NUMBER, "from": NUMBER, "text": ...}``
  (with ``receipts_url``): someone texts Herald's inbound number ``to``, and the provider posts it to the
  gateway's inbound webhook in its own format (``_sim_inbound.py``); the gateway's answer is passed back
  (502 if it was not 200).
* ``POST /_reset`` clears the counters, what was accepted, the controls and any receipt not yet posted.

A receipt that is not taken (callbacks or the gateway unreachable; over gRPC any answer but a refusal of
the receipt itself, over HTTP any answer but 200, as providers post again) is retried with doubling
backoff (from ``receipt_backoff``, capped at ``receipt_max_backoff``) for ``receipt_retry_seconds`` (10
minutes by default); then it counts in ``receipts_dropped``.
"""

from __future__ import annotations

import functools
import logging
import signal
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import orjson

from herald.providers._sim_inbound import InboundPoster
from herald.providers._sim_receipts import (
    SNS_CERTIFICATE_PATH,
    SNS_SUBSCRIBE_PATH,
    SNS_TOPIC_ARN,
    GrpcReceipts,
    ReceiptPoster,
    SnsSigner,
    Transport,
    WebhookReceipts,
)
from herald.providers._sim_sends import (
    DROP,
    MAX_BODY_BYTES,
    SES_MAX_BODY_BYTES,
    SES_MAX_MESSAGE_BYTES,
    SES_SEND_EMAIL_PATH,
    Answer,
    BadRequest,
    Send,
    error,
    injected,
    json_object,
    parse_firetext,
    parse_mmg,
    parse_ses,
    refusal,
)
from herald.settings import Settings

__all__ = ["PROVIDERS", "SES_MAX_MESSAGE_BYTES", "SES_SEND_EMAIL_PATH", "ProviderSimulator", "serve"]

logger = logging.getLogger(__name__)

OutageMode = Literal["status", "drop", "timeout"]

PROVIDERS = ("mmg", "firetext", "ses")

_DEFAULTS = Settings()
_TIMEOUT_OUTAGE_HOLD_SECONDS = 30.0


@dataclass(slots=True)
class _NextFailures:
    remaining: int = 0
    status: int | None = None
    delay: float = 0.0
    provider: str = "all"


@dataclass(frozen=True, slots=True)
class _Outage:
    mode: OutageMode
    status: int


def _status(data: dict[str, Any], default: int | None) -> int | None:
    status = data.get("status", default)
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise BadRequest("status must be an HTTP status code")
    return status


def _seconds(data: dict[str, Any], key: str) -> float:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise BadRequest(f"{key} must be a non-negative number of seconds")
    return float(value)


def _providers(data: dict[str, Any]) -> tuple[str, ...]:
    provider = data.get("provider", "all")
    if provider == "all":
        return PROVIDERS
    if provider not in PROVIDERS:
        raise BadRequest(f"provider must be one of {', '.join(PROVIDERS)} or all")
    return (str(provider),)


_CONTROL_KEYS = frozenset({"fail_next", "fail_all", "latency", "status", "delay", "provider"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Benchmarks open many connections at once; the stdlib default backlog of 5 would refuse some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: ProviderSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("provider simulator: unhandled error serving a request")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive lets the clients' connection pools reuse connections.
    protocol_version = "HTTP/1.1"
    server: _Server
    # Idle keep-alive connections are dropped after this long, freeing their threads.
    timeout = 60
    # Headers and body go out as two writes; with Nagle on, the second waits for a delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if not 0 <= length <= self.server.simulator.max_body_bytes(url.path):
            # The body cannot be skipped reliably, so the connection cannot be reused either.
            self.close_connection = True
            self._reply(Answer(400 if length < 0 else 413, error("bad_request", "bad or oversized Content-Length")))
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.simulator.handle(method, url.path, body, headers)
        if answer.drop:
            self.close_connection = True
            return
        self._reply(answer)

    def _reply(self, answer: Answer) -> None:
        body = orjson.dumps(answer.payload) if answer.raw is None else answer.raw
        try:
            self.send_response(answer.status)
            if answer.raw is None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout, a killed dispatcher); nothing is left to tell it.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry only method and path, never a recipient.
        logger.debug("%s " + format, self.address_string(), *args)


Parser = Callable[[bytes, Mapping[str, str]], Send]


class ProviderSimulator:
    """The simulator as an object: ``start()`` serves from background threads, ``stop()`` ends it.

    ``ses_access_key_id`` and ``ses_secret_access_key`` are the SES credentials it accepts (by default
    the development ones in ``Settings``). With ``receipts_url`` (the gateway's base URL) receipts are
    posted to the gateway's provider webhooks with ``callback_credentials`` (provider -> password, by
    default the development ones), SES's in SNS messages of ``sns_signature_version``; without it, to
    ``callbacks_target`` over gRPC.
    """

    def __init__(
        self,
        host: str,
        port: int,
        callbacks_target: str,
        receipt_delay: float,
        *,
        receipt_retry_seconds: float = 600.0,
        receipt_backoff: float = 0.2,
        receipt_max_backoff: float = 5.0,
        ses_access_key_id: str = _DEFAULTS.ses_access_key_id,
        ses_secret_access_key: str = _DEFAULTS.ses_secret_access_key,
        receipts_url: str = "",
        callback_credentials: Mapping[str, str] | None = None,
        sns_signature_version: str = "2",
    ) -> None:
        self._host = host
        self._receipts_url = receipts_url
        self._callback_credentials = dict(callback_credentials or _DEFAULTS.callback_credentials())
        self._sns_signer = SnsSigner(sns_signature_version) if receipts_url else None
        # Received texts go to the gateway's inbound webhooks, beside the receipts' ones.
        self._inbound = InboundPoster(receipts_url, self._callback_credentials) if receipts_url else None
        self._port = port
        self._callbacks_target = callbacks_target
        self._receipt_delay = receipt_delay
        self._receipt_retry = (receipt_retry_seconds, receipt_backoff, receipt_max_backoff)
        self._lock = threading.Lock()
        # Signalled when an outage changes or the simulator stops, for requests held by a timeout outage.
        self._changed = threading.Condition(self._lock)
        # Grow by one entry per reference until /_reset: fine for tests and benchmark runs.
        self._accepted: dict[tuple[str, str], dict[str, Any]] = {}
        self._sends: dict[str, int] = {}
        self._emails: dict[str, Mapping[str, Any]] = {}
        self._requests: dict[str, int] = {}
        self._duplicates = 0
        self._total = 0
        self._next_failures = _NextFailures()
        self._outages: dict[str, _Outage] = {}
        self._latency = 0.0
        self._server: _Server | None = None
        self._poster: ReceiptPoster | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._subscriber: threading.Thread | None = None
        self._subscribed = False  # the gateway fetched the SubscribeURL: SNS's subscription is confirmed
        parse_signed_ses = functools.partial(parse_ses, ses_access_key_id, ses_secret_access_key)
        send_routes: dict[str, Parser] = {"/mmg/send": parse_mmg, "/firetext/send": parse_firetext}
        send_routes[SES_SEND_EMAIL_PATH] = parse_signed_ses
        self._routes: dict[str, tuple[str, Callable[[bytes, Mapping[str, str]], Answer]]] = {
            path: ("POST", functools.partial(self._send, parse)) for path, parse in send_routes.items()
        }
        self._routes["/_stats"] = ("GET", lambda body, headers: Answer(200, self.stats()))
        self._routes["/_reset"] = ("POST", lambda body, headers: self._reset())
        self._routes["/_emails"] = ("GET", lambda body, headers: self._sent_emails())
        self._routes["/_control"] = ("POST", lambda body, headers: self._set_control(body))
        self._routes["/_inbound"] = ("POST", lambda body, headers: self._receive_inbound(body))
        if self._sns_signer is not None:
            pem = self._sns_signer.pem
            certificate = Answer(200, headers=(("Content-Type", "application/x-pem-file"),), raw=pem)
            self._routes[SNS_CERTIFICATE_PATH] = ("GET", lambda body, headers: certificate)
            self._routes[SNS_SUBSCRIBE_PATH] = ("GET", lambda body, headers: self._confirm_subscription())

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("provider simulator already started")
        # Binding happens in the constructor, so the port is listening when start() returns.
        self._server = _Server((self._host, self._port), self)
        self._port = self._server.server_port
        transport = self._receipt_transport()
        self._poster = ReceiptPoster(transport, self._receipt_delay, *self._receipt_retry)
        self._poster.start()
        if isinstance(transport, WebhookReceipts):
            self._subscriber = threading.Thread(
                target=self._subscribe, args=(transport,), name="provider-sim-sns-subscription", daemon=True
            )
            self._subscriber.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="provider-sim-http",
            daemon=True,
        )
        self._thread.start()
        receipts_to = self._receipts_url or self._callbacks_target
        logger.info("provider simulator listening on %s, receipts to %s", self.url, receipts_to)

    def _receipt_transport(self) -> Transport:
        if self._sns_signer is None:
            return GrpcReceipts(self._callbacks_target)
        certificate_url = self.url + SNS_CERTIFICATE_PATH
        return WebhookReceipts(self._receipts_url, self._callback_credentials, self._sns_signer, certificate_url)

    def _subscribe(self, transport: WebhookReceipts) -> None:
        """As SNS does once an HTTPS subscription is made: a SubscriptionConfirmation, posted again with the
        receipts' backoff until answered 200 (the gateway may not be up yet), for as long as a receipt."""
        retry_seconds, backoff, max_backoff = self._receipt_retry
        deadline = time.monotonic() + retry_seconds
        attempt = 0
        while not self._stopping.is_set():
            outcome = transport.confirm_subscription(self.url + SNS_SUBSCRIBE_PATH)
            if outcome.taken:
                return
            if time.monotonic() >= deadline:
                logger.warning("SNS subscription confirmation not taken: %s", outcome.detail)
                return
            self._stopping.wait(min(backoff * 2**attempt, max_backoff))
            attempt += 1

    def _confirm_subscription(self) -> Answer:
        with self._lock:
            self._subscribed = True
        # What SNS's ConfirmSubscription action answers.
        arn = f"{SNS_TOPIC_ARN}:{uuid.uuid4()}"
        xml = (
            '<ConfirmSubscriptionResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><ConfirmSubscriptionResult>'
            f"<SubscriptionArn>{arn}</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>"
        )
        return Answer(200, headers=(("Content-Type", "text/xml"),), raw=xml.encode())

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            # Release requests held by a timeout outage, or shutdown() would wait for them.
            self._changed.notify_all()
            if self._stopped:
                return
            self._stopped = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        if self._subscriber is not None:
            self._subscriber.join()  # at most one post in flight: it closes the client the poster stops
        if self._poster is not None:
            self._poster.stop()
        if self._inbound is not None:
            self._inbound.close()

    def wait(self) -> None:
        """Block until ``stop()`` is called (or, under ``serve()``, a SIGINT/SIGTERM arrives)."""
        self._stopping.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def max_body_bytes(self, path: str) -> int:
        return SES_MAX_BODY_BYTES if path == SES_SEND_EMAIL_PATH else MAX_BODY_BYTES

    def handle(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """Answer one HTTP request; ``headers`` are keyed by lower-case name."""
        route = self._routes.get(path)
        if route is None:
            return Answer(404, error("not_found", f"no such endpoint: {path}"))
        expected, action = route
        if method != expected:
            return Answer(405, error("method_not_allowed", f"{path} takes {expected}"))
        try:
            return action(body, headers)
        except BadRequest as exc:
            provider = "ses" if path == SES_SEND_EMAIL_PATH else ""
            return refusal(provider, exc.status, "bad_request", str(exc), ses_code=exc.ses_code)
        except Exception:
            logger.exception("provider simulator: failed to handle %s %s", method, path)
            return Answer(500, error("internal_error", "simulator failure"))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            current: dict[str, Any] = {
                "sends": dict(self._sends),
                "requests": dict(self._requests),
                "duplicates": self._duplicates,
                "total": self._total,
            }
            if self._sns_signer is not None:
                current["sns_subscription_confirmed"] = self._subscribed
        posted, dropped, pending = self._poster.counts() if self._poster is not None else (0, 0, 0)
        return current | {"receipts_posted": posted, "receipts_dropped": dropped, "receipts_pending": pending}

    def _send(self, parse: Parser, body: bytes, headers: Mapping[str, str]) -> Answer:
        send = parse(body, headers)
        provider, reference = send.provider, send.reference
        with self._lock:
            self._requests[reference] = self._requests.get(reference, 0) + 1
            latency = self._latency
        if latency:
            self._stopping.wait(latency)
        if send.outcome == "error":
            return refusal(provider, 500, "provider_error", "simulated provider error")
        with self._lock:
            outage = self._outages.get(provider)
            if outage is not None and outage.mode == "timeout":
                # Held unanswered until the outage ends, so the client times out first. Bounded: each held
                # request holds a thread, and clients gave up long before.
                self._changed.wait_for(
                    lambda: self._stopping.is_set() or self._outages.get(provider) is not outage,
                    timeout=_TIMEOUT_OUTAGE_HOLD_SECONDS,
                )
                return DROP
            if outage is not None:
                return DROP if outage.mode == "drop" else injected(provider, outage.status)
            refuse_with, delay = self._take_next_failure(provider)
            answer = self._accept(send) if refuse_with is None else injected(provider, refuse_with)
        if delay:
            self._stopping.wait(delay)
        return answer

    def _sent_emails(self) -> Answer:
        with self._lock:
            return Answer(200, {"emails": dict(self._emails)})

    def _take_next_failure(self, provider: str) -> tuple[int | None, float]:
        """(status to refuse with, seconds to delay the answer) for this send; call with the lock held."""
        failures = self._next_failures
        if failures.remaining <= 0 or failures.provider not in ("all", provider):
            return None, 0.0
        failures.remaining -= 1
        return failures.status, failures.delay

    def _accept(self, send: Send) -> Answer:
        """The answer for an accepted send, the first one's for a repeat; call with the lock held."""
        key = (send.provider, send.reference)
        first = self._accepted.get(key)
        if first is not None:
            self._duplicates += 1
            return Answer(200, first)
        # Counted before any delay: the provider holds the message even if its answer is lost.
        self._accepted[key] = send.answer
        if send.details:
            self._emails[send.reference] = send.details
        self._sends[send.reference] = self._sends.get(send.reference, 0) + 1
        self._total += 1
        if self._poster is not None:
            self._poster.schedule(send.provider, send.reference, send.outcome, send.to)
        return Answer(200, send.answer)

    def _set_control(self, body: bytes) -> Answer:
        data = json_object(body)
        unknown = set(data) - _CONTROL_KEYS
        if unknown:
            raise BadRequest(f"unknown control field(s): {', '.join(sorted(unknown))}")
        if not {"fail_next", "fail_all", "latency"} & set(data):
            raise BadRequest("name fail_next, fail_all or latency")
        providers = _providers(data)
        next_failures: _NextFailures | None = None
        outage: _Outage | Literal[False] | None = False  # False: no change
        if "fail_next" in data:
            count = data["fail_next"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise BadRequest("fail_next must be a non-negative integer")
            delay = _seconds(data, "delay")
            status = _status(data, None if delay else 503)
            provider = providers[0] if len(providers) == 1 else "all"
            next_failures = _NextFailures(remaining=count, status=status, delay=delay, provider=provider)
        if "fail_all" in data:
            mode = data["fail_all"]
            if mode is False or mode is None:
                outage = None
            elif mode in ("status", "drop", "timeout"):
                outage = _Outage(mode=mode, status=_status(data, 503) or 503)
            else:
                raise BadRequest('fail_all must be "status", "drop", "timeout" or false')
        latency = _seconds(data, "latency") if "latency" in data else None
        with self._lock:
            if next_failures is not None:
                self._next_failures = next_failures
            if outage is not False:
                for provider in providers:
                    if outage is None:
                        self._outages.pop(provider, None)
                    else:
                        self._outages[provider] = outage
                self._changed.notify_all()
            if latency is not None:
                self._latency = latency
            return Answer(200, self._controls())

    def _controls(self) -> dict[str, Any]:
        """The controls in force; call with the lock held."""
        failures = self._next_failures
        return {
            "fail_next": failures.remaining,
            "status": failures.status,
            "delay": failures.delay,
            "provider": failures.provider,
            "fail_all": {name: {"mode": o.mode, "status": o.status} for name, o in sorted(self._outages.items())},
            "latency": self._latency,
        }

    def _receive_inbound(self, body: bytes) -> Answer:
        if self._inbound is None:
            return Answer(503, error("no_gateway", "inbound texts need the gateway's URL (receipts_url)"))
        return self._inbound.handle(body)

    def _reset(self) -> Answer:
        with self._lock:
            self._accepted.clear()
            self._emails.clear()
            self._sends.clear()
            self._requests.clear()
            self._duplicates = 0
            self._total = 0
            self._next_failures = _NextFailures()
            self._outages.clear()
            self._latency = 0.0
            self._changed.notify_all()
        if self._poster is not None:
            self._poster.reset()
        return Answer(200, {"reset": True})


def serve(
    host: str,
    port: int,
    callbacks_target: str,
    receipt_delay: float,
    *,
    ses_access_key_id: str = _DEFAULTS.ses_access_key_id,
    ses_secret_access_key: str = _DEFAULTS.ses_secret_access_key,
    receipts_url: str = "",
    callback_credentials: Mapping[str, str] | None = None,
) -> None:
    """Run the simulator until SIGINT/SIGTERM; ``herald provider-sim`` calls this.

    Signals can only be caught in the main thread: to run the simulator anywhere else, use
    ``ProviderSimulator`` and its ``stop()``.
    """
    simulator = ProviderSimulator(
        host,
        port,
        callbacks_target,
        receipt_delay,
        ses_access_key_id=ses_access_key_id,
        ses_secret_access_key=ses_secret_access_key,
        receipts_url=receipts_url,
        callback_credentials=callback_credentials,
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only flag it: the teardown joins threads, which is no work for a signal handler.
        simulator._stopping.set()

    # signal.signal only works in the main thread; elsewhere the caller stops us another way.
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        simulator.start()
        simulator.wait()
    finally:
        simulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
