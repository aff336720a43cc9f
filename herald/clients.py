"""gRPC clients of Herald's own services, for the dispatcher, the CLI and tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import grpc
from grpc_status import rpc_status

from herald.domain import jobfiles
from herald.domain.apikeys import create_token, split_key
from herald.domain.statuses import FINAL
from herald.grpcsrv.rpc_metrics import observed_channel
from herald.queues.codec import TYPE_NAMES
from herald.v1 import ingest_pb2, ingest_pb2_grpc, jobs_pb2, jobs_pb2_grpc, reads_pb2, reads_pb2_grpc
from herald.v1.notifications_pb2 import Notification

NOT_STORED = "accepted (not stored yet)"


class IngestClient:
    """Signs each call with a fresh token from a Notify-style API key, as Notify's clients do."""

    def __init__(self, target: str, api_key: str, timeout: float = 10.0) -> None:
        self._channel = observed_channel(target)
        self._stub = ingest_pb2_grpc.IngestStub(self._channel)
        self._key = split_key(api_key)
        self._timeout = timeout

    def _metadata(self, idempotency_key: str = "") -> list[tuple[str, str]]:
        metadata = [("authorization", f"Bearer {create_token(self._key.secret, self._key.service_id)}")]
        if idempotency_key:
            metadata.append(("idempotency-key", idempotency_key))
        return metadata

    def send_sms(
        self,
        phone_number: str,
        template_id: str,
        personalisation: dict[str, Any] | None = None,
        reference: str = "",
        idempotency_key: str = "",
    ) -> ingest_pb2.SendResponse:
        request = ingest_pb2.SendSmsRequest(phone_number=phone_number, template_id=template_id, reference=reference)
        request.personalisation.update(personalisation or {})
        return cast(
            ingest_pb2.SendResponse,
            self._stub.SendSms(request, metadata=self._metadata(idempotency_key), timeout=self._timeout),
        )

    def send_email(
        self,
        email_address: str,
        template_id: str,
        personalisation: dict[str, Any] | None = None,
        reference: str = "",
        idempotency_key: str = "",
    ) -> ingest_pb2.SendResponse:
        request = ingest_pb2.SendEmailRequest(email_address=email_address, template_id=template_id, reference=reference)
        request.personalisation.update(personalisation or {})
        return cast(
            ingest_pb2.SendResponse,
            self._stub.SendEmail(request, metadata=self._metadata(idempotency_key), timeout=self._timeout),
        )

    def send_sms_batch(self, items: Sequence[ingest_pb2.SendSmsRequest]) -> ingest_pb2.SendBatchResponse:
        request = ingest_pb2.SendSmsBatchRequest(items=items)
        return cast(
            ingest_pb2.SendBatchResponse,
            self._stub.SendSmsBatch(request, metadata=self._metadata(), timeout=self._timeout),
        )

    def get_notification(self, notification_id: str) -> Notification:
        answer = self._stub.GetNotification(
            ingest_pb2.GetNotificationRequest(id=notification_id),
            metadata=self._metadata(),
            timeout=self._timeout,
        )
        return cast(Notification, answer)

    def follow(
        self,
        notification_id: str,
        timeout: float,
        on_change: Callable[[str], None] = lambda status: None,
        interval: float = 0.05,
    ) -> str:
        """Polls until the status is final or `timeout` has passed; returns the last status seen.
        NOT_FOUND is NOT_STORED: accepted, and the db dispatcher has not stored it yet."""
        deadline, last = time.monotonic() + timeout, ""
        while True:
            try:
                status = self.get_notification(notification_id).status
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                status = NOT_STORED
            if status != last:
                on_change(status)
                last = status
            if status in FINAL or time.monotonic() > deadline:
                return status
            time.sleep(interval)

    def close(self) -> None:
        self._channel.close()


UPLOAD_CHUNK = 1024 * 1024  # CreateJob's chunks: at most 1 MiB of the file each


