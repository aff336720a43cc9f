"""Herald's components, each read against the raw limit of the same run (bench/raw.py), and the
benchmark's database (setup, truncation) that bench/goals.py shares.

(a) ConfirmingPublisher.publish_batch, (b) PublisherThread under 64 threads, (c) the db dispatcher
(Persister) draining a pre-filled db-sms, (d) CPU per use case on one thread. Herald as deployed (a
process per service) is bench/goals.py's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from sqlalchemy import Engine, text

from bench import (
    BROKER_URL,
    DATABASE_URL,
    Figure,
    Ids,
    median_of,
    notification,
    percentile,
    purge_queues,
    queue_depths,
    rate,
    run_callers,
    wait_until,
)
from bench.raw import _NOW
from bench.stack import free_port
from herald import bootstrap
from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.db.engine import make_engine, upgrade
from herald.domain.apikeys import create_token, split_key
from herald.queues import ConfirmingPublisher, Delivery, PublisherThread
from herald.queues.codec import pack
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.auth import Authenticator
from herald.service_layer.delivery import Persister, _row
from herald.service_layer.sending import SendCommand, Sender
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType

QUEUE = "db-sms"
SECRET_KEY = "bench-secret"
REPEATS = 3


@dataclass(frozen=True, slots=True)
class Sizes:
    publish: int = 10_000
    thread_callers: int = 64
    thread_publish: int = 12_800
    persist: int = 10_000
    insert_batch: int = 500
    cpu_calls: int = 300


@dataclass(frozen=True, slots=True)
class Context:
    engine: Engine
    settings: Settings
    demo: DemoSetup
    ids: Ids  # the research-mode service's, for pre-filled messages and raw rows


def setup() -> Context:
    """Creates and migrates herald_bench, empties it, and adds the demo services, keys and templates.
    Notify's rate limit (3,000 requests a minute by default) would refuse a benchmark's load within a
    second, so the demo services' limit is lifted: what is measured is the platform, not the product rule."""
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
    with engine.begin() as conn:
        conn.execute(text("UPDATE services SET rate_limit = 2000000000"))
    with engine.connect() as conn:
        key_id = conn.scalar(text("SELECT id FROM api_keys WHERE service_id = :s"), {"s": demo.research_service_id})
    settings = Settings.from_env(database_url=DATABASE_URL, broker_url=BROKER_URL, secret_key=SECRET_KEY)
    ids = Ids(demo.research_service_id, demo.research_sms_template_id, str(key_id))
    return Context(engine, settings, demo, ids)


def truncate_notifications(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE notifications, receipts_pending"))


def count_rows(engine: Engine, statuses: tuple[str, ...] = ()) -> int:
    query = "SELECT count(*) FROM notifications"
    with engine.connect() as conn:
        if statuses:
            return int(conn.scalar(text(query + " WHERE status IN :s").bindparams(s=statuses)) or 0)
        return int(conn.scalar(text(query)) or 0)


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
    try:
        publisher.publish(QUEUE, body)  # connect and declare outside the timing
        purge_queues(BROKER_URL)

        def one(_: int) -> str:
            publisher.publish(QUEUE, body)
            return ""

        records, begun, ended = run_callers(callers, n // callers, one, timeout=60.0)
        # Each round of the thread is one broker message per queue: how many notifications it gathered.
        messages = queue_depths(BROKER_URL)[QUEUE][0]
    finally:
        publisher.close()
        purge_queues(BROKER_URL)
    latencies = [r.ended - r.started for r in records if r.ok]
    return rate(len(latencies), ended - begun), {
        "failed": float(sum(not r.ok for r in records)),
        "mean_batch": len(records) / messages if messages else 0.0,
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
            items = [notification(ids, i).SerializeToString() for i in range(start, min(n, start + 1000))]
            # As ingest publishes them: many notifications to one broker message.
            publisher.publish_batch([(QUEUE, pack(items[k : k + 100])) for k in range(0, len(items), 100)])
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
    data = [_row(notification(ctx.ids, i), _NOW) for i in range(n)]
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

    def no_publish(routing_key: str, item: bytes, timeout: float = 15.0) -> None:
        """Sender's work up to the publish, which PublisherThread's figure measures."""

    sender = Sender(ctx.engine, no_publish, ctx.settings.email_domain)
    command = SendCommand(
        type=NotificationType.SMS,
        to="07700 900123",
        template_id=demo.research_sms_template_id,
        personalisation={"name": "Ada", "code": "1234"},
    )
    truncate_notifications(ctx.engine)
    messages = [notification(ctx.ids, i) for i in range(n + 1)]
    with ctx.engine.begin() as conn:
        notifications_db.insert_batch(conn, [_row(m, _NOW) for m in messages[:250]])
        notifications_db.insert_batch(conn, [_row(m, _NOW) for m in messages[250:]])
    batch = [_row(notification(ctx.ids, i), _NOW) for i in range(ctx.settings.db_batch_size)]

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
                note=f"{detail['mean_batch']:.1f} notifications per broker message on average; "
                f"publish() p50 {detail['p50_ms']:.1f} ms, "
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
                f"prefetch {ctx.settings.prefetch}: {detail['mean_batch']:.1f} broker messages (100 notifications "
                "each) per batch on average; "
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

    return [
        ("herald: CPU per stage", lambda: cpu_per_stage(ctx, sizes.cpu_calls)),
        ("herald: ConfirmingPublisher.publish_batch", confirming),
        ("herald: PublisherThread", threaded),
        ("herald: db dispatcher", dispatcher),
    ]
