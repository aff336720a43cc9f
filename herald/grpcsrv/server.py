"""One way to run a gRPC server: health, reflection, metrics, INTERNAL for unexpected faults, and a
graceful SIGTERM (health goes NOT_SERVING, new calls are refused, calls in flight get `grace`)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from herald.grpcsrv import rpc_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """A servicer, the generated `add_*_to_server` function and its full service name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.Server], None]
    full_name: str


class _ObservedMethod:
    """One method of a servicer as the server runs it: request bytes decoded here, so that a malformed
    request is INVALID_ARGUMENT rather than grpcio's INTERNAL; counted, timed, and an exception the
    servicer did not map turned into INTERNAL without a stack trace."""

    __slots__ = ("_behaviour", "_decode", "_method", "_metrics")

    def __init__(self, handler: grpc.RpcMethodHandler, full_method: str) -> None:
        self._method = full_method
        self._metrics = rpc_metrics.MethodMetrics(
            rpc_metrics.SERVER_FAMILIES,
            rpc_metrics.rpc_type(handler.request_streaming, handler.response_streaming),
            full_method,
            statsd=True,
        )
        self._behaviour = next(
            b
            for b in (handler.unary_unary, handler.unary_stream, handler.stream_unary, handler.stream_stream)
            if b is not None
        )
        decode = _decoder(handler.request_deserializer)
        self._decode = _decoding_each(decode) if handler.request_streaming else decode

    def answer(self, request: Any, context: grpc.ServicerContext) -> Any:
        """unary-unary and stream-unary: `request` is the bytes, or an iterator of them."""
        start = time.perf_counter()
        self._metrics.started.inc()
        code = None
        try:
            response = self._behaviour(self._decode(request, context), context)
            code = context.code()  # a servicer may set a code and return
            return response
        except Exception as exc:
            code = context.code()
            if code in (None, grpc.StatusCode.OK):  # not an abort() the servicer (or the decoder) chose
                code = grpc.StatusCode.INTERNAL
                self._internal(context, exc)
            raise
        finally:
            self._metrics.handled(code, time.perf_counter() - start)

    def stream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """unary-stream and stream-stream: timed until the last response is sent."""
        start = time.perf_counter()
        self._metrics.started.inc()
        code = None
        try:
            yield from self._behaviour(self._decode(request, context), context)
            code = context.code()
        except GeneratorExit:  # grpcio closes the generator when the client goes away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = context.code()
            if code in (None, grpc.StatusCode.OK):  # not an abort() the servicer (or the decoder) chose
                code = grpc.StatusCode.INTERNAL
                self._internal(context, exc)
            raise
        finally:
            self._metrics.handled(code, time.perf_counter() - start)

    def _internal(self, context: grpc.ServicerContext, exc: Exception) -> NoReturn:
        log.exception("unexpected error", extra={"method": self._method, "error": type(exc).__name__})
        context.abort(grpc.StatusCode.INTERNAL, "Internal server error")
        raise AssertionError("unreachable")  # abort raises


Decode = Callable[[Any, grpc.ServicerContext], Any]


def _decoder(deserializer: Callable[[bytes], Any] | None) -> Decode:
    if deserializer is None:  # a handler that takes bytes
        return lambda raw, context: raw
    message = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    complaint = f"Malformed request: could not decode {message.name if message is not None else 'the request'}"

    def decode(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # truncated bytes, bad UTF-8 in a string, nesting too deep: all the caller's doing
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, complaint)

    return decode


def _decoding_each(decode: Decode) -> Decode:
    def decode_each(raws: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        return (decode(raw, context) for raw in raws)

    return decode_each


class ObservingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Runs every method through `_ObservedMethod`; registered without a deserializer, so the bytes
    reach the wrapper."""

    def __init__(self) -> None:
        # Wrapped once per method, not per call: the call path is hot.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = continuation(handler_call_details)
            if handler is None:  # unknown method: UNIMPLEMENTED; not kept, so made-up names cannot grow the dict
                return None
            wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, full_method: str) -> grpc.RpcMethodHandler:
    observed = _ObservedMethod(handler, full_method)
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(observed.stream, response_serializer=serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(observed.answer, response_serializer=serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(observed.stream, response_serializer=serializer)
    return grpc.unary_unary_rpc_method_handler(observed.answer, response_serializer=serializer)


class Server:
    def __init__(self, address: str, bindings: Sequence[ServiceBinding], *, workers: int = 32) -> None:
        self.health = health.HealthServicer()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers),
            interceptors=[ObservingInterceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        for binding in bindings:
            binding.add_to_server(binding.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [b.full_name for b in bindings]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME, health.SERVICE_NAME], self._server)
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {address}")
        self._names = names

    def start(self) -> None:
        self._server.start()
        for name in ["", *self._names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 10.0) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()


def wait_for_signal(on_stop: Callable[[], None]) -> None:
    """Blocks the main thread until SIGTERM or SIGINT, then calls on_stop once."""
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stop.wait()
    on_stop()
