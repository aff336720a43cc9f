"""Turning domain errors into gRPC statuses, with google.rpc details where a caller can act on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from herald.db.errors import is_transient
from herald.db.services import DuplicateServiceName
from herald.domain.apikeys import AuthError
from herald.domain.limits import LimitExceeded
from herald.queues import PublishFailed
from herald.service_layer.errors import InvalidRequest, NotFound


def abort_invalid(context: grpc.ServicerContext, violations: list[tuple[str, str]]) -> NoReturn:
    """INVALID_ARGUMENT with a BadRequest naming each field; the message is Notify's first error text."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=violations[0][1])
    status.details.add().Pack(detail)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable")  # abort_with_status raises


def field_violations(exc: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT error, for clients and tests."""
    status = rpc_status.from_call(exc)
    if status is None:
        return []
    out: list[tuple[str, str]] = []
    for any_detail in status.details:
        bad = error_details_pb2.BadRequest()
        if any_detail.Unpack(bad):
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


@contextmanager
def statuses_for_errors(context: grpc.ServicerContext) -> Iterator[None]:
    """Maps the use cases' errors to gRPC statuses; anything else is left to the INTERNAL interceptor."""
    try:
        yield
    except AuthError as exc:
        code = grpc.StatusCode.UNAUTHENTICATED if exc.code == 401 else grpc.StatusCode.PERMISSION_DENIED
        context.abort(code, exc.message)
    except InvalidRequest as exc:
        abort_invalid(context, exc.violations)
    except NotFound as exc:
        context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
    except DuplicateServiceName as exc:
        context.abort(grpc.StatusCode.ALREADY_EXISTS, f"Duplicate service name '{exc}'")
    except LimitExceeded as exc:
        # Notify's 429s: the rate limit and the daily limits.
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
    except PublishFailed as exc:
        if exc.in_doubt:
            # It went out and no confirm came back: the broker may hold it. Only a retry under the same
            # idempotency key is sure to give one message.
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "The queue did not confirm the message: retry with the same idempotency-key to send it once",
            )
        # Not accepted, so nothing to lose: the caller may safely send again.
        context.abort(grpc.StatusCode.UNAVAILABLE, "Message not accepted: the queue is unavailable, try again")
    except Exception as exc:
        if not is_transient(exc):
            raise  # a fault of Herald's own: the interceptor answers INTERNAL and logs it
        context.abort(grpc.StatusCode.UNAVAILABLE, "Service temporarily unavailable: the database is away, try again")
