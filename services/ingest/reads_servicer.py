"""gRPC entrypoint of herald.v1.Reads: what Notify's v2 GET routes show, for the REST gateway."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import grpc
from sqlalchemy import Engine

from herald.db.notifications import NotificationRow
from herald.db.reads import TemplateDetail
from herald.domain import statuses as st
from herald.domain.templates import placeholders
from herald.queues.codec import KEY_TYPES, TYPES
from herald.service_layer import inbound, queries, reads
from herald.service_layer.auth import Authenticator, Caller
from herald.v1 import reads_pb2, reads_pb2_grpc
from herald.v1.notifications_pb2 import Notification, TemplateRef
from services.ingest.calls import authenticated, timestamp

T = TypeVar("T")


class ReadsServicer(reads_pb2_grpc.ReadsServicer):
    def __init__(self, authenticator: Authenticator, engine: Engine, sms_rate: float) -> None:
        self._auth = authenticator
        self._engine = engine
        self._sms_rate = sms_rate

    def _call(self, context: grpc.ServicerContext, work: Callable[[Caller], T]) -> T:
        return authenticated(self._auth, context, work)

    def ListNotifications(
        self, request: reads_pb2.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> reads_pb2.NotificationPage:
        query = reads.NotificationQuery(
            template_types=list(request.template_type),
            statuses=list(request.status),
            reference=request.reference,
            older_than=request.older_than,
        )

        def work(caller: Caller) -> reads_pb2.NotificationPage:
            rows = reads.list_notifications(self._engine, caller, query)
            return reads_pb2.NotificationPage(notifications=[self._listed(row) for row in rows])

        return self._call(context, work)

    def GetNotification(
        self, request: reads_pb2.ReadNotificationRequest, context: grpc.ServicerContext
    ) -> reads_pb2.ListedNotification:
        return self._call(
            context, lambda caller: self._listed(queries.get_notification(self._engine, caller, request.id))
        )

    def GetTemplate(self, request: reads_pb2.GetTemplateRequest, context: grpc.ServicerContext) -> reads_pb2.Template:
        return self._call(
            context, lambda caller: _template(reads.get_template(self._engine, caller, request.id, request.version))
        )

    def ListTemplates(
        self, request: reads_pb2.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> reads_pb2.TemplateList:
        def work(caller: Caller) -> reads_pb2.TemplateList:
            found = reads.list_templates(self._engine, caller, request.type)
            return reads_pb2.TemplateList(templates=[_template(t) for t in found])

        return self._call(context, work)

    def GetCaller(self, request: reads_pb2.GetCallerRequest, context: grpc.ServicerContext) -> reads_pb2.CallerInfo:
        def work(caller: Caller) -> reads_pb2.CallerInfo:
            service = caller.service
            permissions = ["sms", "email"] + (["international_sms"] if service.can_send_international_sms else [])
            return reads_pb2.CallerInfo(
                service_id=service.id, key_type=KEY_TYPES[caller.key.key_type], permissions=permissions
            )

        return self._call(context, work)

    def ListReceivedTexts(
        self, request: reads_pb2.ListReceivedTextsRequest, context: grpc.ServicerContext
    ) -> reads_pb2.ReceivedTextPage:
        def work(caller: Caller) -> reads_pb2.ReceivedTextPage:
            rows = inbound.list_received_texts(self._engine, caller, request.older_than)
            return reads_pb2.ReceivedTextPage(
                received_texts=[
                    reads_pb2.ReceivedText(
                        id=row.id,
                        created_at=timestamp(row.created_at),
                        service_id=row.service_id,
                        notify_number=row.notify_number,
                        user_number=row.user_number,
                        content=row.content,
                    )
                    for row in rows
                ]
            )

        return self._call(context, work)

    def _listed(self, row: NotificationRow) -> reads_pb2.ListedNotification:
        is_sms = row.notification_type == "sms"
        # Notify's cost: email costs nothing; an SMS is billed once it has left `created` (Herald fixes
        # its fragments at acceptance, but a notification may still fail validation before hand-off).
        cost = row.billable_units * row.rate_multiplier * self._sms_rate if is_sms else 0.0
        return reads_pb2.ListedNotification(
            notification=Notification(
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
            ),
            rate_multiplier=row.rate_multiplier,
            sms_rate=self._sms_rate if is_sms else 0.0,
            cost_in_pounds=round(cost, 4),
            is_cost_data_ready=not is_sms or row.status != st.CREATED,
        )


def _template(template: TemplateDetail) -> reads_pb2.Template:
    texts = (template.subject or "", template.content) if template.template_type == "email" else (template.content,)
    return reads_pb2.Template(
        id=template.id,
        type=TYPES[template.template_type],
        created_at=timestamp(template.created_at),
        updated_at=timestamp(template.updated_at),
        version=template.version,
        body=template.content,
        subject=template.subject or "",
        name=template.name,
        placeholders=placeholders(*texts),
    )
