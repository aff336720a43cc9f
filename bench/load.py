"""Load generators, each run in a process of its own (bench.LoadProcess) so that the callers never share
an interpreter lock with what they measure. Every call carries a fresh token, as Notify's clients make."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any

import grpc

from bench import percentile, serve_commands
from bench.raw import batch_request, pg_connect
from herald.domain import statuses as st
from herald.domain.apikeys import create_token, split_key
from herald.v1 import ingest_pb2, ingest_pb2_grpc

SMS_TO = "07700 900123"
FINAL = sorted(st.FINAL)
# gRPC's default 4 MB cap is enough for a 1,000-item answer (about 100 kB); the batch request is ~60 kB.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]


class StoredWatcher:
    """The accepted-to-stored window. Asking GetNotification again and again would add RPCs to the very
    server being measured, so this thread asks PostgreSQL instead, every few milliseconds and for all
    pending ids at once: the row GetNotification would read."""

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.windows: list[float] = []
        self._thread = threading.Thread(target=self._run, name="stored-watcher", daemon=True)
        self._thread.start()

    def answered(self, notification_id: str, at: float) -> None:
        with self._lock:
            self._pending[notification_id] = at

    def _run(self) -> None:
        conn = pg_connect()
        conn.autocommit = True
        try:
            while True:
                with self._lock:
                    ids = list(self._pending)
                if not ids and self._done.is_set():
                    return
                if ids:
                    with conn.cursor() as cur:
                        cur.execute("SELECT id::text FROM notifications WHERE id = ANY(%s::uuid[])", (ids,))
                        found = [row[0] for row in cur.fetchall()]
                    seen = time.monotonic()
                    with self._lock:
                        self.windows += [seen - self._pending.pop(i) for i in found]
                time.sleep(self._interval)
        finally:
            conn.close()

    def finish(self, timeout: float) -> list[float]:
        self._done.set()
        self._thread.join(timeout)  # bounded: rows never stored leave the thread behind, a daemon
        return self.windows


class FinalCounter:
    """How many notifications are final, polled from PostgreSQL: lets a feeder keep a bounded backlog."""

    def __init__(self, interval: float = 0.25) -> None:
        self.value = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="final-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = pg_connect()
        conn.autocommit = True
        try:
            while not self._stop.wait(self._interval):
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM notifications WHERE status = ANY(%s)", (FINAL,))
                    self.value = int(cur.fetchone()[0])
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


class Pacer:
    """Open-loop pacing shared by threads: call k may start at begun + k * interval, never earlier."""

    def __init__(self, per_second: float, per_call: int) -> None:
        self._interval = per_call / per_second if per_second > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            slot = max(self._next, time.monotonic())
            self._next = slot + self._interval
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _for_duration(callers: int, seconds: float, one: Callable[[], None]) -> tuple[float, float]:
    """`callers` threads call `one` until `seconds` passed; returns when the first started and last ended."""
    barrier = threading.Barrier(callers + 1)
    ends: list[float] = []
    deadline = 0.0

    def work() -> None:
        barrier.wait()
        while time.monotonic() < deadline:
            one()
        ends.append(time.monotonic())

    threads = [threading.Thread(target=work, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    barrier.wait()
    begun = time.monotonic()
    for thread in threads:
        thread.join(seconds + 120.0)
    return begun, max(ends, default=begun)


class Tally:
    """What the callers saw, gathered under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = 0
        self.calls = 0
        self.failed_calls = 0
        self.failed_items = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []

    def failure(self, what: str, items: int = 1) -> None:
        with self.lock:
            self.errors[what] = self.errors.get(what, 0) + items

    def summary(self, begun: float, ended: float, windows: list[float]) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "calls": self.calls,
            "failed_calls": self.failed_calls,
            "failed_items": self.failed_items,
            "errors": dict(sorted(self.errors.items(), key=lambda kv: -kv[1])[:3]),
            "begun": begun,
            "ended": ended,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "windows": windows,
        }


