"""gRPC clients of Herald's own services, for the dispatcher, the CLI and tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import grpc

from herald.domain.apikeys import create_token, split_key
from herald.domain.statuses import FINAL
from herald.grpcsrv.rpc_metrics import observed_channel
from herald.v1 import ingest_pb2, ingest_pb2_grpc
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
