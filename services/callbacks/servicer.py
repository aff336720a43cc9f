"""gRPC entrypoint of callbacks: receipts in, status moves out."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from herald.grpcsrv.errors import statuses_for_errors
from herald.service_layer.receipts import Outcome, ReceiptProcessor
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc


class CallbacksServicer(callbacks_pb2_grpc.CallbacksServicer):
    def __init__(self, processor: ReceiptProcessor) -> None:
        self._processor = processor

    def ReportDelivery(
        self, request: callbacks_pb2.DeliveryReceipt, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        return _answer(
            context,
            lambda: self._processor.report(request.provider, request.reference, request.status, request.code),
        )

    def SimulateDelivery(
        self, request: callbacks_pb2.SimulateDeliveryRequest, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        return _answer(context, lambda: self._processor.simulate(request.notification_id))


def _answer(context: grpc.ServicerContext, work: Callable[[], Outcome]) -> callbacks_pb2.ReportDeliveryResponse:
    with statuses_for_errors(context):
        outcome = work()
        return callbacks_pb2.ReportDeliveryResponse(
            notification_id=outcome.notification_id, status=outcome.status, applied=outcome.applied
        )
    raise AssertionError("unreachable")
