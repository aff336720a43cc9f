"""Herald's gRPC services as the gateway calls them: one long-lived grpc.aio channel to ingest, and the
caller's `Authorization` header passed on as metadata, so ingest authenticates every call itself."""

from __future__ import annotations

from typing import Any, cast

import grpc
import grpc.aio

from herald.v1 import callbacks_pb2, callbacks_pb2_grpc, ingest_pb2, ingest_pb2_grpc, reads_pb2, reads_pb2_grpc

# An HTTP header may hold bytes a gRPC metadata value cannot (anything outside printable ASCII). Such a
# token can never be valid, so ingest gets one that says so in Notify's words.
_UNREADABLE_TOKEN = "Bearer unreadable-token"


def _metadata(authorization: str | None, idempotency_key: str | None = None) -> list[tuple[str, str]]:
    metadata: list[tuple[str, str]] = []
    if authorization:
        printable = authorization.isascii() and authorization.isprintable()
        if printable:
            metadata.append(("authorization", authorization))
        elif authorization[:7].lower() == "bearer ":
            metadata.append(("authorization", _UNREADABLE_TOKEN))
        else:
            metadata.append(("authorization", "unreadable"))
    if idempotency_key is not None:
        metadata.append(("idempotency-key", idempotency_key))
    return metadata


class Ingest:
    """The channel is opened on the server's event loop (grpc.aio binds to it) and closed at shutdown."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._target = target
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._ingest: Any = None
        self._reads: Any = None

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._ingest = ingest_pb2_grpc.IngestStub(self._channel)
        self._reads = reads_pb2_grpc.ReadsStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def send_sms(
        self, request: ingest_pb2.SendSmsRequest, authorization: str | None, idempotency_key: str | None
    ) -> ingest_pb2.SendResponse:
        answer = self._ingest.SendSms(
            request, metadata=_metadata(authorization, idempotency_key), timeout=self._timeout
        )
        return cast(ingest_pb2.SendResponse, await answer)

    async def send_email(
        self, request: ingest_pb2.SendEmailRequest, authorization: str | None, idempotency_key: str | None
    ) -> ingest_pb2.SendResponse:
        answer = self._ingest.SendEmail(
            request, metadata=_metadata(authorization, idempotency_key), timeout=self._timeout
        )
        return cast(ingest_pb2.SendResponse, await answer)

    async def preview(
        self, request: ingest_pb2.PreviewTemplateRequest, authorization: str | None
    ) -> ingest_pb2.TemplatePreview:
        answer = self._ingest.PreviewTemplate(request, metadata=_metadata(authorization), timeout=self._timeout)
        return cast(ingest_pb2.TemplatePreview, await answer)

    async def caller(self, authorization: str | None) -> reads_pb2.CallerInfo:
        answer = self._reads.GetCaller(
            reads_pb2.GetCallerRequest(), metadata=_metadata(authorization), timeout=self._timeout
        )
        return cast(reads_pb2.CallerInfo, await answer)

    async def notification(self, notification_id: str, authorization: str | None) -> reads_pb2.ListedNotification:
        answer = self._reads.GetNotification(
            reads_pb2.ReadNotificationRequest(id=notification_id),
            metadata=_metadata(authorization),
            timeout=self._timeout,
        )
        return cast(reads_pb2.ListedNotification, await answer)

    async def notifications(
        self, request: reads_pb2.ListNotificationsRequest, authorization: str | None
    ) -> reads_pb2.NotificationPage:
        answer = self._reads.ListNotifications(request, metadata=_metadata(authorization), timeout=self._timeout)
        return cast(reads_pb2.NotificationPage, await answer)

    async def template(self, template_id: str, version: int, authorization: str | None) -> reads_pb2.Template:
        answer = self._reads.GetTemplate(
            reads_pb2.GetTemplateRequest(id=template_id, version=version),
            metadata=_metadata(authorization),
            timeout=self._timeout,
        )
        return cast(reads_pb2.Template, await answer)

    async def templates(self, template_type: str, authorization: str | None) -> reads_pb2.TemplateList:
        answer = self._reads.ListTemplates(
            reads_pb2.ListTemplatesRequest(type=template_type), metadata=_metadata(authorization), timeout=self._timeout
        )
        return cast(reads_pb2.TemplateList, await answer)

    async def received_texts(self, older_than: str, authorization: str | None) -> reads_pb2.ReceivedTextPage:
        answer = self._reads.ListReceivedTexts(
            reads_pb2.ListReceivedTextsRequest(older_than=older_than),
            metadata=_metadata(authorization),
            timeout=self._timeout,
        )
        return cast(reads_pb2.ReceivedTextPage, await answer)


class Callbacks:
    """Callbacks' ReportDelivery and ReceiveText, which answer once the receipt or text is durable on its queue."""

    def __init__(self, target: str, timeout: float = 10.0) -> None:
        self._target = target
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def open(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._target)
        self._stub = callbacks_pb2_grpc.CallbacksStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def report(self, provider: str, reference: str, status: str, code: str) -> None:
        receipt = callbacks_pb2.DeliveryReceipt(provider=provider, reference=reference, status=status, code=code)
        await self._stub.ReportDelivery(receipt, timeout=self._timeout)

    async def receive_text(self, text: callbacks_pb2.InboundText) -> None:
        """Returns once callbacks has made the received text durable."""
        await self._stub.ReceiveText(text, timeout=self._timeout)
