"""The provider simulator's receipts: posted to callbacks over gRPC when due, retried through outages."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from herald.providers._sim_sends import Outcome
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
_RPC_TIMEOUT_SECONDS = 5.0
_RECEIPT_WORKERS = 16
# gRPC's own reconnect backoff starts at 1 s; shorten it so a callbacks restart is noticed quickly.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(order=True, slots=True)
class _DueReceipt:
    due: float
    sequence: int
    generation: int = field(compare=False)
    first_due: float = field(compare=False)
    attempt: int = field(compare=False)
    receipt: callbacks_pb2.DeliveryReceipt = field(compare=False)


class ReceiptPoster:
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
