"""CSV jobs: creating one (the whole file checked first), reading and cancelling them (ingest), and
processing them (a dispatcher consuming process-job).

A job's rows travel their own lanes: process-job -> bulk-{type} -> send-bulk-{type} (topology.send_lane),
so a large job never delays a single send. Each row's notification id is derived from the job and the
row's number, so a processor that dies halfway resumes from its last recorded chunk and re-sends at most
one chunk, which every later stage ignores by id. Logs name jobs and row numbers, never recipients.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.message import DecodeError
from sqlalchemy import Engine

from herald import metrics
from herald.db import jobs as jobs_db
from herald.db import services as services_db
from herald.domain import apikeys, inputs, jobfiles
from herald.domain import job_statuses as js
from herald.queues import Delivery
from herald.queues.codec import TYPES, pack
from herald.queues.topology import BULK_QUEUE, PROCESS_JOB_QUEUE
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest, NotFound
from herald.service_layer.rules import ServiceRules
from herald.service_layer.sending import SendCommand, Sender
from herald.v1.jobs_pb2 import ProcessJob, ProcessJobBatch

log = logging.getLogger(__name__)

CHUNK_ROWS = 1_000  # rows per NotificationBatch on bulk-*, and per progress record
DEFAULT_PAGE = 50
MAX_PAGE = 250
# Notify's check-job-status: a job with no progress for this long has lost its processor.
STALL_AFTER = timedelta(minutes=30)
_ROW_NAMESPACE = uuid.UUID("0b7c6f3e-2a51-4d1c-9a8e-3f4b5c6d7e80")


def row_notification_id(job_id: str, row_number: int) -> str:
    """The notification of a job's row: the same on every run of the job, so a re-sent row is one row."""
    return str(uuid.uuid5(_ROW_NAMESPACE, f"{job_id}:{row_number}"))


class BadJobFile(Exception):
    """The file did not pass: nothing was stored or queued."""

    def __init__(self, problems: Sequence[jobfiles.RowProblem], row_count: int) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = tuple(problems)
        self.row_count = row_count


