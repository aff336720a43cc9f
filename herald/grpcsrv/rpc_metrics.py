"""RPC metrics by the ecosystem's convention (go-grpc-prometheus, which standard gRPC dashboards read),
for Herald's servers and for its own clients, plus the seed's statsd `api.{service}.{method}.{code}`.

Each method's label values are bound once, when the method is first seen, so a call only increments.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from herald import metrics

# Go's names for the codes (codes.Code.String()), which dashboards and alert rules match on.
CODE_NAMES: dict[grpc.StatusCode, str] = {
    code: "".join(word.capitalize() for word in code.name.split("_")) for code in grpc.StatusCode
} | {grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"}

_METHOD = ["grpc_type", "grpc_service", "grpc_method"]

SERVER_STARTED = Counter("grpc_server_started_total", "RPCs started on the server", _METHOD)
SERVER_HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server", [*_METHOD, "grpc_code"])
SERVER_HANDLING = Histogram("grpc_server_handling_seconds", "Time the server took to complete an RPC", _METHOD)

CLIENT_STARTED = Counter("grpc_client_started_total", "RPCs started by Herald's clients", _METHOD)
CLIENT_HANDLED = Counter("grpc_client_handled_total", "RPCs completed for Herald's clients", [*_METHOD, "grpc_code"])
CLIENT_HANDLING = Histogram("grpc_client_handling_seconds", "Time until an RPC completed for the client", _METHOD)


def rpc_type(request_streaming: bool, response_streaming: bool) -> str:
    if request_streaming:
        return "bidi_stream" if response_streaming else "client_stream"
    return "server_stream" if response_streaming else "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """'/herald.v1.Ingest/SendSms' -> ('herald.v1.Ingest', 'SendSms')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class MethodMetrics:
    """One method's metrics with their labels bound; `statsd` adds the seed's `api.*` counter and timer."""

    __slots__ = ("_handled", "_seconds", "_statsd_names", "started")

    def __init__(
        self,
        families: tuple[Counter, Counter, Histogram],
        grpc_type: str,
        full_method: str,
        *,
        statsd: bool,
    ) -> None:
        started, handled, seconds = families
        service, method = split_method(full_method)
        self.started = started.labels(grpc_type, service, method)
        self._seconds = seconds.labels(grpc_type, service, method)
        # Every code bound up front, as go-grpc-prometheus does, so rate() sees a series from zero.
        self._handled = {code: handled.labels(grpc_type, service, method, name) for code, name in CODE_NAMES.items()}
        short_service = service.rsplit(".", 1)[-1]
        self._statsd_names = (
            {code: f"api.{short_service}.{method}.{name}" for code, name in CODE_NAMES.items()} if statsd else None
        )

    def handled(self, code: grpc.StatusCode | None, seconds: float) -> None:
        """`code` None is OK: a servicer that returns normally never sets one."""
        code = code or grpc.StatusCode.OK
        self._handled[code].inc()
        self._seconds.observe(seconds)
        if self._statsd_names is not None:
            name = self._statsd_names[code]
            metrics.statsd_client.incr(name)
            metrics.statsd_client.timing(name, seconds)


SERVER_FAMILIES = (SERVER_STARTED, SERVER_HANDLED, SERVER_HANDLING)
CLIENT_FAMILIES = (CLIENT_STARTED, CLIENT_HANDLED, CLIENT_HANDLING)


class ObservingClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[misc]
    """`grpc_client_*` for every call on the channel, blocking or future, answered or failed."""

    def __init__(self) -> None:
        self._methods: dict[tuple[str, str], MethodMetrics] = {}

    def _metrics(self, full_method: str, grpc_type: str) -> MethodMetrics:
        key = (full_method, grpc_type)
        found = self._methods.get(key)
        if found is None:
            found = self._methods[key] = MethodMetrics(CLIENT_FAMILIES, grpc_type, full_method, statsd=False)
        return found

    @staticmethod
    def _observe(method_metrics: MethodMetrics, start: float, call: grpc.Future) -> None:
        method_metrics.handled(call.code(), time.perf_counter() - start)

    def _intercept(self, grpc_type: str, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        method_metrics = self._metrics(details.method, grpc_type)
        method_metrics.started.inc()
        start = time.perf_counter()
        # A blocking call comes back done (answered or failed), a future later: the callback covers both.
        call = continuation(details, request)
        call.add_done_callback(functools.partial(self._observe, method_metrics, start))
        return call

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return self._intercept("unary", continuation, client_call_details, request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: grpc.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return self._intercept("client_stream", continuation, client_call_details, request_iterator)


def observed_channel(target: str) -> grpc.Channel:
    """An insecure channel to one of Herald's services whose calls are counted and timed."""
    return grpc.intercept_channel(grpc.insecure_channel(target), ObservingClientInterceptor())
