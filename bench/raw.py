"""The machine's raw limits, measured with the libraries Herald uses, in the same run as Herald's figures.

Publishes go through Herald's own exchange to `db-sms` (so topology and message size match), database
rows are Herald's `notifications` rows into the real table (same indexes and foreign keys), and gRPC is
a trivial bytes-in-bytes-out servicer on Herald's own server class (sync, 32 worker threads, Herald's
interceptor), in a process of its own as ingest is.
"""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from typing import Any

import grpc
import psycopg2
import psycopg2.extras
from kombu import Connection, Consumer, Producer
from sqlalchemy.engine import make_url

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
    rate,
    run_callers,
    serve_commands,
)
from herald.domain.apikeys import create_token
from herald.queues.topology import CONTENT_TYPE, EXCHANGE, declare_all, queue
from herald.service_layer.delivery import _row
from herald.v1 import ingest_pb2

# The Persister's clock for rows made outside it (none is scheduled, so any instant will do).
_NOW = datetime.now(UTC)

QUEUE = "db-sms"
REPEATS = 3


@dataclass(frozen=True, slots=True)
class Sizes:
    publish: int = 20_000
    confirm_each: int = 3_000
    pg_row_commit: int = 2_000
    pg_batch: int = 20_000
    pg_executemany: int = 5_000  # one round trip per row: 20,000 would take ~5-10 s per run here
    grpc_callers: int = 64
    grpc_calls: int = 6_400
    batch_items: int = 1_000
    batch_callers: int = 4
    batch_calls: int = 200
    repeats: int = REPEATS


# --- RabbitMQ through kombu --------------------------------------------------------------------------


def _publish(producer: Producer, body: bytes) -> None:
    # Exactly the arguments ConfirmingPublisher passes.
    producer.publish(body, routing_key=QUEUE, content_type=CONTENT_TYPE, content_encoding="binary", delivery_mode=2)


def kombu_publish(n: int, body: bytes, timeout: float = 30.0) -> float:
    """Persistent, no confirms. Timed until the queue holds all n (its count lags the socket a little)."""
    with Connection(BROKER_URL) as conn:
        declare_all(conn)
        channel = conn.channel()
        producer = Producer(channel, exchange=EXCHANGE)
        declared = queue(QUEUE)(channel)
        started = time.perf_counter()
        for _ in range(n):
            _publish(producer, body)
        deadline = time.monotonic() + timeout
        held = 0
        while time.monotonic() < deadline:
            _, held, _ = declared.queue_declare(passive=True)
            if held >= n:
                break
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        channel.close()
    if held < n:
        raise RuntimeError(f"the queue holds {held} of {n} published messages after {timeout}s")
    return rate(n, elapsed)


def kombu_publish_confirm_each(n: int, body: bytes) -> float:
    """py-amqp's confirm_publish: every basic_publish waits for its own basic.ack."""
    with Connection(BROKER_URL, transport_options={"confirm_publish": True}) as conn:
        declare_all(conn)
        producer = Producer(conn.default_channel, exchange=EXCHANGE)
        started = time.perf_counter()
        for _ in range(n):
            _publish(producer, body)
        elapsed = time.perf_counter() - started
    return rate(n, elapsed)


def kombu_consume(n: int, timeout: float = 30.0) -> float:
    """Prefetch 100, one basic.ack per message, until n are consumed (the queue must hold them)."""
    got = 0

    def on_message(message: Any) -> None:
        nonlocal got
        message.ack()
        got += 1

    with Connection(BROKER_URL) as conn:
        channel = conn.channel()
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        with Consumer(channel, queues=[queue(QUEUE)], on_message=on_message, prefetch_count=100):
            while got < n and time.monotonic() < deadline:
                conn.drain_events(timeout=1.0)
        elapsed = time.perf_counter() - started
        channel.close()
    if got < n:
        raise RuntimeError(f"consumed {got} of {n} within {timeout}s")
    return rate(n, elapsed)


# --- PostgreSQL through psycopg2 ----------------------------------------------------------------------

COLUMNS = (
    "id",
    "service_id",
    "template_id",
    "template_version",
    "api_key_id",
    "key_type",
    "notification_type",
    "to",
    "personalisation",
    "body",
    "subject",
    "reference",
    "status",
    "billable_units",
    "created_at",
)
_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
TABLE = "notifications"
# The same columns with only a primary key: no foreign key check or secondary index per row, to show
# what Herald's schema costs. Created and dropped by the run, in the benchmark's own database.
BARE = "bench_bare_notifications"
CREATE_BARE = f"CREATE TABLE {BARE} (LIKE notifications INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (id))"


