"""Herald's own paths, each read against the raw limit of the same run (bench/raw.py).

(a) ConfirmingPublisher.publish_batch, (b) PublisherThread under 64 threads, (c) the db dispatcher
(Persister) draining a pre-filled db-sms, (d) the whole stack in this process: SendSms from 64 callers in
another process until every message is delivered, for a research-mode service and for a live one.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection as Pipe
from typing import Any

import grpc
from sqlalchemy import Engine, text

from bench import (
    BROKER_URL,
    DATABASE_URL,
    Figure,
    Ids,
    LoadProcess,
    median_of,
    notification,
    percentile,
    purge_queues,
    queue_depths,
    rate,
    run_callers,
    serve_commands,
    wait_until,
)
from bench.raw import pg_connect
from herald import bootstrap
from herald.clients import IngestClient
from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.db.engine import make_engine, upgrade
from herald.domain import statuses as st
from herald.domain.apikeys import create_token, split_key
from herald.providers.simulator import ProviderSimulator
from herald.queues import ConfirmingPublisher, Delivery, PublisherThread
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.auth import Authenticator
from herald.service_layer.delivery import Persister, _row
from herald.service_layer.sending import SendCommand, Sender
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType

QUEUE = "db-sms"
SECRET_KEY = "bench-secret"
REPEATS = 3
_FINAL = tuple(sorted(st.FINAL))


@dataclass(frozen=True, slots=True)
class Sizes:
    publish: int = 10_000
    thread_callers: int = 64
    thread_publish: int = 12_800
    persist: int = 10_000
    insert_batch: int = 500
    e2e_callers: int = 64
    # Herald's whole stack in one process does ~50-150 messages/s here, so these keep each run ~20 s.
    e2e_research: int = 1_920
    e2e_live: int = 1_280
    window_samples: int = 200
    cpu_calls: int = 300


@dataclass(frozen=True, slots=True)
class Context:
    engine: Engine
    settings: Settings
    demo: DemoSetup
    ids: Ids  # the research-mode service's, for pre-filled messages and raw rows


def setup() -> Context:
    """Creates and migrates herald_bench, empties it, and adds the demo services, keys and templates."""
    upgrade(DATABASE_URL)
    engine = make_engine(DATABASE_URL)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE notifications, notification_history, templates_history, templates, api_keys, "
                "services, scheduled_task_runs CASCADE"
            )
        )
    demo = Admin(engine, SecretBox(SECRET_KEY)).demo("bench")
    with engine.connect() as conn:
        key_id = conn.scalar(text("SELECT id FROM api_keys WHERE service_id = :s"), {"s": demo.research_service_id})
    settings = Settings.from_env(database_url=DATABASE_URL, broker_url=BROKER_URL, secret_key=SECRET_KEY)
    ids = Ids(demo.research_service_id, demo.research_sms_template_id, str(key_id))
    return Context(engine, settings, demo, ids)


def truncate_notifications(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE notifications"))


def count_rows(engine: Engine, statuses: tuple[str, ...] = ()) -> int:
    query = "SELECT count(*) FROM notifications"
    with engine.connect() as conn:
        if statuses:
            return int(conn.scalar(text(query + " WHERE status IN :s").bindparams(s=statuses)) or 0)
        return int(conn.scalar(text(query)) or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- (a) ConfirmingPublisher.publish_batch ------------------------------------------------------------


def publish_batches(n: int, batch: int, body: bytes) -> float:
    publisher = ConfirmingPublisher(BROKER_URL)
    try:
        publisher.publish_batch([(QUEUE, body)])  # connect and declare outside the timing
        items = [(QUEUE, body)] * batch
        started = time.perf_counter()
        for _ in range(n // batch):
            publisher.publish_batch(items)
        elapsed = time.perf_counter() - started
    finally:
        publisher.close()
        purge_queues(BROKER_URL)
    return rate(n // batch * batch, elapsed)


# --- (b) PublisherThread ------------------------------------------------------------------------------


def publisher_thread(callers: int, n: int, body: bytes) -> tuple[float, dict[str, float]]:
    publisher = PublisherThread(BROKER_URL)
    batches: list[int] = []
    try:
        publisher.publish(QUEUE, body)  # connect and declare outside the timing
        inner = publisher._publisher
        original = inner.publish_batch

        def counting(items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
            batches.append(len(items))  # observes the group-commit batch sizes; publishes unchanged
            original(items, headers)

        inner.publish_batch = counting  # type: ignore[method-assign]

        def one(_: int) -> str:
            publisher.publish(QUEUE, body)
            return ""

        records, begun, ended = run_callers(callers, n // callers, one, timeout=60.0)
    finally:
        publisher.close()
        purge_queues(BROKER_URL)
    latencies = [r.ended - r.started for r in records if r.ok]
    return rate(len(latencies), ended - begun), {
        "failed": float(sum(not r.ok for r in records)),
        "mean_batch": sum(batches) / len(batches) if batches else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


@contextmanager
def persister_batches() -> Iterator[list[int]]:
    """Records the size of each batch the Persister is handed; what it does is unchanged. The batch size
    is set by the consumer's linger, not only by db_batch_size, and it decides the per-row overheads."""
    sizes: list[int] = []
    original = Persister.__call__

    def observed(self: Persister, batch: Sequence[Delivery]) -> None:
        sizes.append(len(batch))
        original(self, batch)

    Persister.__call__ = observed  # type: ignore[method-assign]
    try:
        yield sizes
    finally:
        Persister.__call__ = original  # type: ignore[method-assign]


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- (c) the db dispatcher ----------------------------------------------------------------------------


