"""One way to run a gRPC server: health, reflection, metrics, INTERNAL for unexpected faults, and a
graceful SIGTERM (health goes NOT_SERVING, new calls are refused, calls in flight get `grace`)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from herald import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """A servicer, the generated `add_*_to_server` function and its full service name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.Server], None]
    full_name: str


class ObservingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every call; turns an unexpected exception into INTERNAL without a stack trace."""

    def __init__(self) -> None:
        # Wrapped once per method, not per call: the call path is hot.
        self._wrapped: dict[str, Any] = {}

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is None:
            wrapped = self._wrap(handler_call_details.method, continuation(handler_call_details))
            self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(full_method: str, handler: Any) -> Any:
        if handler is None or handler.unary_unary is None:
            return handler
        method = full_method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return inner(request, context)
            except Exception as exc:
                if context.code() not in (None, grpc.StatusCode.OK):  # an abort() the servicer chose
                    code = context.code().name
                    raise
                code = "INTERNAL"
                log.exception("unexpected error", extra={"method": method, "error": type(exc).__name__})
                context.abort(grpc.StatusCode.INTERNAL, "Internal server error")
            finally:
                metrics.observe("grpc.server.handling", time.perf_counter() - start, method=method, code=code)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