def _insert(table: str) -> str:
    return f"INSERT INTO {table} ({_COLUMN_LIST}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"


Row = tuple[Any, ...]


def pg_connect() -> Any:
    url = make_url(DATABASE_URL)
    return psycopg2.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, dbname=url.database
    )


def rows(ids: Ids, n: int) -> list[Row]:
    """Herald's own rows: the Persister's dict for a real NotificationMessage, as a tuple."""
    return [tuple(_row(notification(ids, i), _NOW)[c] for c in COLUMNS) for i in range(n)]


def _truncate(conn: Any, table: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {table}")
    conn.commit()


def _timed_insert(data: Sequence[Row], table: str, insert: Callable[[Any, Sequence[Row]], None]) -> float:
    conn = pg_connect()
    try:
        _truncate(conn, table)
        started = time.perf_counter()
        with conn.cursor() as cur:
            insert(cur, data)
        conn.commit()
        elapsed = time.perf_counter() - started
        _truncate(conn, table)
    finally:
        conn.close()
    return rate(len(data), elapsed)


def pg_row_commit(data: Sequence[Row], table: str = TABLE) -> float:
    sql = _insert(table)

    def insert(cur: Any, chunk: Sequence[Row]) -> None:
        for row in chunk:
            cur.execute(sql, row)
            cur.connection.commit()

    return _timed_insert(data, table, insert)


def pg_executemany(data: Sequence[Row], table: str = TABLE, batch: int = 1000) -> float:
    """psycopg2's executemany: one statement per row, sent one after another; a commit per batch."""
    sql = _insert(table)

    def insert(cur: Any, chunk: Sequence[Row]) -> None:
        for start in range(0, len(chunk), batch):
            cur.executemany(sql, chunk[start : start + batch])
            cur.connection.commit()

    return _timed_insert(data, table, insert)


def pg_multirow(data: Sequence[Row], table: str = TABLE, batch: int = 1000) -> float:
    """One multi-row INSERT ... VALUES per batch (psycopg2.extras.execute_values), a commit per batch:
    the shape of Herald's insert_batch, without SQLAlchemy."""
    sql = f"INSERT INTO {table} ({_COLUMN_LIST}) VALUES %s"

    def insert(cur: Any, chunk: Sequence[Row]) -> None:
        for start in range(0, len(chunk), batch):
            psycopg2.extras.execute_values(cur, sql, chunk[start : start + batch], page_size=batch)
            cur.connection.commit()

    return _timed_insert(data, table, insert)


def pg_copy(data: Sequence[Row], table: str = TABLE) -> float:
    """COPY FROM STDIN, CSV built in Python inside the timing (a real writer pays for it too)."""
    sql = f"COPY {table} ({_COLUMN_LIST}) FROM STDIN WITH (FORMAT csv)"

    def insert(cur: Any, chunk: Sequence[Row]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in chunk:
            writer.writerow(v.isoformat() if hasattr(v, "isoformat") else v for v in row)
        buffer.seek(0)
        cur.copy_expert(sql, buffer)

    return _timed_insert(data, table, insert)


@contextmanager
def bare_table() -> Iterator[str]:
    conn = pg_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {BARE}")
            cur.execute(CREATE_BARE)
        conn.commit()
        yield BARE
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {BARE}")
        conn.commit()
        conn.close()


# --- gRPC ---------------------------------------------------------------------------------------------

_ECHO = "/bench.Echo/Call"
_CONFIRMED = "/bench.Echo/Confirmed"
_BATCH = "/bench.Echo/Batch"
_EMAIL_BATCH = "/bench.Echo/EmailBatch"

EMAIL_TO = "ada@example.com"
BatchRequest = ingest_pb2.SendSmsBatchRequest | ingest_pb2.SendEmailBatchRequest


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _batch_echo(request: BatchRequest, context: grpc.ServicerContext) -> ingest_pb2.SendBatchResponse:
    """The least a batch servicer does: parse the request (its deserializer did), answer every item with
    an id."""
    answer = ingest_pb2.SendBatchResponse()
    for _ in request.items:
        answer.results.add().accepted.id = str(uuid.uuid4())
    return answer


def echo_service(pipe: Pipe, broker_url: str = "") -> None:
    """Runs in its own process, as ingest does: trivial servicers on Herald's own server
    (herald.grpcsrv.server.Server: sync grpc.server, 32 threads, Herald's interceptor, health and
    reflection), so that the only difference from ingest is the work ingest does per call. `Call` echoes
    bytes; `Batch` and `EmailBatch` parse a SendSmsBatchRequest or a SendEmailBatchRequest and answer
    each item with a new id. With `broker_url`, `Confirmed` echoes the bytes once the broker has
    confirmed them, published as ingest publishes (Herald's PublisherThread, to db-sms): the least that a
    servicer answering only after a durable hand-off does."""
    from herald.grpcsrv.server import Server, ServiceBinding
    from herald.queues import PublisherThread
    from herald.queues.topology import use_queue_type
    from herald.settings import Settings

    publisher = None
    if broker_url:
        use_queue_type(Settings.from_env().queue_type)
        publisher = PublisherThread(broker_url)

    def confirmed(request: bytes, context: grpc.ServicerContext) -> bytes:
        assert publisher is not None
        publisher.publish(QUEUE, request, 10.0)
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Call": grpc.unary_unary_rpc_method_handler(_echo),
            "Confirmed": grpc.unary_unary_rpc_method_handler(confirmed),
            "Batch": grpc.unary_unary_rpc_method_handler(
                _batch_echo,
                request_deserializer=ingest_pb2.SendSmsBatchRequest.FromString,
                response_serializer=ingest_pb2.SendBatchResponse.SerializeToString,
            ),
            "EmailBatch": grpc.unary_unary_rpc_method_handler(
                _batch_echo,
                request_deserializer=ingest_pb2.SendEmailBatchRequest.FromString,
                response_serializer=ingest_pb2.SendBatchResponse.SerializeToString,
            ),
        },
    )

    def add(_servicer: Any, server: grpc.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    server = Server("127.0.0.1:0", [ServiceBinding(None, add, "bench.Echo")])
    server.start()
    serve_commands(pipe, {"port": lambda: server.port, "cpu": time.process_time})
    server.stop(1.0)
    if publisher is not None:
        publisher.close()


def echo_load(
    pipe: Pipe, target: str, callers: int, per_caller: int, payload: bytes, method: str, signed: bool = False
) -> None:
    """Runs in its own process: `callers` threads on one channel, blocking unary calls; `signed`: each call
    carries a fresh API key token, as Herald's load does (bench/load.py)."""
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    call = channel.unary_unary(method)
    service_id, secret = str(uuid.uuid4()), str(uuid.uuid4())

    def one(_: int) -> str:
        metadata = [("authorization", f"Bearer {create_token(secret, service_id)}")] if signed else None
        call(payload, metadata=metadata, timeout=30.0)
        return ""

    def load() -> dict[str, float]:
        records, begun, ended = run_callers(callers, per_caller, one, timeout=90.0)
        latencies = [r.ended - r.started for r in records if r.ok]
        return {
            "calls": float(len(latencies)),
            "failed": float(sum(not r.ok for r in records)),
            "seconds": ended - begun,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
        }

    run_callers(callers, 5, one, timeout=30.0)  # warm the channel and the server's threads
    serve_commands(pipe, {"load": load})
    channel.close()


def grpc_echo(
    callers: int,
    calls: int,
    payload: bytes,
    repeats: int,
    method: str = _ECHO,
    signed: bool = False,
    broker_url: str = "",
) -> tuple[float, list[float], dict[str, float]]:
    """Calls a second, median of `repeats` runs; the detail of the median run, with the server's CPU per call."""
    server = LoadProcess(echo_service, broker_url)
    try:
        port = server.ask("port", 10.0)
        load = LoadProcess(echo_load, f"127.0.0.1:{port}", callers, max(1, calls // callers), payload, method, signed)
        try:
            results = []
            for _ in range(repeats):
                cpu_before = server.ask("cpu", 10.0)
                result = load.ask("load", 120.0)
                result["server_cpu_us"] = (server.ask("cpu", 10.0) - cpu_before) / max(result["calls"], 1) * 1e6
                results.append(result)
        finally:
            load.close()
    finally:
        server.close()
    runs = [rate(int(r["calls"]), r["seconds"]) for r in results]
    ordered = sorted(range(len(runs)), key=runs.__getitem__)
    return runs[ordered[len(runs) // 2]], runs, results[ordered[len(runs) // 2]]


def unary_payload(ids: Ids) -> bytes:
    """A SendSmsRequest as the benchmark's unary load sends it."""
    request = ingest_pb2.SendSmsRequest(phone_number="07700 900123", template_id=ids.template_id)
    request.personalisation.update({"name": "Ada", "code": "1234"})
    return request.SerializeToString()


def batch_request(template_id: str, size: int, email: bool = False) -> BatchRequest:
    """A SendSmsBatchRequest (or SendEmailBatchRequest) of `size` items, as the benchmark's batch load
    sends it and the batch servicers above are timed on."""
    if email:
        emails = [ingest_pb2.SendEmailRequest(email_address=EMAIL_TO, template_id=template_id) for _ in range(size)]
        for i, message in enumerate(emails):
            message.personalisation.update({"name": "Ada", "code": str(i)})
        return ingest_pb2.SendEmailBatchRequest(items=emails)
    texts = [ingest_pb2.SendSmsRequest(phone_number="07700 900123", template_id=template_id) for _ in range(size)]
    for i, text in enumerate(texts):
        text.personalisation.update({"name": "Ada", "code": str(i)})
    return ingest_pb2.SendSmsBatchRequest(items=texts)


# --- the steps --------------------------------------------------------------------------------------


def steps(ids: Ids, sizes: Sizes) -> list[tuple[str, Callable[[], list[Figure]]]]:
    body = notification(ids, 1).SerializeToString()

    def publish_and_consume() -> list[Figure]:
        publish_runs: list[float] = []
        consume_runs: list[float] = []
        purge_queues(BROKER_URL)
        for _ in range(sizes.repeats):
            publish_runs.append(kombu_publish(sizes.publish, body))
            consume_runs.append(kombu_consume(sizes.publish))
        purge_queues(BROKER_URL)
        med = sorted(publish_runs)[len(publish_runs) // 2]
        cmed = sorted(consume_runs)[len(consume_runs) // 2]
        return [
            Figure(
                "raw.publish",
                "kombu publish, persistent, no confirms",
                med,
                "msg/s",
                sizes.publish,
                runs=publish_runs,
                note=f"{len(body)}-byte NotificationMessage via Herald's exchange; until the broker holds all",
            ),
            Figure(
                "raw.consume",
                "kombu consume, prefetch 100, ack each",
                cmed,
                "msg/s",
                sizes.publish,
                runs=consume_runs,
            ),
        ]

    def confirm_each() -> list[Figure]:
        med, runs = median_of(sizes.repeats, lambda: kombu_publish_confirm_each(sizes.confirm_each, body))
        purge_queues(BROKER_URL)
        return [
            Figure(
                "raw.publish_confirm_each",
                "kombu publish, one confirm awaited per message",
                med,
                "msg/s",
                sizes.confirm_each,
                runs=runs,
                note="py-amqp confirm_publish",
            )
        ]

    def postgres() -> list[Figure]:
        data = rows(ids, sizes.pg_batch)
        figures = []
        with bare_table() as bare:
            cases: list[tuple[str, str, Callable[[Sequence[Row], str], float], int, str, str]] = [
                (
                    "raw.pg_row_commit",
                    "PostgreSQL insert + commit per row",
                    pg_row_commit,
                    sizes.pg_row_commit,
                    TABLE,
                    "into notifications",
                ),
                (
                    "raw.pg_executemany",
                    "PostgreSQL executemany, 1,000 per batch",
                    pg_executemany,
                    sizes.pg_executemany,
                    TABLE,
                    "psycopg2 cursor.executemany, commit per batch",
                ),
                (
                    "raw.pg_multirow",
                    "PostgreSQL multi-row INSERT, 1,000 per batch",
                    pg_multirow,
                    sizes.pg_batch,
                    TABLE,
                    "psycopg2 execute_values, commit per batch",
                ),
                ("raw.pg_copy", "PostgreSQL COPY", pg_copy, sizes.pg_batch, TABLE, "CSV, one COPY"),
                (
                    "raw.pg_multirow_bare",
                    "PostgreSQL multi-row INSERT, 1,000 per batch, bare table",
                    pg_multirow,
                    sizes.pg_batch,
                    bare,
                    "same columns, primary key only: no foreign key, no secondary index",
                ),
                (
                    "raw.pg_copy_bare",
                    "PostgreSQL COPY, bare table",
                    pg_copy,
                    sizes.pg_batch,
                    bare,
                    "same columns, primary key only",
                ),
            ]
            for key, label, insert, n, table, note in cases:
                med, runs = median_of(
                    sizes.repeats,
                    lambda insert=insert, n=n, table=table: insert(data[:n], table),  # type: ignore[misc]
                )
                figures.append(Figure(key, label, med, "rows/s", n, runs=runs, note=note))
        return figures

    def grpc_figures() -> list[Figure]:
        med, runs, detail = grpc_echo(sizes.grpc_callers, sizes.grpc_calls, b"x" * 64, sizes.repeats)
        request = unary_payload(ids)
        smed, sruns, sdetail = grpc_echo(sizes.grpc_callers, sizes.grpc_calls, request, sizes.repeats, signed=True)
        batch = batch_request(ids.template_id, sizes.batch_items).SerializeToString()
        bmed, bruns, bdetail = grpc_echo(sizes.batch_callers, sizes.batch_calls, batch, sizes.repeats, _BATCH)
        # The SMS template's id stands in for the email one's: a uuid of the same length, never looked up.
        emails = batch_request(ids.template_id, sizes.batch_items, email=True).SerializeToString()
        emed, eruns, edetail = grpc_echo(sizes.batch_callers, sizes.batch_calls, emails, sizes.repeats, _EMAIL_BATCH)
        return [
            Figure(
                "raw.grpc_unary",
                f"gRPC echo, Herald's server shape, {sizes.grpc_callers} callers",
                med,
                "calls/s",
                int(detail["calls"]),
                runs=runs,
                note="herald.grpcsrv.server.Server (sync, 32 threads, Herald's interceptor) in its own process, "
                f"callers in another; p50 {detail['p50_ms']:.1f} ms, p99 {detail['p99_ms']:.1f} ms; "
                f"server CPU {detail['server_cpu_us']:.0f} µs per call",
            ),
            Figure(
                "raw.grpc_unary_requests",
                f"gRPC echo of Herald's SendSms requests, {sizes.grpc_callers} callers, a fresh token per call",
                smed,
                "calls/s",
                int(sdetail["calls"]),
                runs=sruns,
                note=f"the same server; the callers send what goal 1's do (a SendSmsRequest, {len(request)} bytes, "
                "and a token signed per call in its metadata) and the bytes come back; "
                f"p50 {sdetail['p50_ms']:.1f} ms, p99 {sdetail['p99_ms']:.1f} ms; "
                f"server CPU {sdetail['server_cpu_us']:.0f} µs per call",
            ),
            Figure(
                "raw.grpc_batch",
                f"gRPC batch servicer, {sizes.batch_items:,}-item SendSmsBatch calls, {sizes.batch_callers} callers",
                bmed * sizes.batch_items,
                "items/s",
                int(bdetail["calls"]) * sizes.batch_items,
                runs=[r * sizes.batch_items for r in bruns],
                note=f"parses the request ({len(batch):,} bytes), answers each item with a new uuid4, nothing "
                f"else; same server shape; {bmed:,.0f} calls/s; server CPU "
                f"{bdetail['server_cpu_us'] / 1000:.1f} ms per call; "
                f"p50 {bdetail['p50_ms']:.1f} ms, p99 {bdetail['p99_ms']:.1f} ms",
            ),
            Figure(
                "raw.grpc_email_batch",
                f"gRPC batch servicer, {sizes.batch_items:,}-item SendEmailBatch calls, {sizes.batch_callers} callers",
                emed * sizes.batch_items,
                "items/s",
                int(edetail["calls"]) * sizes.batch_items,
                runs=[r * sizes.batch_items for r in eruns],
                note=f"the same servicer on a SendEmailBatchRequest ({len(emails):,} bytes); {emed:,.0f} calls/s; "
                f"server CPU {edetail['server_cpu_us'] / 1000:.1f} ms per call; "
                f"p50 {edetail['p50_ms']:.1f} ms, p99 {edetail['p99_ms']:.1f} ms",
            ),
        ]

    def grpc_confirmed() -> list[Figure]:
        """A step of its own: a broker that cannot be reached loses this figure, not the echo's."""
        request = unary_payload(ids)
        cmed, cruns, cdetail = grpc_echo(
            sizes.grpc_callers, sizes.grpc_calls, request, sizes.repeats, _CONFIRMED, signed=True, broker_url=BROKER_URL
        )
        purge_queues(BROKER_URL)
        return [
            Figure(
                "raw.grpc_unary_confirmed",
                f"gRPC echo answering once the broker confirmed the request, {sizes.grpc_callers} callers",
                cmed,
                "calls/s",
                int(cdetail["calls"]),
                runs=cruns,
                note="the same server and callers as the echo of Herald's requests; each request is published as "
                "ingest publishes (Herald's PublisherThread: gathered, packed, confirmed) before its bytes come back, "
                "and nothing else: the ceiling of any servicer that answers after a durable hand-off in this shape; "
                f"p50 {cdetail['p50_ms']:.1f} ms, p99 {cdetail['p99_ms']:.1f} ms; "
                f"server CPU {cdetail['server_cpu_us']:.0f} µs per call",
            ),
        ]

    return [
        ("raw: kombu publish + consume", publish_and_consume),
        ("raw: kombu confirm each", confirm_each),
        ("raw: PostgreSQL inserts", postgres),
        ("raw: gRPC unary", grpc_figures),
        ("raw: gRPC unary, after a broker confirm", grpc_confirmed),
    ]
