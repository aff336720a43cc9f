"""Issue 8's figures: a 100,000-row SMS job in research mode on Herald as deployed (bench/stack.py), and
single sends beside it, which must not wait behind it.

The stack is goals' (every service its own process) plus the job lanes' dispatchers: one for process-job
and bulk-sms/bulk-email (expanding and storing a job's rows), one for send-bulk-sms/send-bulk-email
(handing them off). First 1,000 single SendSms calls on the idle system; then the job is uploaded and,
once its rows are flowing, the same 1,000 single sends again. Each single send's accepted-to-handed-off
time is `sent_at - created_at` of its row (created_at is stamped by ingest before its publish).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from sqlalchemy import Engine, text

from bench import BROKER_URL, BenchError, Figure, purge_queues, rate
from bench.herald_paths import Context
from bench.load import FINAL, SMS_TO
from bench.stack import Stack
from herald.clients import IngestClient, JobsClient
from herald.domain import research
from herald.jobs_cli import is_complete

GOAL_P99_MS = 1_000.0
GOAL_RATIO = 2.0  # p99 beside the job at most twice the idle p99


@dataclass(frozen=True, slots=True)
class Sizes:
    rows: int = 100_000
    singles: int = 1_000
    singles_per_second: float = 50.0  # 20 s of single sends, well inside the job's run
    callers: int = 8  # single sends in flight at once, at most
    job_timeout: float = 1_800.0


QUICK = Sizes(rows=5_000, singles=200)

Say = Callable[[str], None]

READING = """\
Herald as deployed (`bench/stack.py`, as for issue 7's goals) with the job lanes' own dispatcher
processes: `process-job,bulk-sms,bulk-email` (the job processor expands the rows onto bulk-sms; the same
process stores them in batches) and `send-bulk-sms,send-bulk-email` (hands them off), beside the usual
db, send and receipts dispatchers. The job is one SMS template with two placeholders sent to the
research-mode demo service's rows (one row in a thousand to each of research mode's failing numbers, so
temporary and permanent failures come back too). *Upload and validate*: `CreateJob` from the first chunk
(1 MiB each) until ingest answered, the whole file checked and stored. *Rows per second*: from that
answer (the job starts at once) until `GetJob` shows every row final. Single sends: unary `SendSms` from
8 callers paced at 50 a second in this process, with the same research-mode service, first on the idle
stack and then while the job runs (they start once the job's first rows are queued); figures are
`sent_at - created_at` of those rows only (`job_id IS NULL`). Peak RSS is VmHWM of each process at the
end of the section.
"""


def truncate(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE notifications, receipts_pending, jobs CASCADE"))


def job_file(rows: int) -> bytes:
    """Rows for the demo template ("Hello ((name)), your code is ((code)).") to 07700 900000-997, and one
    row in every thousand to each of research mode's failing numbers."""
    numbers = [f"07700 900{i:03d}" for i in range(998)] + [research.TEMP_FAIL_NUMBER, research.PERM_FAIL_NUMBER]
    lines = ["phone number,name,code", *(f"{numbers[i % 1000]},Person {i},{i:06d}" for i in range(rows))]
    return ("\r\n".join(lines) + "\r\n").encode()


def _singles_final(engine: Engine) -> int:
    query = text("SELECT count(*) FROM notifications WHERE job_id IS NULL AND status = ANY(:s)")
    with engine.connect() as conn:
        return int(conn.scalar(query, {"s": FINAL}) or 0)


def _single_handoffs(engine: Engine) -> tuple[int, float, float]:
    """How many single sends were handed off, and their accepted-to-handed-off p50 and p99 in ms."""
    query = text(
        "SELECT count(*), percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP "
        "(ORDER BY extract(epoch FROM sent_at - created_at)) "
        "FROM notifications WHERE job_id IS NULL AND sent_at IS NOT NULL"
    )
    with engine.connect() as conn:
        total, percentiles = conn.execute(query).one()
    if not total:
        raise BenchError("no single send was handed off")
    return int(total), percentiles[0] * 1000, percentiles[1] * 1000


class Singles:
    """`count` single SendSms calls paced at `per_second`, in a thread; refusals are counted."""

    def __init__(self, target: str, api_key: str, template_id: str, sizes: Sizes) -> None:
        self._client = IngestClient(target, api_key)
        self._template_id = template_id
        self._sizes = sizes
        self.refused = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self.ended = 0.0
        self._thread = threading.Thread(target=self._run, name="singles", daemon=True)

    def start(self) -> Singles:
        self._thread.start()
        return self

    def _one(self) -> None:
        try:
            self._client.send_sms(SMS_TO, self._template_id, {"name": "Single", "code": "1"})
        except grpc.RpcError:
            with self._lock:
                self.refused += 1
        else:
            with self._lock:
                self.accepted += 1

    def _run(self) -> None:
        s = self._sizes
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=s.callers) as pool:
            for i in range(s.singles):
                delay = started + i / s.singles_per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self._one)
        self.ended = time.monotonic()

    def join(self, engine: Engine, timeout: float) -> None:
        """Until every send was answered and every accepted one is final."""
        self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while _singles_final(engine) < self.accepted:
            if time.monotonic() > deadline:
                raise BenchError(f"{_singles_final(engine):,} of {self.accepted:,} single sends final")
            time.sleep(0.2)
        self._client.close()