def _metadata(secret: str, service_id: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {create_token(secret, service_id)}")]


def sender(pipe: Pipe, target: str) -> None:
    """A load process for ingest: `unary` (SendSms) and `batch` (SendSmsBatch, or SendEmailBatch with
    `email`) loads on demand."""
    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    stub = ingest_pb2_grpc.IngestStub(channel)

    def unary(
        api_key: str, template_id: str, seconds: float, callers: int, samples: int = 0, per_second: float = 0.0
    ) -> dict[str, Any]:
        """`callers` threads send SendSms for `seconds`: as fast as answered, or paced at `per_second` calls."""
        key = split_key(api_key)
        tally = Tally()
        watcher = StoredWatcher() if samples else None
        every = max(1, int(seconds * 1000 / max(samples, 1)))  # about `samples` at ~1,000 calls a second
        pacer = Pacer(per_second, 1)

        def one() -> None:
            pacer.wait()
            request = ingest_pb2.SendSmsRequest(phone_number=SMS_TO, template_id=template_id)
            request.personalisation.update({"name": "Ada", "code": "1234"})
            started = time.monotonic()
            try:
                answer = stub.SendSms(request, metadata=_metadata(key.secret, key.service_id), timeout=30.0)
            except grpc.RpcError as exc:
                with tally.lock:
                    tally.calls += 1
                    tally.failed_calls += 1
                tally.failure(exc.code().name)
                return
            ended = time.monotonic()
            with tally.lock:
                tally.calls += 1
                tally.accepted += 1
                tally.latencies.append(ended - started)
                sampled = tally.accepted % every == 0
            if watcher is not None and sampled:
                watcher.answered(answer.id, ended)

        begun, ended = _for_duration(callers, seconds, one)
        return tally.summary(begun, ended, watcher.finish(30.0) if watcher else [])

    def batch(
        api_key: str,
        template_id: str,
        seconds: float,
        callers: int,
        size: int,
        per_second: float = 0.0,
        max_outstanding: int = 0,
        samples: int = 0,
        email: bool = False,
    ) -> dict[str, Any]:
        """`callers` threads send `size`-item calls for `seconds`: as fast as answered, or paced at
        `per_second` items, and never more than `max_outstanding` accepted but not final (0: no bound)."""
        key = split_key(api_key)
        request = batch_request(template_id, size, email)
        send = stub.SendEmailBatch if email else stub.SendSmsBatch
        tally = Tally()
        pacer = Pacer(per_second, size)
        finals = FinalCounter() if max_outstanding else None
        watcher = StoredWatcher() if samples else None
        expected_calls = seconds * (per_second / size if per_second else 30)
        every = max(1, int(expected_calls / max(samples, 1)))

        def one() -> None:
            if finals is not None:
                while tally.accepted - finals.value > max_outstanding:
                    time.sleep(0.01)
            pacer.wait()
            started = time.monotonic()
            try:
                answer = send(request, metadata=_metadata(key.secret, key.service_id), timeout=60.0)
            except grpc.RpcError as exc:
                with tally.lock:
                    tally.calls += 1
                    tally.failed_calls += 1
                tally.failure(exc.code().name, size)
                return
            ended = time.monotonic()
            accepted = [r.accepted.id for r in answer.results if r.HasField("accepted")]
            for r in answer.results:
                if r.HasField("error"):
                    tally.failure(r.error.code)
            with tally.lock:
                tally.calls += 1
                tally.accepted += len(accepted)
                tally.failed_items += size - len(accepted)
                tally.latencies.append(ended - started)
                sampled = tally.calls % every == 0
            if watcher is not None and sampled and accepted:
                # One id from each end of the call: the first and the last item stored of the batch.
                watcher.answered(accepted[0], ended)
                watcher.answered(accepted[-1], ended)

        try:
            begun, ended = _for_duration(callers, seconds, one)
        finally:
            if finals is not None:
                finals.stop()
        return tally.summary(begun, ended, watcher.finish(30.0) if watcher else [])

    serve_commands(pipe, {"unary": unary, "batch": batch})
    channel.close()