def prefill(ids: Ids, n: int) -> None:
    publisher = ConfirmingPublisher(BROKER_URL)
    try:
        for start in range(0, n, 1000):
            publisher.publish_batch(
                [(QUEUE, notification(ids, i).SerializeToString()) for i in range(start, min(n, start + 1000))]
            )
    finally:
        publisher.close()


def persister(ctx: Context, n: int) -> tuple[float, dict[str, float]]:
    """Pre-fills db-sms with n messages, starts a db-sms dispatcher and times until all n rows are stored."""
    purge_queues(BROKER_URL)
    truncate_notifications(ctx.engine)
    prefill(ctx.ids, n)
    settings = replace(ctx.settings, dispatcher_address=f"127.0.0.1:{free_port()}")
    first_at = 0.0

    def stored() -> bool:
        nonlocal first_at
        count = count_rows(ctx.engine)
        if count and not first_at:
            first_at = time.monotonic()
        return count >= n

    with persister_batches() as batches:
        started = time.monotonic()
        cpu_before = time.process_time()
        stop = bootstrap.start_dispatcher(settings, ctx.engine, [QUEUE])
        try:
            # Polled every 20 ms: the count costs this process CPU too, the Persister's process.
            done = wait_until(stored, timeout=90.0, interval=0.02)
            finished = time.monotonic()
            cpu = time.process_time() - cpu_before
            dead = queue_depths(BROKER_URL)["dead-letter"][0]
        finally:
            stop()
            purge_queues(BROKER_URL)  # send-sms now holds the n messages the Persister passed on
    count = count_rows(ctx.engine)
    truncate_notifications(ctx.engine)
    if not done:
        raise RuntimeError(f"the db dispatcher stored {count} of {n} rows within 90 s")
    steady = rate(n, finished - first_at) if first_at and finished > first_at else 0.0
    return rate(n, finished - started), {
        "steady": steady,
        "startup_ms": (first_at - started) * 1000,
        "dead": float(dead),
        "cpu_us": cpu / n * 1e6,
        "mean_batch": _mean(batches),
    }


def insert_batch_alone(ctx: Context, n: int, batch: int) -> float:
    """herald.db.notifications.insert_batch with the Persister's rows, no broker: the SQL layer's share."""
    truncate_notifications(ctx.engine)
    data = [_row(notification(ctx.ids, i)) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, batch):
        with ctx.engine.begin() as conn:
            notifications_db.insert_batch(conn, data[start : start + batch])
    elapsed = time.perf_counter() - started
    truncate_notifications(ctx.engine)
    return rate(n, elapsed)


# --- where the CPU goes: one thread, no contention ---------------------------------------------------


def _cpu_per_call(call: Callable[[], object], n: int) -> float:
    """Microseconds of this thread's CPU per call (waits for PostgreSQL excluded), after one warm-up."""
    call()
    started = time.thread_time()
    for _ in range(n):
        call()
    return (time.thread_time() - started) / n * 1e6