class JobsClient:
    """herald.v1.Jobs, signed as IngestClient signs sends."""

    def __init__(self, target: str, api_key: str, timeout: float = 60.0) -> None:
        self._channel = observed_channel(target)
        self._stub = jobs_pb2_grpc.JobsStub(self._channel)
        self._reads = reads_pb2_grpc.ReadsStub(self._channel)
        self._key = split_key(api_key)
        self._timeout = timeout

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {create_token(self._key.secret, self._key.service_id)}")]

    def job_template(self, template_id: str) -> jobfiles.JobTemplate:
        """The template as ingest will check a file against it, read through herald.v1.Reads, so that a
        bad file can be refused before it is uploaded. The SMS prefix never changes whether a row passes
        (the 918 characters are the body's), so it is left out."""
        request = reads_pb2.GetTemplateRequest(id=template_id)
        template = self._reads.GetTemplate(request, metadata=self._metadata(), timeout=self._timeout)
        caller = self._reads.GetCaller(reads_pb2.GetCallerRequest(), metadata=self._metadata(), timeout=self._timeout)
        return jobfiles.JobTemplate(
            type=TYPE_NAMES.get(template.type, "letter"),
            content=template.body,
            subject=template.subject,
            prefix=None,
            allow_international="international_sms" in caller.permissions,
        )

    def create_job(
        self,
        template_id: str,
        data: bytes,
        original_file_name: str = "upload.csv",
        scheduled_for: datetime | None = None,
        on_chunk: Callable[[int], None] = lambda sent: None,
    ) -> jobs_pb2.Job:
        """Uploads `data` in chunks (`on_chunk` gets the bytes sent so far); a refused file raises the
        RpcError, whose problems `job_file_problems` reads."""
        header = jobs_pb2.JobHeader(template_id=template_id, original_file_name=original_file_name)
        if scheduled_for is not None:
            header.scheduled_for.FromDatetime(scheduled_for)

        def chunks() -> Iterator[jobs_pb2.CreateJobChunk]:
            yield jobs_pb2.CreateJobChunk(header=header, data=data[:UPLOAD_CHUNK])
            on_chunk(min(len(data), UPLOAD_CHUNK))
            for start in range(UPLOAD_CHUNK, len(data), UPLOAD_CHUNK):
                yield jobs_pb2.CreateJobChunk(data=data[start : start + UPLOAD_CHUNK])
                on_chunk(min(len(data), start + UPLOAD_CHUNK))

        return cast(jobs_pb2.Job, self._stub.CreateJob(chunks(), metadata=self._metadata(), timeout=self._timeout))

    def get_job(self, job_id: str) -> jobs_pb2.Job:
        request = jobs_pb2.GetJobRequest(id=job_id)
        return cast(jobs_pb2.Job, self._stub.GetJob(request, metadata=self._metadata(), timeout=self._timeout))

    def list_jobs(self, page_size: int = 0, older_than: str = "") -> jobs_pb2.JobList:
        request = jobs_pb2.ListJobsRequest(page_size=page_size, older_than=older_than)
        return cast(jobs_pb2.JobList, self._stub.ListJobs(request, metadata=self._metadata(), timeout=self._timeout))

    def cancel_job(self, job_id: str) -> jobs_pb2.Job:
        request = jobs_pb2.CancelJobRequest(id=job_id)
        return cast(jobs_pb2.Job, self._stub.CancelJob(request, metadata=self._metadata(), timeout=self._timeout))

    def close(self) -> None:
        self._channel.close()


def job_file_problems(exc: grpc.RpcError) -> list[jobs_pb2.JobFileProblem]:
    """The row problems of a refused CreateJob (its JobFileProblems detail); [] for any other error."""
    status = rpc_status.from_call(exc)
    if status is None:
        return []
    for detail in status.details:
        problems = jobs_pb2.JobFileProblems()
        if detail.Unpack(problems):
            return list(problems.problems)
    return []