class JobNotCancellable(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(f"Job is {status}: only a scheduled job that has not started can be cancelled")
        self.message = str(self)


class BatchPublish(Protocol):
    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None: ...


class PublishOne(Protocol):
    def __call__(self, routing_key: str, item: bytes, timeout: float = ...) -> None: ...


@dataclass(frozen=True, slots=True)
class JobView:
    job: jobs_db.JobRow
    counts: dict[str, int]


def process_job_body(job_ids: Sequence[str]) -> bytes:
    return ProcessJobBatch(jobs=[ProcessJob(job_id=j) for j in job_ids]).SerializeToString()


class Jobs:
    """Ingest's use cases: CreateJob, GetJob, ListJobs, CancelJob, always within the caller's service."""

    def __init__(
        self,
        engine: Engine,
        sender: Sender,
        rules: ServiceRules,
        publish: PublishOne,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._sender = sender
        self._rules = rules
        self._publish = publish
        self._now = now

    def create(
        self, caller: Caller, template_id: str, file_name: str, scheduled_for: datetime | None, data: bytes
    ) -> JobView:
        """Checks the whole file (its rows, and trial mode or a team key for each recipient), then stores
        the job and its file; an unscheduled job (or one already due) is started at once."""
        started = time.perf_counter()
        try:
            inputs.check_text(file_name, "original_file_name", max_length=jobfiles.MAX_FILE_NAME)
        except inputs.InputError as exc:
            raise InvalidRequest.one(exc.field, exc.message) from None
        if len(data) > jobfiles.MAX_FILE_BYTES:
            raise InvalidRequest.one("data", jobfiles.FILE_TOO_LARGE)
        template = self._sender.template(caller, template_id)
        job_template = _job_template(caller.service, template)
        checked = jobfiles.check_job_file(data, job_template)
        problems = list(checked.problems)
        if not problems:
            problems = self._restricted(caller, job_template.type, checked.rows)
        if problems:
            metrics.incr("jobs.rows_rejected", len({p.row for p in problems}), type=job_template.type)
            raise BadJobFile(problems, checked.row_count)
        now = self._now()
        due = scheduled_for is None or scheduled_for <= now
        job = {
            "id": str(uuid.uuid4()),
            "service_id": caller.service.id,
            "template_id": template.id,
            "template_version": template.version,
            "notification_type": job_template.type,
            "original_file_name": file_name,
            "row_count": len(checked.rows),
            "status": js.PENDING if due else js.SCHEDULED,
            "api_key_id": caller.key.id,
            "key_type": caller.key.key_type,
            "created_at": now,
            "scheduled_for": scheduled_for,
        }
        with self._engine.begin() as conn:
            row = jobs_db.create(conn, job, zlib.compress(data, 6))
        metrics.observe("jobs.upload", time.perf_counter() - started, type=job_template.type)
        log.info("job created", extra={"job_id": row.id, "rows": row.row_count, "status": row.status})
        if due:
            # After the commit: the processor must find the job. A failed publish leaves it pending, and
            # check-job-status starts it (the job is stored, so the caller is answered with it).
            try:
                self._publish(PROCESS_JOB_QUEUE, ProcessJob(job_id=row.id).SerializeToString())
            except Exception as exc:
                log.warning(
                    "job stored but not started: check-job-status will",
                    extra={"job_id": row.id, "error": type(exc).__name__},
                )
        return JobView(row, {})

    def _restricted(self, caller: Caller, type_name: str, rows: Sequence[jobfiles.JobRow]) -> list[jobfiles.RowProblem]:
        column = jobfiles.RECIPIENT_COLUMNS[type_name]
        problems = []
        for row in rows:
            problem = self._rules.restriction_problem(caller, TYPES[type_name], row.recipient)
            if problem is not None:
                problems.append(jobfiles.RowProblem(row.number, column, problem))
                if len(problems) == jobfiles.MAX_PROBLEMS:
                    break
        return problems

    def get(self, caller: Caller, job_id: str) -> JobView:
        job_id = _job_id(job_id)
        with self._engine.begin() as conn:
            job = jobs_db.get(conn, job_id, caller.service.id)
            if job is None:
                raise NotFound("No result found")
            if job.status == js.IN_PROGRESS:
                # Finished is worked out when asked (and each minute by check-job-status).
                finished = jobs_db.finish_done(conn, self._now(), job_id)
                if finished:
                    _observe_finished(finished, self._now())
                    job = jobs_db.get(conn, job_id)
                    assert job is not None
            counts = jobs_db.counts_by_status(conn, [job_id]).get(job_id, {})
        return JobView(job, counts)

    def page(self, caller: Caller, page_size: int, older_than: str) -> list[JobView]:
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidRequest.one("page_size", f"page_size must be between 0 and {MAX_PAGE}")
        anchor = _job_id(older_than, "older_than") if older_than else None
        with self._engine.connect() as conn:
            jobs = jobs_db.page(conn, caller.service.id, page_size or DEFAULT_PAGE, anchor)
            counts = jobs_db.counts_by_status(conn, [j.id for j in jobs])
        return [JobView(j, counts.get(j.id, {})) for j in jobs]

    def cancel(self, caller: Caller, job_id: str) -> JobView:
        job_id = _job_id(job_id)
        with self._engine.begin() as conn:
            job = jobs_db.get(conn, job_id, caller.service.id)
            if job is None:
                raise NotFound("No result found")
            if not jobs_db.move(conn, job_id, js.SCHEDULED, js.CANCELLED):
                raise JobNotCancellable(job.status)
            job = jobs_db.get(conn, job_id)
        assert job is not None
        log.info("job cancelled", extra={"job_id": job_id})
        return JobView(job, {})


def _job_id(value: str, field: str = "id") -> str:
    try:
        return inputs.canonical_uuid(value, field)
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _job_template(service: services_db.ServiceRow, template: services_db.TemplateRow) -> jobfiles.JobTemplate:
    is_sms = template.template_type == "sms"
    return jobfiles.JobTemplate(
        type=template.template_type,
        content=template.content,
        subject="" if is_sms else template.subject or "",
        prefix=service.name if is_sms and service.prefix_sms else None,
        allow_international=service.can_send_international_sms,
    )


class JobProcessor:
    """process-job: starts a pending job (its daily-limit check for the whole job, Notify's "sending
    limits exceeded") and expands its rows, from the last recorded chunk, onto bulk-* in chunks of
    CHUNK_ROWS, each confirmed by the broker before its progress is recorded. The process-job message is
    acked only when the job is done, so a processor that dies leaves it to the next one."""

    def __init__(
        self,
        engine: Engine,
        publisher: BatchPublish,
        sender: Sender,
        rules: ServiceRules,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rows_per_second: float = 0.0,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._sender = sender  # without rules: a job's rows are limited as a whole, here
        self._rules = rules
        self._now = now
        # Rows expanded per second at most (0: unpaced): a job takes longer, and single sends keep the CPU
        # they need on shared cores (BENCHMARKS.md, issue 8).
        self._rows_per_second = rows_per_second

    @metrics.instrumented
    def __call__(self, batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            if delivery.message.acknowledged:
                continue  # done before an outage stopped the batch: the consumer hands it over again
            try:
                jobs = ProcessJobBatch.FromString(delivery.body).jobs
            except DecodeError:
                log.error("undecodable message dead-lettered", extra={"queue": delivery.queue})
                delivery.reject()
                continue
            for item in jobs:
                self.process(item.job_id)
            delivery.ack()

    def process(self, job_id: str) -> None:
        with self._engine.connect() as conn:
            job = jobs_db.get(conn, job_id)
            data = jobs_db.file(conn, job_id) if job is not None else None
            service = services_db.get_service(conn, job.service_id) if job is not None else None
            template = (
                services_db.get_template(conn, job.template_id, job.template_version) if job is not None else None
            )
        if job is None or data is None or service is None or template is None:
            log.warning("process-job for an unknown job ignored", extra={"job_id": job_id})
            return
        if job.status in js.ENDED:
            return  # a copy of its message, or a stall check that raced its end: nothing to do
        checked = jobfiles.check_job_file(zlib.decompress(data), _job_template(service, template))
        if checked.problems:
            # It passed when it was created; a service changed since (international texts no longer
            # allowed, say) is the only way here. Nothing is sent from a file that no longer passes, and
            # the job ends in `error` rather than being found stalled and tried again for ever.
            with self._engine.begin() as conn:
                locked = jobs_db.lock(conn, job_id)  # waits for a scheduler still committing the job's start
                if locked is not None and locked.status in (js.PENDING, js.IN_PROGRESS):
                    jobs_db.move(conn, job_id, locked.status, js.ERROR)
            metrics.incr("jobs.errors", type=job.notification_type)
            log.error("stored job file no longer passes", extra={"job_id": job_id, "problems": len(checked.problems)})
            return
        caller = Caller(service, apikeys.KnownKey(job.api_key_id or "", job.key_type, "", None))
        rows_queued = self._start(job, caller, checked.rows)
        if rows_queued is None:
            return
        notification_type = TYPES[job.notification_type]
        queue = BULK_QUEUE[notification_type]
        began = time.monotonic()
        for start in range(rows_queued, len(checked.rows), CHUNK_ROWS):
            if self._rows_per_second > 0:  # this chunk's turn: never ahead of the pace since this run began
                time.sleep(max(0.0, began + (start - rows_queued) / self._rows_per_second - time.monotonic()))
            chunk = checked.rows[start : start + CHUNK_ROWS]
            items = [item for row in chunk if (item := self._message(caller, job, template, row))]
            if items:
                self._publisher.publish_batch([(queue, pack(items))])
            with self._engine.begin() as conn:
                jobs_db.record_progress(conn, job_id, start + len(chunk), len(chunk) - len(items), self._now())
            metrics.incr("jobs.rows_queued", len(chunk), type=job.notification_type)
        log.info("job queued", extra={"job_id": job_id, "rows": len(checked.rows), "resumed_at": rows_queued})

    def _start(self, job: jobs_db.JobRow, caller: Caller, rows: Sequence[jobfiles.JobRow]) -> int | None:
        """The rows already queued, once the job is in progress; None when it may not run."""
        with self._engine.begin() as conn:
            locked = jobs_db.lock(conn, job.id)  # waits for a scheduler still committing the job's start
            if locked is None or locked.status == js.IN_PROGRESS:
                return locked.rows_queued if locked is not None else None
            if locked.status != js.PENDING:
                return None
            problem = self._rules.take_job(caller, TYPES[job.notification_type], [r.recipient for r in rows])
            if problem is not None:
                jobs_db.move(conn, job.id, js.PENDING, js.SENDING_LIMITS_EXCEEDED)
                log.warning("job refused: sending limits exceeded", extra={"job_id": job.id, "rows": len(rows)})
                return None
            jobs_db.move(conn, job.id, js.PENDING, js.IN_PROGRESS, started=self._now())
        return 0

    def _message(
        self, caller: Caller, job: jobs_db.JobRow, template: services_db.TemplateRow, row: jobfiles.JobRow
    ) -> bytes:
        """The row's message, or b"" for a row refused (it passed the file check, so only a changed
        service can refuse it now): counted and logged by row number, never sent."""
        command = SendCommand(TYPES[job.notification_type], row.recipient, job.template_id, row.personalisation)
        try:
            message = self._sender.job_row(caller, command, template)
        except InvalidRequest as exc:
            metrics.incr("jobs.rows_rejected", type=job.notification_type)
            log.warning("job row refused", extra={"job_id": job.id, "row": row.number, "error": exc.violations[0][0]})
            return b""
        message.id = row_notification_id(job.id, row.number)
        message.job_id = job.id
        message.job_row_number = row.number
        return message.SerializeToString()


def start_due_jobs(engine: Engine, now: datetime, publisher: BatchPublish, limit: int = 1_000) -> int:
    """run-scheduled-jobs: every scheduled job whose time has passed becomes pending and goes on
    process-job; the rows commit only after the broker confirmed, so a failed publish leaves them due."""
    total = 0
    while True:
        with engine.begin() as conn:
            due = jobs_db.take_due_scheduled(conn, now, limit)
            if due:
                publisher.publish_batch([(PROCESS_JOB_QUEUE, process_job_body(due))])
        if not due:
            return total
        total += len(due)
        log.info("scheduled jobs started", extra={"jobs": due})


def check_jobs(engine: Engine, now: datetime, publisher: BatchPublish, limit: int = 1_000) -> tuple[int, int]:
    """check-job-status: jobs whose every row is done become finished; jobs with no progress for
    STALL_AFTER (their processor died, or their process-job message was lost) go on process-job again and
    resume from their last recorded chunk. Returns (finished, re-queued)."""
    with engine.begin() as conn:
        finished = jobs_db.finish_done(conn, now)
    _observe_finished(finished, now)
    with engine.begin() as conn:
        stalled = jobs_db.take_stalled(conn, now - STALL_AFTER, now, limit)
        if stalled:
            publisher.publish_batch([(PROCESS_JOB_QUEUE, process_job_body(stalled))])
    if stalled:
        metrics.incr("jobs.stalled", len(stalled))  # HeraldJobStalled reads it
        log.warning("stalled jobs re-queued", extra={"jobs": stalled})
    return len(finished), len(stalled)


def _observe_finished(finished: Sequence[tuple[str, datetime | None]], now: datetime) -> None:
    for job_id, started in finished:
        if started is not None:
            metrics.observe("jobs.duration", (now - started).total_seconds())
        log.info("job finished", extra={"job_id": job_id})