def cpu_per_stage(ctx: Context, n: int) -> list[Figure]:
    """The use cases a message passes through, called directly: what each costs one core."""
    demo = ctx.demo
    box = SecretBox(SECRET_KEY)
    # Uncached is what every call cost before the cache and what a call costs when its entry expired.
    uncached = Authenticator(ctx.engine, box, cache_seconds=0.0)
    cached = Authenticator(ctx.engine, box, cache_seconds=ctx.settings.cache_seconds)
    key = split_key(demo.research_key)
    header = f"Bearer {create_token(key.secret, key.service_id)}"
    caller = uncached.authenticate(header)
    sender = Sender(ctx.engine, lambda _key, _body: None, ctx.settings.email_domain)
    command = SendCommand(
        type=NotificationType.SMS,
        to="07700 900123",
        template_id=demo.research_sms_template_id,
        personalisation={"name": "Ada", "code": "1234"},
    )
    truncate_notifications(ctx.engine)
    messages = [notification(ctx.ids, i) for i in range(n + 1)]
    with ctx.engine.begin() as conn:
        notifications_db.insert_batch(conn, [_row(m) for m in messages[:250]])
        notifications_db.insert_batch(conn, [_row(m) for m in messages[250:]])
    batch = [_row(notification(ctx.ids, i)) for i in range(ctx.settings.db_batch_size)]

    def insert() -> None:
        for row in batch:
            row["id"] = str(uuid.uuid4())
        with ctx.engine.begin() as conn:
            notifications_db.insert_batch(conn, batch)

    def checkout() -> None:
        with ctx.engine.connect():
            pass

    batches = max(2, n // 100)
    cases: list[tuple[str, str, Callable[[], object]]] = [
        (
            "cpu.authenticate",
            "Authenticator.authenticate, uncached (2 queries, Fernet, JWT)",
            lambda: uncached.authenticate(header),
        ),
        (
            "cpu.authenticate_cached",
            f"Authenticator.authenticate, cached ({ctx.settings.cache_seconds:g} s, as ingest runs it)",
            lambda: cached.authenticate(header),
        ),
        ("cpu.send", "Sender.send without publish (template query, render)", lambda: sender.send(caller, command)),
        ("cpu.checkout", "engine.connect() and close, no query (pool checkout and reset)", checkout),
    ]
    result = [Figure(key, label, _cpu_per_call(call, n), "µs", n) for key, label, call in cases]
    per_batch = _cpu_per_call(insert, batches)
    result.append(
        Figure(
            "cpu.insert_batch",
            f"insert_batch, per row of a {len(batch)}-row batch",
            per_batch / len(batch),
            "µs",
            batches * len(batch),
            note=f"{per_batch / 1000:,.0f} ms of CPU per batch",
        )
    )
    truncate_notifications(ctx.engine)
    return result


# --- (d) end to end -----------------------------------------------------------------------------------


# CPU seconds used so far, per process of the stack (its role as the key).
CpuProbe = Callable[[], dict[str, float]]


@contextmanager
def stack(ctx: Context) -> Iterator[tuple[Settings, CpuProbe]]:
    """ingest, a db-* dispatcher, a send-* dispatcher, callbacks and the provider simulator, as the
    integration tests start them: one process, free ports."""
    s = replace(
        ctx.settings,
        ingest_address=f"127.0.0.1:{free_port()}",
        callbacks_address=f"127.0.0.1:{free_port()}",
    )
    sim = ProviderSimulator("127.0.0.1", 0, s.callbacks_address, 0.05)
    sim.start()
    base = f"http://127.0.0.1:{sim.port}"
    s = replace(s, mmg_url=base, firetext_url=base, ses_url=base)
    stops: list[bootstrap.Stop] = []
    try:
        stops.append(bootstrap.start_callbacks(s, ctx.engine))
        for queues in (["db-sms", "db-email"], ["send-sms", "send-email"]):
            own = replace(s, dispatcher_address=f"127.0.0.1:{free_port()}")
            stops.append(bootstrap.start_dispatcher(own, ctx.engine, queues))
        stops.append(bootstrap.start_ingest(s, ctx.engine))
        yield s, lambda: {"stack": time.process_time()}  # every service's threads: this process
    finally:
        for stop in reversed(stops):
            stop()
        sim.stop()


def service_process(pipe: Pipe, fields: dict[str, Any], role: str, queues: list[str]) -> None:
    """One Herald service in its own process, as `herald ingest` / `herald dispatcher` would run it.
    Settings travel as a dict: a pickled slots dataclass breaks if the class changed meanwhile."""
    settings = Settings(**fields)
    engine = make_engine(settings.database_url)
    if role == "ingest":
        stop = bootstrap.start_ingest(settings, engine)
    elif role == "callbacks":
        stop = bootstrap.start_callbacks(settings, engine)
    else:
        stop = bootstrap.start_dispatcher(settings, engine, queues)
    serve_commands(pipe, {"cpu": time.process_time})
    stop()
    engine.dispose()


@contextmanager
def stack_processes(ctx: Context) -> Iterator[tuple[Settings, CpuProbe]]:
    """The same services, one process each (research mode needs no provider simulator)."""
    s = replace(
        ctx.settings,
        ingest_address=f"127.0.0.1:{free_port()}",
        callbacks_address=f"127.0.0.1:{free_port()}",
    )
    roles = {
        "callbacks": ("callbacks", []),
        "db dispatcher": ("dispatcher", ["db-sms", "db-email"]),
        "send dispatcher": ("dispatcher", ["send-sms", "send-email"]),
        "ingest": ("ingest", []),
    }
    processes: dict[str, LoadProcess] = {}
    try:
        for name, (role, queues) in roles.items():
            own = replace(s, dispatcher_address=f"127.0.0.1:{free_port()}")
            processes[name] = LoadProcess(service_process, asdict(own), role, queues)
        yield s, lambda: {name: float(p.ask("cpu", 10.0)) for name, p in processes.items()}
    finally:
        for process in reversed(processes.values()):
            process.close()


def _until_found(client: IngestClient, notification_id: str, timeout: float = 10.0) -> float:
    """Seconds until GetNotification finds the id (NOT_FOUND until the db dispatcher stored it)."""
    answered = time.monotonic()
    deadline = answered + timeout
    while time.monotonic() < deadline:
        try:
            client.get_notification(notification_id)
            return time.monotonic() - answered
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
    raise TimeoutError(f"not found within {timeout}s")


class StoredWatcher:
    """Under load, asking GetNotification again and again would add RPCs to the very server being
    measured (each one authenticates: two queries). This thread, in the load process, asks PostgreSQL
    instead, every few milliseconds and for all pending ids at once: the row GetNotification would read."""

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.windows: list[float] = []
        self._thread = threading.Thread(target=self._run, name="stored-watcher", daemon=True)
        self._thread.start()

    def answered(self, notification_id: str) -> None:
        with self._lock:
            self._pending[notification_id] = time.monotonic()

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


def sendsms_load(
    pipe: Pipe, target: str, api_key: str, template_id: str, callers: int, per_caller: int, samples: int
) -> None:
    """Runs in its own process: `callers` threads on one IngestClient (one channel, a fresh token per
    call, as Notify's clients do). Every k-th answer is handed to a StoredWatcher."""
    client = IngestClient(target, api_key)
    every = max(1, callers * per_caller // samples) if samples else 10**9

    def sms(i: int) -> str:
        return str(client.send_sms("07700 900123", template_id, {"name": "Ada", "code": str(i)}).id)

    def load() -> dict[str, Any]:
        sends: list[float] = []
        watcher = StoredWatcher()

        def one(i: int) -> str:
            started = time.monotonic()
            notification_id = sms(i)
            sends.append(time.monotonic() - started)  # list.append is atomic: no lock needed
            if i % every == 0:
                watcher.answered(notification_id)
            return notification_id

        records, begun, ended = run_callers(callers, per_caller, one, timeout=120.0)
        return {
            "accepted": sum(r.ok for r in records),
            "failed": [r.answer for r in records if not r.ok][:5],
            "failures": sum(not r.ok for r in records),
            "begun": begun,
            "ended": ended,
            "sends": sends,
            "windows": watcher.finish(60.0),
        }

    def idle() -> dict[str, Any]:
        # One caller on a quiet stack: here the API itself is asked, as a user would.
        windows = []
        for i in range(samples):
            windows.append(_until_found(client, sms(i)))
        return {"windows": windows}

    sms(0)  # warm the channel, the pools and the caches (one message: the parent counts it)
    serve_commands(pipe, {"load": load, "idle": idle})
    client.close()


def end_to_end(
    ctx: Context,
    running: tuple[Settings, CpuProbe],
    label: str,
    api_key: str,
    template_id: str,
    n: int,
    sizes: Sizes,
) -> list[Figure]:
    settings, stack_cpu = running
    purge_queues(BROKER_URL)
    truncate_notifications(ctx.engine)
    per_caller = max(1, n // sizes.e2e_callers)
    load = LoadProcess(
        sendsms_load,
        settings.ingest_address,
        api_key,
        template_id,
        sizes.e2e_callers,
        per_caller,
        sizes.window_samples,
    )
    try:
        if not wait_until(lambda: count_rows(ctx.engine, _FINAL) >= 1, 30.0, 0.05):
            raise RuntimeError("the warm-up message never became final")
        warm = count_rows(ctx.engine)
        cpu_before = stack_cpu()
        with persister_batches() as batches:
            result = load.ask("load", 180.0)
        expected = warm + int(result["accepted"])
        # What ingest left behind when the callers stopped, and how fast the rest of the stack drains it.
        drain_from, backlog = time.monotonic(), expected - count_rows(ctx.engine, _FINAL)
        done = wait_until(lambda: count_rows(ctx.engine, _FINAL) >= expected, 120.0, 0.05)
        final_at = time.monotonic()
        cpu_after = stack_cpu()
        cpu_by = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        cpu = sum(cpu_by.values())
        delivered = count_rows(ctx.engine, (st.DELIVERED,)) - warm
        if not done:
            raise RuntimeError(f"{label}: {count_rows(ctx.engine, _FINAL)} of {expected} final within 120 s")
        idle = load.ask("idle", 120.0)
        dead = queue_depths(BROKER_URL)["dead-letter"][0]
    finally:
        load.close()
        purge_queues(BROKER_URL)
    accepted = int(result["accepted"])
    sends: list[float] = result["sends"]
    windows: list[float] = result["windows"]
    quiet: list[float] = idle["windows"]
    failures = f"; {result['failures']} failed: {result['failed']}" if result["failures"] else ""
    failures += f"; {dead} dead-lettered" if dead else ""
    key = "_".join(label.replace(",", "").split())
    return [
        Figure(
            f"e2e.{key}.accepted",
            f"SendSms accepted, {label}, {sizes.e2e_callers} callers",
            rate(accepted, result["ended"] - result["begun"]),
            "calls/s",
            accepted,
            compare=("raw.grpc_unary",),
            note=failures.removeprefix("; "),
        ),
        Figure(
            f"e2e.{key}.final",
            f"SendSms to delivered, {label}",
            rate(accepted, final_at - result["begun"]),
            "msg/s",
            accepted,
            compare=("raw.grpc_unary",),
            note=f"{delivered} of {accepted} delivered; from the first call to the last final status; "
            f"stack CPU {cpu / max(accepted, 1) * 1000:.1f} ms per message"
            + (
                " (" + ", ".join(f"{k} {v / max(accepted, 1) * 1000:.1f}" for k, v in cpu_by.items()) + ")"
                if len(cpu_by) > 1
                else ""
            )
            + f", {cpu / (final_at - result['begun']):.2f} cores busy on average; after the last answer "
            f"{backlog} were not final yet, drained at {rate(backlog, final_at - drain_from):,.0f} msg/s",
        ),
        Figure(
            f"e2e.{key}.send_p50",
            f"SendSms latency p50, {label}, under load",
            percentile(sends, 50) * 1000,
            "ms",
            len(sends),
        ),
        Figure(
            f"e2e.{key}.send_p99",
            f"SendSms latency p99, {label}, under load",
            percentile(sends, 99) * 1000,
            "ms",
            len(sends),
        ),
        Figure(
            f"e2e.{key}.window_load",
            f"accepted -> stored window p50, {label}, under load",
            percentile(windows, 50) * 1000,
            "ms",
            len(windows),
            note=f"p99 {percentile(windows, 99) * 1000:.0f} ms, max {max(windows, default=0) * 1000:.0f} ms; "
            "answer to the row seen in PostgreSQL (polled every 5 ms by the load process)"
            + (f"; db dispatcher batches of {_mean(batches):.0f} on average while the callers ran" if batches else ""),
        ),
        Figure(
            f"e2e.{key}.window_idle",
            f"accepted -> stored window p50, {label}, one caller, idle",
            percentile(quiet, 50) * 1000,
            "ms",
            len(quiet),
            note=f"p99 {percentile(quiet, 99) * 1000:.1f} ms, max {max(quiet, default=0) * 1000:.1f} ms; "
            "answer to the first GetNotification that finds it",
        ),
    ]


# --- the steps --------------------------------------------------------------------------------------


def steps(ctx: Context, sizes: Sizes) -> list[tuple[str, Callable[[], list[Figure]]]]:
    body = notification(ctx.ids, 1).SerializeToString()

    def confirming() -> list[Figure]:
        figures = []
        for batch in (100, 1000):
            med, runs = median_of(REPEATS, lambda batch=batch: publish_batches(sizes.publish, batch, body))  # type: ignore[misc]
            figures.append(
                Figure(
                    f"herald.publish_batch_{batch}",
                    f"ConfirmingPublisher.publish_batch, {batch:,} per batch",
                    med,
                    "msg/s",
                    sizes.publish,
                    compare=("raw.publish", "raw.publish_confirm_each"),
                    runs=runs,
                )
            )
        return figures

    def threaded() -> list[Figure]:
        value, detail = publisher_thread(sizes.thread_callers, sizes.thread_publish, body)
        return [
            Figure(
                "herald.publisher_thread",
                f"PublisherThread, {sizes.thread_callers} threads publishing",
                value,
                "msg/s",
                sizes.thread_publish,
                compare=("raw.publish", "raw.publish_confirm_each"),
                note=f"mean batch {detail['mean_batch']:.1f}; publish() p50 {detail['p50_ms']:.1f} ms, "
                f"p99 {detail['p99_ms']:.1f} ms",
            )
        ]

    def dispatcher() -> list[Figure]:
        value, detail = persister(ctx, sizes.persist)
        alone = insert_batch_alone(ctx, sizes.persist, sizes.insert_batch)
        return [
            Figure(
                "herald.persister",
                "db dispatcher (Persister): db-sms -> rows",
                value,
                "rows/s",
                sizes.persist,
                compare=("raw.pg_executemany", "raw.pg_multirow", "raw.pg_copy", "raw.consume"),
                note=f"db_batch_size {ctx.settings.db_batch_size}, linger {ctx.settings.db_batch_linger} s, "
                f"prefetch {ctx.settings.prefetch}: batches of {detail['mean_batch']:.0f} on average; "
                f"CPU {detail['cpu_us']:,.0f} µs per row; "
                f"{detail['steady']:,.0f} rows/s from the first row; first row after {detail['startup_ms']:.0f} ms"
                + (f"; {detail['dead']:.0f} dead-lettered" if detail["dead"] else ""),
            ),
            Figure(
                "herald.insert_batch",
                f"insert_batch alone, {sizes.insert_batch} per batch (no broker)",
                alone,
                "rows/s",
                sizes.persist,
                compare=("raw.pg_multirow",),
                note="SQLAlchemy multi-row INSERT ... ON CONFLICT DO NOTHING, commit per batch",
            ),
        ]

    def e2e() -> list[Figure]:
        figures: list[Figure] = []
        d = ctx.demo
        with stack(ctx) as running:
            figures += end_to_end(
                ctx, running, "research mode", d.research_key, d.research_sms_template_id,
                sizes.e2e_research, sizes,
            )  # fmt: skip
            figures += end_to_end(ctx, running, "live service", d.live_key, d.sms_template_id, sizes.e2e_live, sizes)
        truncate_notifications(ctx.engine)
        return figures

    def e2e_processes() -> list[Figure]:
        d = ctx.demo
        with stack_processes(ctx) as running:
            figures = end_to_end(
                ctx, running, "research mode, a process per service", d.research_key,
                d.research_sms_template_id, sizes.e2e_research, sizes,
            )  # fmt: skip
        truncate_notifications(ctx.engine)
        # Latency rows of this variant add little to the table: keep throughput, windows and p99.
        return [f for f in figures if not f.key.endswith("send_p50")]

    return [
        ("herald: CPU per stage", lambda: cpu_per_stage(ctx, sizes.cpu_calls)),
        ("herald: ConfirmingPublisher.publish_batch", confirming),
        ("herald: PublisherThread", threaded),
        ("herald: db dispatcher", dispatcher),
        ("herald: end to end", e2e),
        ("herald: end to end, a process per service", e2e_processes),
    ]
