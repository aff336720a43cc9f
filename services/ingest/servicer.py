"""gRPC entrypoint of ingest: metadata and protobuf in, use cases called, protobuf or status out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from sqlalchemy import Engine

from herald.domain import statuses as st
from herald.queues.codec import TYPES
from herald.service_layer import queries
from herald.service_layer.auth import Authenticator, Caller
from herald.service_layer.sending import DEFAULT_PUBLISH_TIMEOUT, Accepted, ItemRefused, SendCommand, Sender
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from herald.v1.notifications_pb2 import Notification, NotificationType, TemplateRef
from services.ingest.calls import authenticated, metadata, timestamp

T = TypeVar("T")
IDEMPOTENCY_KEY = "idempotency-key"
# Plain ints: a protobuf enum's attribute lookup runs Python code, once per item of a batch.
_SMS: NotificationType.ValueType = NotificationType.SMS
_EMAIL: NotificationType.ValueType = NotificationType.EMAIL


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    def __init__(self, authenticator: Authenticator, sender: Sender, engine: Engine) -> None:
        self._auth = authenticator
        self._sender = sender
        self._engine = engine

    def _call(self, context: grpc.ServicerContext, work: Callable[[Caller], T]) -> T:
        return authenticated(self._auth, context, work)

    def SendSms(self, request: ingest_pb2.SendSmsRequest, context: grpc.ServicerContext) -> ingest_pb2.SendResponse:
        command = _sms(request, metadata(context, IDEMPOTENCY_KEY))
        return self._call(context, lambda caller: _response(self._sender.send(caller, command, _remaining(context))))

    def SendEmail(self, request: ingest_pb2.SendEmailRequest, context: grpc.ServicerContext) -> ingest_pb2.SendResponse:
        command = _email(request, metadata(context, IDEMPOTENCY_KEY))
        return self._call(context, lambda caller: _response(self._sender.send(caller, command, _remaining(context))))

    def SendSmsBatch(
        self, request: ingest_pb2.SendSmsBatchRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.SendBatchResponse:
        commands = [_sms(item) for item in request.items]
        return self._call(
            context, lambda caller: _batch_response(self._sender.send_batch(caller, commands, _remaining(context)))
        )

    def SendEmailBatch(
        self, request: ingest_pb2.SendEmailBatchRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.SendBatchResponse:
        commands = [_email(item) for item in request.items]
        return self._call(
            context, lambda caller: _batch_response(self._sender.send_batch(caller, commands, _remaining(context)))
        )

    def GetNotification(
        self, request: ingest_pb2.GetNotificationRequest, context: grpc.ServicerContext
    ) -> Notification:
        def work(caller: Caller) -> Notification:
            row = queries.get_notification(self._engine, caller, request.id)
            is_sms = row.notification_type == "sms"
            return Notification(
                id=row.id,
                reference=row.reference or "",
                type=TYPES[row.notification_type],
                status=row.status,
                phone_number=row.to if is_sms else "",
                email_address="" if is_sms else row.to,
                template=TemplateRef(id=row.template_id, version=row.template_version),
                body=row.body,
                subject=row.subject or "",
                created_at=timestamp(row.created_at),
                sent_at=timestamp(row.sent_at),
                completed_at=timestamp(row.updated_at if row.status in st.FINAL else None),
                billable_units=row.billable_units,
                attempts=row.attempts,
                next_attempt_at=timestamp(row.next_attempt_at if row.status == st.CREATED else None),
                last_error=row.last_error or "",
                one_click_unsubscribe_url=row.unsubscribe_url or "",
                scheduled_for=timestamp(row.scheduled_for),
                rate_multiplier=row.rate_multiplier,
            )

        return self._call(context, work)

    def PreviewTemplate(
        self, request: ingest_pb2.PreviewTemplateRequest, context: grpc.ServicerContext
    ) -> ingest_pb2.TemplatePreview:
        def work(caller: Caller) -> ingest_pb2.TemplatePreview:
            preview = self._sender.preview(caller, request.template_id, request.personalisation, request.version)
            template, rendered = preview.template, preview.rendered
            return ingest_pb2.TemplatePreview(
                id=template.id,
                type=TYPES[template.template_type],
                version=template.version,
                body=rendered.body,
                subject=rendered.subject,
                html=rendered.html,
                fragment_count=rendered.fragment_count,
            )

        return self._call(context, work)


def _remaining(context: grpc.ServicerContext) -> float | None:
    """The caller's deadline, as seconds left (None: it set none; grpcio then reports an immense number)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > DEFAULT_PUBLISH_TIMEOUT else float(remaining)


def _sms(request: ingest_pb2.SendSmsRequest, idempotency_key: str | None = None) -> SendCommand:
    return SendCommand(
        type=_SMS,
        to=request.phone_number,
        template_id=request.template_id,
        personalisation=request.personalisation,
        reference=request.reference,
        idempotency_key=idempotency_key or request.idempotency_key,
        sms_sender_id=request.sms_sender_id,
        scheduled_for=_scheduled_for(request),
    )


def _email(request: ingest_pb2.SendEmailRequest, idempotency_key: str | None = None) -> SendCommand:
    return SendCommand(
        type=_EMAIL,
        to=request.email_address,
        template_id=request.template_id,
        personalisation=request.personalisation,
        reference=request.reference,
        # Rarely given: a list made of the empty field every time was a sixth of the conversion.
        sanitise_content_for=list(asked) if (asked := request.sanitise_content_for) else (),
        idempotency_key=idempotency_key or request.idempotency_key,
        email_reply_to_id=request.email_reply_to_id,
        unsubscribe_url=request.one_click_unsubscribe_url,
        scheduled_for=_scheduled_for(request),
    )


def _scheduled_for(request: ingest_pb2.SendSmsRequest | ingest_pb2.SendEmailRequest) -> datetime | None:
    if not request.HasField("scheduled_for"):
        return None
    try:
        return request.scheduled_for.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        # Beyond what a datetime holds: as far back or ahead as one goes, which the rule then refuses.
        extreme = datetime.min if request.scheduled_for.seconds < 0 else datetime.max
        return extreme.replace(tzinfo=UTC)


def _batch_response(results: Sequence[Accepted | ItemRefused]) -> ingest_pb2.SendBatchResponse:
    answer = ingest_pb2.SendBatchResponse()
    for result in results:
        item = answer.results.add()
        if isinstance(result, Accepted):
            _fill(item.accepted, result)  # in place: a response built and then copied costs twice
        else:
            item.error.code, item.error.field, item.error.message = result.code, result.field, result.message
    return answer


def _response(accepted: Accepted) -> ingest_pb2.SendResponse:
    response = ingest_pb2.SendResponse()
    _fill(response, accepted)
    return response


def _fill(response: ingest_pb2.SendResponse, accepted: Accepted) -> None:
    response.id, response.reference = accepted.id, accepted.reference
    response.template.id, response.template.version = accepted.template_id, accepted.template_version
    response.body, response.subject = accepted.body, accepted.subject
    response.from_number, response.from_email = accepted.from_number, accepted.from_email
    for key, v in accepted.sanitised_content.items():
        response.sanitised_content[key].unsanitised = v["unsanitised"]
        response.sanitised_content[key].sanitised = v["sanitised"]
    if accepted.scheduled_for is not None:
        response.scheduled_for.FromDatetime(accepted.scheduled_for)