def measure(ctx: Context, sizes: Sizes, say: Say) -> list[Figure]:
    d, engine = ctx.demo, ctx.engine
    stack = Stack(ctx.settings.secret_key)
    started = time.monotonic()

    def tell(what: str) -> None:
        say(f"  [{time.monotonic() - started:5.0f} s] {what}")

    purge_queues(BROKER_URL)
    truncate(engine)
    tell("starting the stack with the job lanes' dispatchers")
    stack.start_front()
    stack.start_dispatchers()
    stack.start_dispatcher("job dispatcher", "process-job,bulk-sms,bulk-email")
    stack.start_dispatcher("bulk send dispatcher", "send-bulk-sms,send-bulk-email")
    jobs = JobsClient(stack.ingest, d.research_key)
    try:
        tell(f"{sizes.singles:,} single sends on the idle system")
        idle = Singles(stack.ingest, d.research_key, d.research_sms_template_id, sizes).start()
        idle.join(engine, 300.0)
        idle_count, idle_p50, idle_p99 = _single_handoffs(engine)
        truncate(engine)

        data = job_file(sizes.rows)
        tell(f"uploading a {sizes.rows:,}-row job ({len(data) / 1e6:.1f} MB)")
        upload_started = time.monotonic()
        job = jobs.create_job(d.research_sms_template_id, data, "bench.csv")
        answered = time.monotonic()
        tell(f"job {job.id}: {job.status}; {sizes.singles:,} single sends once its rows are queued")
        while not job.rows_queued and not is_complete(job) and time.monotonic() - answered < 60.0:
            time.sleep(0.05)
            job = jobs.get_job(job.id)
        busy = Singles(stack.ingest, d.research_key, d.research_sms_template_id, sizes).start()
        while not is_complete(job):
            if time.monotonic() - answered > sizes.job_timeout:
                raise BenchError(f"the job was not complete after {sizes.job_timeout:.0f} s: {job.counts_by_status}")
            time.sleep(0.5)
            job = jobs.get_job(job.id)
        completed = time.monotonic()
        busy.join(engine, 300.0)
        stack.check_alive()
        if job.status != "finished":
            raise BenchError(f"the job ended {job.status}")
        busy_count, busy_p50, busy_p99 = _single_handoffs(engine)
        peaks = stack.record_peaks()
    finally:
        jobs.close()
        stack.stop_all()
        purge_queues(BROKER_URL)
        truncate(engine)

    overlap = (
        "every single send was made while the job's rows were still going out"
        if busy.ended <= completed
        else f"the job completed {busy.ended - completed:.1f} s before the last single send: not all overlapped"
    )
    refused = f"; {idle.refused + busy.refused:,} single sends refused" if idle.refused + busy.refused else ""
    counts = ", ".join(f"{status} {n:,}" for status, n in sorted(job.counts_by_status.items()))
    figures = [
        Figure(
            "jobs.upload",
            f"upload and validate a {sizes.rows:,}-row SMS job ({len(data) / 1e6:.1f} MB)",
            (answered - upload_started) * 1000,
            "ms",
            sizes.rows,
            note="CreateJob from the first chunk until answered: the file streamed, checked and stored",
        ),
        Figure(
            "jobs.rows_per_second",
            "job rows final per second, research mode",
            rate(job.row_count, completed - answered),
            "rows/s",
            job.row_count,
            note=f"from CreateJob's answer until every row was final ({completed - answered:.1f} s): {counts}",
        ),
        Figure(
            "jobs.single_idle_p99",
            "single SendSms accepted to handed off, p99, idle system",
            idle_p99,
            "ms",
            idle_count,
            note=f"p50 {idle_p50:.0f} ms",
        ),
        Figure(
            "jobs.single_busy_p99",
            f"single SendSms accepted to handed off, p99, while the {sizes.rows:,}-row job runs",
            busy_p99,
            "ms",
            busy_count,
            note=f"p50 {busy_p50:.0f} ms; {overlap}{refused}",
            target=GOAL_P99_MS,
            at_most=True,
        ),
        Figure(
            "jobs.single_ratio",
            "single sends' p99 beside the job / idle",
            busy_p99 / idle_p99 if idle_p99 else 0.0,
            "×",
            note=f"{idle_p99:.0f} ms idle -> {busy_p99:.0f} ms beside the job",
            target=GOAL_RATIO,
            at_most=True,
        ),
    ]
    figures += [
        Figure(f"jobs.rss.{name.replace(' ', '_')}", f"peak RSS (VmHWM), {name}", peak, "MB")
        for name, peak in sorted(peaks.items())
    ]
    return figures
