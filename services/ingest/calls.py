"""What ingest's servicers share: reading metadata, authenticating a call, protobuf timestamps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from herald.grpcsrv.errors import statuses_for_errors
from herald.service_layer.auth import Authenticator, Caller

T = TypeVar("T")


def metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata():
        if name == key:
            return str(value)
    return None


def authenticated(authenticator: Authenticator, context: grpc.ServicerContext, work: Callable[[Caller], T]) -> T:
    """Authenticates the call's API key token, then runs `work`; the use cases' errors become statuses."""
    with statuses_for_errors(context):
        return work(authenticator.authenticate(metadata(context, "authorization")))
    raise AssertionError("unreachable")


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
