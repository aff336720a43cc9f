"""gRPC entrypoint of callbacks: a receipt or a received text in, made durable, then answered."""

from __future__ import annotations

import grpc

from herald.grpcsrv.errors import statuses_for_errors
from herald.service_layer.inbound import InboundIntake
from herald.service_layer.receipts import ReceiptIntake
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc


class CallbacksServicer(callbacks_pb2_grpc.CallbacksServicer):
    def __init__(self, intake: ReceiptIntake, inbound: InboundIntake) -> None:
        self._intake = intake
        self._inbound = inbound

    def ReportDelivery(
        self, request: callbacks_pb2.DeliveryReceipt, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        with statuses_for_errors(context):
            notification_id = self._intake.report(request.provider, request.reference, request.status, request.code)
            return callbacks_pb2.ReportDeliveryResponse(notification_id=notification_id)
        raise AssertionError("unreachable")

    def ReceiveText(
        self, request: callbacks_pb2.InboundText, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReceiveTextResponse:
        with statuses_for_errors(context):
            text_id = self._inbound.receive(
                request.provider,
                request.notify_number,
                request.user_number,
                request.content,
                request.provider_reference,
                request.provider_date,
            )
            return callbacks_pb2.ReceiveTextResponse(id=text_id)
        raise AssertionError("unreachable")
