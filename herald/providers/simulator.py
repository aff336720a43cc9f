"""Provider simulator: a small HTTP server speaking MMG's, Firetext's and SES's (v2) send APIs.

Herald's provider clients send to it exactly as they would to a real provider: MMG's JSON at
``POST /mmg/send``, Firetext's form at ``POST /firetext/send`` and SESv2's SendEmail at
``POST /v2/email/outbound-emails`` (SigV4-signed by the configured access key; answers
``{"MessageId": ...}``, errors with ``x-amzn-ErrorType`` as botocore expects). After ``receipt_delay``
seconds it reports a delivery receipt to Herald's ``callbacks`` service over gRPC, in that provider's
own vocabulary. The recipient picks the outcome, so tests can provoke every case:

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
    without an answer, ``"timeout"`` holds the request unanswered until the outage is cleared (then
    drops it). None of them hands the message off.
  - ``{"latency": L}`` answers every send L seconds late (0 clears it).

* ``GET /_stats`` ``{"sends": {reference: n}, "requests": {reference: n}, "duplicates": n, "total": n,
  "receipts_posted": n, "receipts_dropped": n, "receipts_pending": n}``: ``sends`` counts the
  providers that accepted each reference (more than 1 means the message went out twice),
  ``requests`` every send request naming it, ``duplicates`` the repeats answered from the
  de-duplication, ``total`` the accepted hand-offs.
* ``POST /_reset`` clears the counters, what was accepted, the controls and any receipt not yet posted.

A receipt that callbacks does not take (unreachable, or any answer but a refusal of the receipt
itself) is retried with doubling backoff (from ``receipt_backoff``, capped at ``receipt_max_backoff``)
for ``receipt_retry_seconds`` (10 minutes by default); then it counts in ``receipts_dropped``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import signal
import socketserver
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson

from herald.providers._base import NOTIFICATION_ID_HEADER, NOTIFICATION_ID_TAG
from herald.providers._sigv4 import SignatureError, verify
from herald.settings import Settings
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc

logger = logging.getLogger(__name__)

Outcome = Literal["delivered", "temporary", "permanent", "error"]
OutageMode = Literal["status", "drop", "timeout"]

PROVIDERS = ("mmg", "firetext", "ses")
SES_SEND_EMAIL_PATH = "/v2/email/outbound-emails"

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

_MAX_BODY_BYTES = 1 << 20
# SES takes messages up to 40 MB. botocore sends JSON with every non-ASCII character escaped
# (\uXXXX, up to three times its UTF-8 size), so the request itself may be larger.
SES_MAX_MESSAGE_BYTES = 40 * 1024 * 1024
_SES_MAX_BODY_BYTES = 3 * SES_MAX_MESSAGE_BYTES + _MAX_BODY_BYTES
# How SES words an HTTP status in x-amzn-ErrorType, for failures the simulator injects.
_SES_ERROR_CODES = {
    400: "BadRequestException",
    403: "AccessDeniedException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
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
_RPC_TIMEOUT_SECONDS = 5.0
_RECEIPT_WORKERS = 16
# gRPC's own reconnect backoff starts at 1 s; shorten it so a callbacks restart is noticed quickly.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
_DEFAULTS = Settings()


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


class _BadRequest(Exception):
    def __init__(self, message: str, *, status: int = 400, ses_code: str = "BadRequestException") -> None:
        super().__init__(message)
        self.status = status
        self.ses_code = ses_code


@dataclass(frozen=True, slots=True)
class _Send:
    provider: str
    reference: str
    outcome: Outcome
    answer: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Answer:
    """What the handler writes back; ``drop`` closes the connection without writing anything."""

    status: int
    payload: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


_DROP = _Answer(0, drop=True)


def _refusal(provider: str, status: int, code: str, message: str, *, ses_code: str = "InternalFailure") -> _Answer:
    if provider == "ses":
        # botocore reads the error code from this header (AWS's rest-json protocol).
        return _Answer(status, {"message": message}, (("x-amzn-ErrorType", f"{ses_code}:"),))
    return _Answer(status, _error(code, message))


def _injected(provider: str, status: int) -> _Answer:
    ses_code = _SES_ERROR_CODES.get(status, "InjectedFailure")
    return _refusal(provider, status, "injected_failure", f"injected HTTP {status}", ses_code=ses_code)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest("body is not valid JSON") from exc
    if not isinstance(parsed, dict):
        raise _BadRequest("body must be a JSON object")
    return parsed


def _text(container: dict[str, Any], key: str, where: str = "") -> str:
    value = container.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"missing or empty field: {where}{key}")
    return value


def _object(container: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = container.get(key)
    if not isinstance(value, dict):
        raise _BadRequest(f"missing or non-object field: {where}{key}")
    return value


def _parse_mmg(body: bytes, headers: Mapping[str, str]) -> _Send:
    data = _json_object(body)
    to = _text(data, "MSISDN")
    _text(data, "msg")
    _text(data, "sender")
    reference = _text(data, "cid")
    return _Send("mmg", reference, sms_outcome(to), {"reference": str(uuid.uuid4())})


def _parse_firetext(body: bytes, headers: Mapping[str, str]) -> _Send:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise _BadRequest("body is not UTF-8 form data") from exc
    form = {key: values[0] for key, values in fields.items()}
    to = _text(form, "to")
    _text(form, "from")
    _text(form, "message")
    reference = _text(form, "reference")
    return _Send("firetext", reference, sms_outcome(to), {"code": 0, "description": "SMS successfully queued"})


def _parse_ses(access_key_id: str, secret_access_key: str, body: bytes, headers: Mapping[str, str]) -> _Send:
    try:
        verify(
            "POST",
            SES_SEND_EMAIL_PATH,
            "",
            headers,
            body,
            service="ses",
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )
    except SignatureError as exc:
        raise _BadRequest(str(exc), status=403, ses_code=exc.code) from exc
    data = _json_object(body)
    _text(data, "FromEmailAddress")
    addresses = _object(data, "Destination").get("ToAddresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a.strip() for a in addresses):
        raise _BadRequest("Destination.ToAddresses must be a non-empty list of addresses")
    content = _object(data, "Content")
    if "Simple" not in content:
        raise _BadRequest("Content.Simple is required: the simulator takes neither Raw nor Template content")
    simple = _object(content, "Simple", "Content.")
    size = len(_text(_object(simple, "Subject", "Content.Simple."), "Data", "Content.Simple.Subject.").encode())
    message_body = _object(simple, "Body", "Content.Simple.")
    parts = [message_body.get(part) for part in ("Text", "Html") if part in message_body]
    if not parts or not all(isinstance(p, dict) and isinstance(p.get("Data"), str) for p in parts):
        raise _BadRequest("Content.Simple.Body needs Text or Html with Data")
    size += sum(len(p["Data"].encode()) for p in parts if isinstance(p, dict))
    message_headers = _ses_headers(simple.get("Headers", []))
    size += sum(len(name) + len(value) for name, value in message_headers)
    if size > SES_MAX_MESSAGE_BYTES:
        raise _BadRequest("Message length is more than 40 megabytes", ses_code="MessageRejected")
    reference = _ses_reference(data.get("EmailTags", []), message_headers)
    return _Send("ses", reference, email_outcome(addresses[0]), {"MessageId": str(uuid.uuid4())})


def _ses_headers(raw: Any) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not all(
        isinstance(h, dict) and isinstance(h.get("Name"), str) and isinstance(h.get("Value"), str) for h in raw
    ):
        raise _BadRequest("Content.Simple.Headers must be a list of {Name, Value}")
    return [(h["Name"], h["Value"]) for h in raw]


def _ses_reference(tags: Any, headers: list[tuple[str, str]]) -> str:
    if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
        raise _BadRequest("EmailTags must be a list of {Name, Value}")
    for tag in tags:
        if tag.get("Name") == NOTIFICATION_ID_TAG and isinstance(tag.get("Value"), str) and tag["Value"]:
            return str(tag["Value"])
    for name, value in headers:
        if name.lower() == NOTIFICATION_ID_HEADER.lower() and value:
            return value
    raise _BadRequest(
        f"the simulator needs the {NOTIFICATION_ID_TAG!r} EmailTag or the {NOTIFICATION_ID_HEADER} header"
    )


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
        raise _BadRequest("status must be an HTTP status code")
    return status


def _seconds(data: dict[str, Any], key: str) -> float:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise _BadRequest(f"{key} must be a non-negative number of seconds")
    return float(value)


def _providers(data: dict[str, Any]) -> tuple[str, ...]:
    provider = data.get("provider", "all")
    if provider == "all":
        return PROVIDERS
    if provider not in PROVIDERS:
        raise _BadRequest(f"provider must be one of {', '.join(PROVIDERS)} or all")
    return (str(provider),)


_CONTROL_KEYS = frozenset({"fail_next", "fail_all", "latency", "status", "delay", "provider"})


@dataclass(order=True, slots=True)
class _DueReceipt:
    due: float
    sequence: int
    generation: int = field(compare=False)
    first_due: float = field(compare=False)
    attempt: int = field(compare=False)
    receipt: callbacks_pb2.DeliveryReceipt = field(compare=False)


class _ReceiptPoster:
    """Posts receipts to callbacks once they fall due, over one long-lived gRPC channel.

    One scheduler thread holds the due times, retries included, so a receipt waiting to be retried
    holds no thread; a small pool does the RPCs.
    """

    def __init__(self, target: str, delay: float, retry_seconds: float, backoff: float, max_backoff: float) -> None:
        self._delay = delay
        self._retry_seconds = retry_seconds
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = callbacks_pb2_grpc.CallbacksStub(self._channel)
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

    def schedule(self, provider: str, reference: str, outcome: Outcome) -> None:
        status, code = _RECEIPT_WORDING[(provider, outcome)]
        receipt = callbacks_pb2.DeliveryReceipt(provider=provider, reference=reference, status=status, code=code)
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
        # Closing the channel cancels in-flight RPCs, so the pool drains at once.
        self._channel.close()
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
        code: grpc.StatusCode | None = None
        try:
            self._stub.ReportDelivery(item.receipt, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            code = exc.code()
        with self._cond:
            if item.generation != self._generation or self._closed.is_set():
                return
            self._in_flight -= 1
            if code is None:
                self._posted += 1
                return
            backoff = min(self._backoff * 2 ** (item.attempt - 1), self._max_backoff)
            retry_at = time.monotonic() + backoff
            if code not in _FINAL_RPC_CODES and retry_at - item.first_due <= self._retry_seconds:
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
            code.name,
        )


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
            self._reply(_Answer(400 if length < 0 else 413, _error("bad_request", "bad or oversized Content-Length")))
            return
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.simulator.handle(method, url.path, body, headers)
        if answer.drop:
            self.close_connection = True
            return
        self._reply(answer)

    def _reply(self, answer: _Answer) -> None:
        body = orjson.dumps(answer.payload)
        try:
            self.send_response(answer.status)
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


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": code, "message": message}


Parser = Callable[[bytes, Mapping[str, str]], _Send]


class ProviderSimulator:
    """The simulator as an object: ``start()`` serves from background threads, ``stop()`` ends it.

    ``ses_access_key_id`` and ``ses_secret_access_key`` are the SES credentials it accepts (by default
    the development ones in ``Settings``).
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
    ) -> None:
        self._host = host
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
        self._requests: dict[str, int] = {}
        self._duplicates = 0
        self._total = 0
        self._next_failures = _NextFailures()
        self._outages: dict[str, _Outage] = {}
        self._latency = 0.0
        self._server: _Server | None = None
        self._poster: _ReceiptPoster | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        parse_ses = functools.partial(_parse_ses, ses_access_key_id, ses_secret_access_key)
        send_routes: dict[str, Parser] = {"/mmg/send": _parse_mmg, "/firetext/send": _parse_firetext}
        send_routes[SES_SEND_EMAIL_PATH] = parse_ses
        self._routes: dict[str, tuple[str, Callable[[bytes, Mapping[str, str]], _Answer]]] = {
            path: ("POST", functools.partial(self._send, parse)) for path, parse in send_routes.items()
        }
        self._routes["/_stats"] = ("GET", lambda body, headers: _Answer(200, self.stats()))
        self._routes["/_reset"] = ("POST", lambda body, headers: self._reset())
        self._routes["/_control"] = ("POST", lambda body, headers: self._set_control(body))

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
        self._poster = _ReceiptPoster(self._callbacks_target, self._receipt_delay, *self._receipt_retry)
        self._poster.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="provider-sim-http",
            daemon=True,
        )
        self._thread.start()
        logger.info("provider simulator listening on %s, receipts to %s", self.url, self._callbacks_target)

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
        if self._poster is not None:
            self._poster.stop()

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
        return _SES_MAX_BODY_BYTES if path == SES_SEND_EMAIL_PATH else _MAX_BODY_BYTES

    def handle(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> _Answer:
        """Answer one HTTP request; ``headers`` are keyed by lower-case name."""
        route = self._routes.get(path)
        if route is None:
            return _Answer(404, _error("not_found", f"no such endpoint: {path}"))
        expected, action = route
        if method != expected:
            return _Answer(405, _error("method_not_allowed", f"{path} takes {expected}"))
        try:
            return action(body, headers)
        except _BadRequest as exc:
            provider = "ses" if path == SES_SEND_EMAIL_PATH else ""
            return _refusal(provider, exc.status, "bad_request", str(exc), ses_code=exc.ses_code)
        except Exception:
            logger.exception("provider simulator: failed to handle %s %s", method, path)
            return _Answer(500, _error("internal_error", "simulator failure"))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            current: dict[str, Any] = {
                "sends": dict(self._sends),
                "requests": dict(self._requests),
                "duplicates": self._duplicates,
                "total": self._total,
            }
        posted, dropped, pending = self._poster.counts() if self._poster is not None else (0, 0, 0)
        return current | {"receipts_posted": posted, "receipts_dropped": dropped, "receipts_pending": pending}

    def _send(self, parse: Parser, body: bytes, headers: Mapping[str, str]) -> _Answer:
        send = parse(body, headers)
        provider, reference = send.provider, send.reference
        with self._lock:
            self._requests[reference] = self._requests.get(reference, 0) + 1
            latency = self._latency
        if latency:
            self._stopping.wait(latency)
        if send.outcome == "error":
            return _refusal(provider, 500, "provider_error", "simulated provider error")
        with self._lock:
            outage = self._outages.get(provider)
            if outage is not None and outage.mode == "timeout":
                # Held unanswered until the outage ends; the client times out first.
                self._changed.wait_for(lambda: self._stopping.is_set() or self._outages.get(provider) is not outage)
                return _DROP
            if outage is not None:
                return _DROP if outage.mode == "drop" else _injected(provider, outage.status)
            refuse_with, delay = self._take_next_failure(provider)
            answer = self._accept(send) if refuse_with is None else _injected(provider, refuse_with)
        if delay:
            self._stopping.wait(delay)
        return answer

    def _take_next_failure(self, provider: str) -> tuple[int | None, float]:
        """(status to refuse with, seconds to delay the answer) for this send; call with the lock held."""
        failures = self._next_failures
        if failures.remaining <= 0 or failures.provider not in ("all", provider):
            return None, 0.0
        failures.remaining -= 1
        return failures.status, failures.delay

    def _accept(self, send: _Send) -> _Answer:
        """The answer for an accepted send, the first one's for a repeat; call with the lock held."""
        key = (send.provider, send.reference)
        first = self._accepted.get(key)
        if first is not None:
            self._duplicates += 1
            return _Answer(200, first)
        # Counted before any delay: the provider holds the message even if its answer is lost.
        self._accepted[key] = send.answer
        self._sends[send.reference] = self._sends.get(send.reference, 0) + 1
        self._total += 1
        if self._poster is not None:
            self._poster.schedule(send.provider, send.reference, send.outcome)
        return _Answer(200, send.answer)

    def _set_control(self, body: bytes) -> _Answer:
        data = _json_object(body)
        unknown = set(data) - _CONTROL_KEYS
        if unknown:
            raise _BadRequest(f"unknown control field(s): {', '.join(sorted(unknown))}")
        if not {"fail_next", "fail_all", "latency"} & set(data):
            raise _BadRequest("name fail_next, fail_all or latency")
        providers = _providers(data)
        next_failures: _NextFailures | None = None
        outage: _Outage | Literal[False] | None = False  # False: no change
        if "fail_next" in data:
            count = data["fail_next"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _BadRequest("fail_next must be a non-negative integer")
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
                raise _BadRequest('fail_all must be "status", "drop", "timeout" or false')
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
            return _Answer(200, self._controls())

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

    def _reset(self) -> _Answer:
        with self._lock:
            self._accepted.clear()
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
        return _Answer(200, {"reset": True})


def serve(
    host: str,
    port: int,
    callbacks_target: str,
    receipt_delay: float,
    *,
    ses_access_key_id: str = _DEFAULTS.ses_access_key_id,
    ses_secret_access_key: str = _DEFAULTS.ses_secret_access_key,
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
