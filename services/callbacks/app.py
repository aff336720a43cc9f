"""Composition root of callbacks."""

from __future__ import annotations

from herald.grpcsrv.server import Server, ServiceBinding
from herald.queues import PublisherThread
from herald.service_layer.inbound import InboundIntake
from herald.service_layer.receipts import ReceiptIntake
from herald.settings import Settings
from herald.v1 import callbacks_pb2_grpc
from services.callbacks.servicer import CallbacksServicer

SERVICE_NAME = "herald.v1.Callbacks"


def build(settings: Settings) -> tuple[Server, PublisherThread]:
    publisher = PublisherThread(settings.broker_url)
    servicer = CallbacksServicer(ReceiptIntake(publisher.publish), InboundIntake(publisher.publish))
    server = Server(
        settings.callbacks_address,
        [ServiceBinding(servicer, callbacks_pb2_grpc.add_CallbacksServicer_to_server, SERVICE_NAME)],
    )
    return server, publisher
