"""Provider simulator: a small HTTP server speaking MMG's, Firetext's and SES's send formats.

Herald's provider clients send to it exactly as they would to a real provider; after ``receipt_delay``
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

Control endpoints, for tests and benchmarks:

* ``POST /_control`` ``{"fail_next": N, "status": S, "delay": D}`` applies to the next N sends (N defaults
  to 1). With ``status`` they are refused with that HTTP status (no hand-off); with only ``delay`` they
  are accepted at once but answered D seconds later, so a test can kill a dispatcher mid-hand-off;
  with neither they are refused with 503. ``fail_next: 0`` clears the control.
* ``GET /_stats`` ``{"sends": {reference: count}, "total": N, "receipts_posted": M, "receipts_dropped": K}``
  counts accepted hand-offs per reference, to prove no message went to a provider twice.
* ``POST /_reset`` clears the counters, the control and any receipt not yet posted.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

import grpc
import orjson

from herald.v1 import callbacks_pb2, callbacks_pb2_grpc

logger = logging.getLogger(__name__)

Outcome = Literal["delivered", "temporary", "permanent", "error"]

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
_RETRYABLE_RPC_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
_RPC_TIMEOUT_SECONDS = 5.0
_MAX_BACKOFF_SECONDS = 2.0
_RECEIPT_WORKERS = 16
# gRPC's own reconnect backoff starts at 1 s; shorten it so a callbacks restart is noticed within the
# simulator's retry window.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


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
    pass


@dataclass(frozen=True, slots=True)
class _Send:
    provider: str
    reference: str
    outcome: Outcome
    answer: dict[str, Any]


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


def _parse_mmg(body: bytes) -> _Send:
    data = _json_object(body)
    to = _text(data, "MSISDN")
    _text(data, "msg")
    _text(data, "sender")
    reference = _text(data, "cid")
    return _Send("mmg", reference, sms_outcome(to), {"reference": str(uuid.uuid4())})


def _parse_firetext(body: bytes) -> _Send:
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


def _parse_ses(body: bytes) -> _Send:
    data = _json_object(body)
    _text(data, "Source")
    addresses = _object(data, "Destination").get("ToAddresses")
    if not isinstance(addresses, list) or not addresses or not all(isinstance(a, str) and a.strip() for a in addresses):
        raise _BadRequest("Destination.ToAddresses must be a non-empty list of addresses")
    message = _object(data, "Message")
    _text(_object(message, "Subject", "Message."), "Data", "Message.Subject.")
    content = _object(message, "Body", "Message.")
    if not any(isinstance(content.get(part), dict) for part in ("Text", "Html")):
        raise _BadRequest("Message.Body needs Text or Html")
    reference = _text(data, "reference")
    return _Send("ses", reference, email_outcome(addresses[0]), {"MessageId": str(uuid.uuid4())})


_SEND_ROUTES: dict[str, Callable[[bytes], _Send]] = {
    "/mmg/send": _parse_mmg,
    "/firetext/send": _parse_firetext,
    "/ses/send": _parse_ses,
}


@dataclass(slots=True)
class _Control:
    remaining: int = 0
    status: int | None = None
    delay: float = 0.0


def _parse_control(body: bytes) -> _Control:
    data = _json_object(body)
    count = data.get("fail_next", 1)
    status = data.get("status")
    delay = data.get("delay", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise _BadRequest("fail_next must be a non-negative integer")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599):
        raise _BadRequest("status must be an HTTP status code")
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise _BadRequest("delay must be a non-negative number of seconds")
    if status is None and not delay:
        status = 503
    return _Control(remaining=count, status=status, delay=float(delay))


class _ReceiptPoster:
    """Posts receipts to callbacks once they fall due, over one long-lived gRPC channel.

    A single scheduler thread holds the due times; a small pool does the RPCs so that one slow or
    retrying receipt does not hold up the others.
    """

    def __init__(self, target: str, delay: float, attempts: int, backoff: float) -> None:
        self._delay = delay
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._stub = callbacks_pb2_grpc.CallbacksStub(self._channel)
        self._pool = ThreadPoolExecutor(max_workers=_RECEIPT_WORKERS, thread_name_prefix="provider-sim-receipt")
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, int, callbacks_pb2.DeliveryReceipt]] = []
        self._sequence = itertools.count()
        # Bumped by reset(): receipts scheduled before it are not posted, or if already in flight not counted.
        self._generation = 0
        self._closed = threading.Event()
        self._scheduler = threading.Thread(target=self._run, name="provider-sim-receipts", daemon=True)
        self._posted = 0
        self._dropped = 0

    def start(self) -> None:
        self._scheduler.start()

    def schedule(self, provider: str, reference: str, outcome: Outcome) -> None:
        status, code = _RECEIPT_WORDING[(provider, outcome)]
        receipt = callbacks_pb2.DeliveryReceipt(provider=provider, reference=reference, status=status, code=code)
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + self._delay, next(self._sequence), self._generation, receipt))
            self._cond.notify()

    def counts(self) -> tuple[int, int]:
        """(posted, dropped) since the last reset."""
        with self._cond:
            return self._posted, self._dropped

    def reset(self) -> None:
        with self._cond:
            self._generation += 1
            self._due.clear()
            self._posted = 0
            self._dropped = 0

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
            logger.info("provider simulator stopped with %d receipts not yet due", pending)

    def _run(self) -> None:
        with self._cond:
            while not self._closed.is_set():
                if not self._due:
                    self._cond.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, generation, receipt = heapq.heappop(self._due)
                self._pool.submit(self._post, generation, receipt)

    def _post(self, generation: int, receipt: callbacks_pb2.DeliveryReceipt) -> None:
        code: grpc.StatusCode | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                self._stub.ReportDelivery(receipt, timeout=_RPC_TIMEOUT_SECONDS)
            except grpc.RpcError as exc:
                code = exc.code()
                if code not in _RETRYABLE_RPC_CODES or attempt == self._attempts:
                    break
                if self._closed.wait(min(self._backoff * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS)):
                    break
                continue
            with self._cond:
                if generation == self._generation:
                    self._posted += 1
            return
        with self._cond:
            if generation == self._generation:
                self._dropped += 1
        logger.warning(
            "dropped %s receipt for %s after %d attempt(s): %s",
            receipt.provider,
            receipt.reference,
            attempt,
            code.name if code is not None else "unknown",
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
        length_header = self.headers.get("Content-Length", "0")
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY_BYTES:
            # The body cannot be skipped reliably, so the connection cannot be reused either.
            self.close_connection = True
            self._reply(400 if length < 0 else 413, _error("bad_request", "bad or oversized Content-Length"))
            return
        body = self.rfile.read(length)
        path = urlsplit(self.path).path
        status, payload = self.server.simulator.handle(method, path, body)
        self._reply(status, payload)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
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


class ProviderSimulator:
    """The simulator as an object: ``start()`` serves from background threads, ``stop()`` ends it.

    ``receipt_attempts`` and ``receipt_backoff`` bound the retries of a receipt while callbacks is
    unavailable (backoff doubles from ``receipt_backoff`` seconds, capped at 2 s); then it is dropped.
    """

    def __init__(
        self,
        host: str,
        port: int,
        callbacks_target: str,
        receipt_delay: float,
        *,
        receipt_attempts: int = 5,
        receipt_backoff: float = 0.2,
    ) -> None:
        self._host = host
        self._port = port
        self._callbacks_target = callbacks_target
        self._receipt_delay = receipt_delay
        self._receipt_attempts = receipt_attempts
        self._receipt_backoff = receipt_backoff
        self._lock = threading.Lock()
        # Grows by one entry per reference until /_reset: fine for tests and benchmark runs.
        self._sends: dict[str, int] = {}
        self._total = 0
        self._control = _Control()
        self._server: _Server | None = None
        self._poster: _ReceiptPoster | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._routes: dict[str, tuple[str, Callable[[bytes], tuple[int, dict[str, Any]]]]] = {
            path: ("POST", functools.partial(self._send, parse)) for path, parse in _SEND_ROUTES.items()
        }
        self._routes["/_stats"] = ("GET", lambda _: (200, self.stats()))
        self._routes["/_reset"] = ("POST", lambda _: self._reset())
        self._routes["/_control"] = ("POST", self._set_control)

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
        self._poster = _ReceiptPoster(
            self._callbacks_target, self._receipt_delay, self._receipt_attempts, self._receipt_backoff
        )
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
        self._stopping.set()
        with self._lock:
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

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one HTTP request; returns (status, JSON payload)."""
        route = self._routes.get(path)
        if route is None:
            return 404, _error("not_found", f"no such endpoint: {path}")
        expected, action = route
        if method != expected:
            return 405, _error("method_not_allowed", f"{path} takes {expected}")
        try:
            return action(body)
        except _BadRequest as exc:
            return 400, _error("bad_request", str(exc))
        except Exception:
            logger.exception("provider simulator: failed to handle %s %s", method, path)
            return 500, _error("internal_error", "simulator failure")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            sends = dict(self._sends)
            total = self._total
        posted, dropped = self._poster.counts() if self._poster is not None else (0, 0)
        return {"sends": sends, "total": total, "receipts_posted": posted, "receipts_dropped": dropped}

    def _send(self, parse: Callable[[bytes], _Send], body: bytes) -> tuple[int, dict[str, Any]]:
        send = parse(body)
        if send.outcome == "error":
            return 500, _error("provider_error", "simulated provider error")
        with self._lock:
            control = self._control
            refuse_with: int | None = None
            delay = 0.0
            if control.remaining > 0:
                control.remaining -= 1
                refuse_with, delay = control.status, control.delay
            if refuse_with is None:
                # Counted before any delay: the provider holds the message even if its answer is lost.
                self._sends[send.reference] = self._sends.get(send.reference, 0) + 1
                self._total += 1
        if refuse_with is None and self._poster is not None:
            self._poster.schedule(send.provider, send.reference, send.outcome)
        if delay:
            self._stopping.wait(delay)
        if refuse_with is not None:
            return refuse_with, _error("injected_failure", f"injected HTTP {refuse_with}")
        return 200, send.answer

    def _set_control(self, body: bytes) -> tuple[int, dict[str, Any]]:
        control = _parse_control(body)
        with self._lock:
            self._control = control
        return 200, {"fail_next": control.remaining, "status": control.status, "delay": control.delay}

    def _reset(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._sends.clear()
            self._total = 0
            self._control = _Control()
        if self._poster is not None:
            self._poster.reset()
        return 200, {"reset": True}


def serve(host: str, port: int, callbacks_target: str, receipt_delay: float) -> None:
    """Run the simulator until SIGINT/SIGTERM; ``herald provider-sim`` calls this.

    Signals can only be caught in the main thread: to run the simulator anywhere else, use
    ``ProviderSimulator`` and its ``stop()``.
    """
    simulator = ProviderSimulator(host, port, callbacks_target, receipt_delay)

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
