"""Provider simulator: a small HTTP server speaking MMG's, Firetext's and SES's (v2) send APIs.

Herald's provider clients send to it exactly as they would to a real provider: MMG's JSON at
``POST /mmg/send``, Firetext's form at ``POST /firetext/send`` and SESv2's SendEmail at
``POST /v2/email/outbound-emails`` (SigV4-signed by the configured access key; answers
``{"MessageId": ...}``, errors with ``x-amzn-ErrorType`` as botocore expects). After ``receipt_delay``
seconds (up to 20 ms more: receipts falling due together go out together) it reports a delivery receipt
to Herald's ``callbacks`` service over gRPC, in that provider's own vocabulary (``receipts_url`` empty),
or, given the gateway's base URL as ``receipts_url``, posts it as the provider itself would to the
gateway's provider webhooks: MMG's JSON to ``/notifications/sms/mmg``, Firetext's form to
``/notifications/sms/firetext``, and SES's event inside an Amazon SNS Notification to
``/notifications/email/ses``, signed as SNS signs (the certificate is served at
``GET /_sns/SimpleNotificationService-simulator.pem``: the gateway must be told to trust this URL), each
with the provider's credential (HTTP Basic). Like SNS once a subscription is made, it first posts a
SubscriptionConfirmation there, whose SubscribeURL (``GET /_sns/confirm-subscription``, on the
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
* ``GET /_emails`` ``{"emails": {reference: {"reply_to": [...], "headers": {name: value}}}, "parts":
  {reference: {"text": ..., "html": ...}}}``: for each accepted email that had any, its reply-to
  addresses and headers beyond the notification id (``List-Unsubscribe`` and ``List-Unsubscribe-Post``),
  and each one's plain-text and HTML parts, as SES received them.
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

import asyncio
import functools
import logging
import signal
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Literal, Self

import uvloop

from herald.providers._sim_http import HttpServer
from herald.providers._sim_inbound import InboundPoster
from herald.providers._sim_receipts import (
    SNS_CERTIFICATE_PATH,
    SNS_SUBSCRIBE_PATH,
    SNS_TOPIC_ARN,
    GrpcReceipts,
    ReceiptPoster,
    SnsSigner,
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
# A request body past this is parsed (and for SES, its signature checked) on a worker thread: a 40 MB
# email takes a good part of a second, which the loop answering every other request cannot spare.
_PARSE_ON_LOOP_BYTES = 1 << 20

Reply = Answer | Awaitable[Answer]


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


async def _settled(reply: Reply) -> Answer:
    return reply if isinstance(reply, Answer) else await reply


async def _after(seconds: float, answer: Answer) -> Answer:
    await asyncio.sleep(seconds)
    return answer


_CONTROL_KEYS = frozenset({"fail_next", "fail_all", "latency", "status", "delay", "provider"})

Parser = Callable[[bytes, Mapping[str, str]], Send]
Action = Callable[[bytes, Mapping[str, str]], Reply]


class ProviderSimulator:
    """The simulator as an object: ``start()`` serves from a background thread, ``stop()`` ends it.

    One thread runs one event loop (uvloop) that serves HTTP, posts the receipts and holds what waits
    (latency, delayed answers, requests held by an outage), so a message costs no thread switch and no
    lock contention: the simulator shares the machine with the pipeline it stands in for. Its state is
    changed on that loop only; ``stats()`` may be read from any thread.

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
        self._port = port
        self._callbacks_target = callbacks_target
        self._receipt_delay = receipt_delay
        self._receipt_retry = (receipt_retry_seconds, receipt_backoff, receipt_max_backoff)
        # Guards what stats() reads from other threads; only the loop writes it.
        self._lock = threading.Lock()
        # Grow by one entry per reference until /_reset: fine for tests and benchmark runs.
        self._accepted: dict[tuple[str, str], dict[str, Any]] = {}
        self._sends: dict[str, int] = {}
        self._emails: dict[str, Mapping[str, Any]] = {}
        self._parts: dict[str, Mapping[str, str]] = {}
        self._requests: dict[str, int] = {}
        self._duplicates = 0
        self._total = 0
        self._next_failures = _NextFailures()
        self._outages: dict[str, _Outage] = {}
        self._latency = 0.0
        self._changed = asyncio.Event()  # set (and replaced) when the outages change, for held requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: HttpServer | None = None
        self._poster: ReceiptPoster[Any] | None = None
        self._inbound: InboundPoster | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._subscribed = False  # the gateway fetched the SubscribeURL: SNS's subscription is confirmed
        parse_signed_ses = functools.partial(parse_ses, ses_access_key_id, ses_secret_access_key)
        send_routes: dict[str, Parser] = {"/mmg/send": parse_mmg, "/firetext/send": parse_firetext}
        send_routes[SES_SEND_EMAIL_PATH] = parse_signed_ses
        self._routes: dict[str, tuple[str, Action]] = {
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
        if self._thread is not None:
            raise RuntimeError("provider simulator already started")
        # Bound here, so the port is listening when start() returns (and a port in use fails here).
        sock = socket.create_server((self._host, self._port), backlog=1024)
        self._port = int(sock.getsockname()[1])
        started = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(sock, started, failed), name="provider-sim", daemon=True
        )
        self._thread.start()
        started.wait()
        if failed:
            self._thread.join()
            raise failed[0]
        receipts_to = self._receipts_url or self._callbacks_target
        logger.info("provider simulator listening on %s, receipts to %s", self.url, receipts_to)

    def _run(self, sock: socket.socket, started: threading.Event, failed: list[BaseException]) -> None:
        loop = self._loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open(sock))
        except BaseException as exc:
            failed.append(exc)
            sock.close()
            loop.close()
            started.set()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self, sock: socket.socket) -> None:
        """On the loop: serve, and make what must live on it (grpc.aio's channel, httpx's async clients)."""
        self._http = HttpServer(self.handle, self.max_body_bytes)
        if self._sns_signer is None:
            self._poster = ReceiptPoster(
                GrpcReceipts(self._callbacks_target), self._receipt_delay, *self._receipt_retry
            )
        else:
            certificate_url = self.url + SNS_CERTIFICATE_PATH
            webhooks = WebhookReceipts(
                self._receipts_url, self._callback_credentials, self._sns_signer, certificate_url
            )
            self._poster = ReceiptPoster(webhooks, self._receipt_delay, *self._receipt_retry)
            self._subscriber = asyncio.create_task(self._subscribe(webhooks))
            # Received texts go to the gateway's inbound webhooks, beside the receipts' ones.
            self._inbound = InboundPoster(self._receipts_url, self._callback_credentials)
        await self._http.start(sock)

    async def _close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._subscriber is not None:
            self._subscriber.cancel()
        # What waits (held requests, latency) ends with its connection; anything else left is cancelled.
        current = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not current]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        if self._poster is not None:
            await self._poster.close()
        if self._inbound is not None:
            await self._inbound.close()
        await asyncio.get_running_loop().shutdown_default_executor()

    async def _subscribe(self, transport: WebhookReceipts) -> None:
        """As SNS does once an HTTPS subscription is made: a SubscriptionConfirmation, posted again with the
        receipts' backoff until answered 200 (the gateway may not be up yet), for as long as a receipt."""
        retry_seconds, backoff, max_backoff = self._receipt_retry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_seconds
        attempt = 0
        while True:
            outcome = await transport.confirm_subscription(self.url + SNS_SUBSCRIBE_PATH)
            if outcome.taken:
                return
            if loop.time() >= deadline:
                logger.warning("SNS subscription confirmation not taken: %s", outcome.detail)
                return
            await asyncio.sleep(min(backoff * 2**attempt, max_backoff))
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
            if self._stopped:
                return
            self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            # The loop closes the listener and every connection (releasing held requests), then the rest.
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

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

    def handle(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Answer one HTTP request, now or (an awaitable) later, on the loop; ``headers`` are keyed by
        lower-case name."""
        route = self._routes.get(path)
        if route is None:
            return Answer(404, error("not_found", f"no such endpoint: {path}"))
        expected, action = route
        if method != expected:
            return Answer(405, error("method_not_allowed", f"{path} takes {expected}"))
        try:
            reply = action(body, headers)
        except Exception as exc:
            return self._failed(method, path, exc)
        return reply if isinstance(reply, Answer) else self._later(method, path, reply)

    async def _later(self, method: str, path: str, reply: Awaitable[Answer]) -> Answer:
        try:
            return await reply
        except Exception as exc:
            return self._failed(method, path, exc)

    def _failed(self, method: str, path: str, exc: Exception) -> Answer:
        if isinstance(exc, BadRequest):
            provider = "ses" if path == SES_SEND_EMAIL_PATH else ""
            return refusal(provider, exc.status, "bad_request", str(exc), ses_code=exc.ses_code)
        logger.error("provider simulator: failed to handle %s %s", method, path, exc_info=exc)
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

    def _send(self, parse: Parser, body: bytes, headers: Mapping[str, str]) -> Reply:
        if len(body) > _PARSE_ON_LOOP_BYTES:
            return self._send_parsed_aside(parse, body, headers)
        return self._requested(parse(body, headers))

    async def _send_parsed_aside(self, parse: Parser, body: bytes, headers: Mapping[str, str]) -> Answer:
        send = await asyncio.get_running_loop().run_in_executor(None, parse, body, headers)
        return await _settled(self._requested(send))

    def _requested(self, send: Send) -> Reply:
        reference = send.reference
        with self._lock:
            self._requests[reference] = self._requests.get(reference, 0) + 1
        if self._latency:
            return self._after_latency(self._latency, send)
        return self._decided(send)

    async def _after_latency(self, latency: float, send: Send) -> Answer:
        await asyncio.sleep(latency)
        return await _settled(self._decided(send))

    def _decided(self, send: Send) -> Reply:
        provider = send.provider
        if send.outcome == "error":
            return refusal(provider, 500, "provider_error", "simulated provider error")
        outage = self._outages.get(provider)
        if outage is not None:
            if outage.mode == "timeout":
                return self._held(provider, outage)
            return DROP if outage.mode == "drop" else injected(provider, outage.status)
        refuse_with, delay = self._take_next_failure(provider)
        answer = self._accept(send) if refuse_with is None else injected(provider, refuse_with)
        # With a delay, accepted at once but answered late: the provider holds the message even if its
        # answer is lost.
        return _after(delay, answer) if delay else answer

    async def _held(self, provider: str, outage: _Outage) -> Answer:
        """Held unanswered until the outage ends, so the client times out first; then dropped. Bounded,
        though clients gave up long before."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _TIMEOUT_OUTAGE_HOLD_SECONDS
        while self._outages.get(provider) is outage and (remaining := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        return DROP

    def _outages_changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _sent_emails(self) -> Answer:
        with self._lock:
            return Answer(200, {"emails": dict(self._emails), "parts": dict(self._parts)})

    def _take_next_failure(self, provider: str) -> tuple[int | None, float]:
        """(status to refuse with, seconds to delay the answer) for this send."""
        failures = self._next_failures
        if failures.remaining <= 0 or failures.provider not in ("all", provider):
            return None, 0.0
        failures.remaining -= 1
        return failures.status, failures.delay

    def _accept(self, send: Send) -> Answer:
        """The answer for an accepted send, the first one's for a repeat."""
        key = (send.provider, send.reference)
        first = self._accepted.get(key)
        if first is not None:
            with self._lock:
                self._duplicates += 1
            return Answer(200, first)
        # Counted before any delay: the provider holds the message even if its answer is lost.
        self._accepted[key] = send.answer
        with self._lock:
            if send.details:
                self._emails[send.reference] = send.details
            if send.parts:
                self._parts[send.reference] = send.parts
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
        if next_failures is not None:
            self._next_failures = next_failures
        if outage is not False:
            for provider in providers:
                if outage is None:
                    self._outages.pop(provider, None)
                else:
                    self._outages[provider] = outage
            self._outages_changed()
        if latency is not None:
            self._latency = latency
        return Answer(200, self._controls())

    def _controls(self) -> dict[str, Any]:
        """The controls in force."""
        failures = self._next_failures
        return {
            "fail_next": failures.remaining,
            "status": failures.status,
            "delay": failures.delay,
            "provider": failures.provider,
            "fail_all": {name: {"mode": o.mode, "status": o.status} for name, o in sorted(self._outages.items())},
            "latency": self._latency,
        }

    def _receive_inbound(self, body: bytes) -> Reply:
        if self._inbound is None:
            return Answer(503, error("no_gateway", "inbound texts need the gateway's URL (receipts_url)"))
        return self._inbound.handle(body)

    def _reset(self) -> Answer:
        self._accepted.clear()
        with self._lock:
            self._emails.clear()
            self._parts.clear()
            self._sends.clear()
            self._requests.clear()
            self._duplicates = 0
            self._total = 0
        self._next_failures = _NextFailures()
        self._outages.clear()
        self._outages_changed()
        self._latency = 0.0
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
