"""Composition root of callbacks."""

from __future__ import annotations

from herald.grpcsrv.server import Server, ServiceBinding
from herald.queues import PublisherThread
from herald.queues.broker import gather_seconds
from herald.service_layer.inbound import InboundIntake
from herald.service_layer.receipts import ReceiptIntake
from herald.settings import Settings
from herald.v1 import callbacks_pb2_grpc
from services.callbacks.servicer import CallbacksServicer

SERVICE_NAME = "herald.v1.Callbacks"
RECEIPT_GATHER = 0.002


def build(settings: Settings) -> tuple[Server, PublisherThread]:
    # Receipts come in bursts (a provider posts many at once): gathered for 2 ms, a round carries more of
    # them, so fewer publishes and confirms here and fewer messages for the receipts dispatcher. Live bench
    # (goal 3), two pairs of runs: callbacks 0.43-0.46 -> 0.35-0.40 ms and receipts dispatcher 0.05-0.06 ->
    # 0.04 ms of CPU per receipt, end to end 1,170-1,230 -> 1,460-1,560 msg/s.
    publisher = PublisherThread(settings.broker_url, gather=max(gather_seconds(settings.broker_url), RECEIPT_GATHER))
    servicer = CallbacksServicer(ReceiptIntake(publisher.publish), InboundIntake(publisher.publish))
    server = Server(
        settings.callbacks_address,
        [ServiceBinding(servicer, callbacks_pb2_grpc.add_CallbacksServicer_to_server, SERVICE_NAME)],
    )
    return server, publisher
