"""Composition root of callbacks."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.grpcsrv.server import Server, ServiceBinding
from herald.service_layer.receipts import ReceiptProcessor
from herald.settings import Settings
from herald.v1 import callbacks_pb2_grpc
from services.callbacks.servicer import CallbacksServicer

SERVICE_NAME = "herald.v1.Callbacks"


def build(settings: Settings, engine: Engine) -> Server:
    servicer = CallbacksServicer(ReceiptProcessor(engine))
    return Server(
        settings.callbacks_address,
        [ServiceBinding(servicer, callbacks_pb2_grpc.add_CallbacksServicer_to_server, SERVICE_NAME)],
    )
