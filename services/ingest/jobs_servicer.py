"""gRPC entrypoint of herald.v1.Jobs: CSV jobs, authenticated like sends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import NoReturn, TypeVar

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from herald.domain import jobfiles
from herald.queues.codec import TYPES
from herald.service_layer.auth import Authenticator, Caller
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.jobs import BadJobFile, JobNotCancellable, Jobs, JobView
from herald.v1 import jobs_pb2, jobs_pb2_grpc
from services.ingest.calls import authenticated, timestamp

T = TypeVar("T")


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    def __init__(self, authenticator: Authenticator, jobs: Jobs) -> None:
        self._auth = authenticator
        self._jobs = jobs

    def _call(self, context: grpc.ServicerContext, work: Callable[[Caller], T]) -> T:
        def guarded(caller: Caller) -> T:
            try:
                return work(caller)
            except BadJobFile as exc:
                _abort_bad_file(context, exc)
            except JobNotCancellable as exc:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.message)
            raise AssertionError("unreachable")  # abort raises

        return authenticated(self._auth, context, guarded)

    def CreateJob(
        self, request_iterator: Iterator[jobs_pb2.CreateJobChunk], context: grpc.ServicerContext
    ) -> jobs_pb2.Job:
        def work(caller: Caller) -> jobs_pb2.Job:
            header, data = _read_upload(request_iterator)
            scheduled_for = _scheduled_for(header) if header.HasField("scheduled_for") else None
            view = self._jobs.create(caller, header.template_id, header.original_file_name, scheduled_for, data)
            return _job(view)

        return self._call(context, work)

    def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self._call(context, lambda caller: _job(self._jobs.get(caller, request.id)))

    def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.ServicerContext) -> jobs_pb2.JobList:
        return self._call(
            context,
            lambda caller: jobs_pb2.JobList(
                jobs=[_job(v) for v in self._jobs.page(caller, request.page_size, request.older_than)]
            ),
        )

    def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.ServicerContext) -> jobs_pb2.Job:
        return self._call(context, lambda caller: _job(self._jobs.cancel(caller, request.id)))


def _read_upload(chunks: Iterator[jobs_pb2.CreateJobChunk]) -> tuple[jobs_pb2.JobHeader, bytes]:
    """The header of the first chunk and every chunk's data, refused as soon as it passes jobfiles.MAX_FILE_BYTES."""
    header: jobs_pb2.JobHeader | None = None
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        if header is None:
            if not chunk.HasField("header"):
                raise InvalidRequest.one("header", "The first chunk must carry the job's header")
            header = chunk.header
        size += len(chunk.data)
        if size > jobfiles.MAX_FILE_BYTES:
            raise InvalidRequest.one("data", jobfiles.FILE_TOO_LARGE)
        parts.append(chunk.data)
    if header is None:
        raise InvalidRequest.one("header", "The first chunk must carry the job's header")
    return header, b"".join(parts)


def _scheduled_for(header: jobs_pb2.JobHeader) -> datetime:
    try:
        return header.scheduled_for.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):  # a Timestamp beyond year 1 to 9999: the caller's mistake
        raise InvalidRequest.one("scheduled_for", "scheduled_for is not a valid time") from None


def _abort_bad_file(context: grpc.ServicerContext, exc: BadJobFile) -> NoReturn:
    """INVALID_ARGUMENT: one line per problem as the message, and the problems as a JobFileProblems detail."""
    detail = jobs_pb2.JobFileProblems(
        problems=[jobs_pb2.JobFileProblem(row=p.row, column=p.column, message=p.message) for p in exc.problems],
        row_count=exc.row_count,
    )
    message = "\n".join(
        f"row {p.row}: {p.column}: {p.message}" if p.column else f"row {p.row}: {p.message}" for p in exc.problems
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    status.details.add().Pack(detail)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


def _job(view: JobView) -> jobs_pb2.Job:
    job = view.job
    return jobs_pb2.Job(
        id=job.id,
        template_id=job.template_id,
        template_version=job.template_version,
        notification_type=TYPES[job.notification_type],
        original_file_name=job.original_file_name,
        row_count=job.row_count,
        status=job.status,
        created_at=timestamp(job.created_at),
        scheduled_for=timestamp(job.scheduled_for),
        processing_started=timestamp(job.processing_started),
        processing_finished=timestamp(job.processing_finished),
        counts_by_status=view.counts,
        rows_queued=job.rows_queued,
        rows_rejected=job.rows_rejected,
    )
