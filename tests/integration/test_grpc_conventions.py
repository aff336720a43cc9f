"""Herald's gRPC server and clients by convention, on a real server: the Prometheus names and labels
standard dashboards read, malformed request bytes answered INVALID_ARGUMENT, unmapped faults INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.grpcsrv.rpc_metrics import observed_channel
from herald.grpcsrv.server import Server, ServiceBinding
from herald.service_layer.auth import Authenticator
from herald.service_layer.sending import Sender
from herald.v1 import ingest_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from services.ingest.servicer import IngestServicer

PERSONAL = "07700900123"
SCHEDULER = "herald.v1.Scheduler"
COUNTING = "herald.test.Counting"  # a test-only service with the streaming shapes no Herald RPC has yet


class TinyScheduler(scheduler_pb2_grpc.SchedulerServicer):
    def ListTasks(self, request: Any, context: grpc.ServicerContext) -> scheduler_pb2.ListTasksResponse:
        return scheduler_pb2.ListTasksResponse(tasks=[scheduler_pb2.ScheduledTask(name="greet")])

    def RunTask(self, request: Any, context: grpc.ServicerContext) -> scheduler_pb2.RunTaskResponse:
        if request.name == "explode":
            raise RuntimeError(f"could not send to {PERSONAL}")  # personal data that must not leak
        if request.name != "greet":
            context.abort(grpc.StatusCode.NOT_FOUND, "No such task")
        return scheduler_pb2.RunTaskResponse(ran=True, summary="ran greet")


def _names(requests: Iterator[scheduler_pb2.RunTaskRequest], context: grpc.ServicerContext) -> Any:
    return scheduler_pb2.RunTaskResponse(summary=",".join(r.name for r in requests))


def _repeat(request: scheduler_pb2.RunTaskRequest, context: grpc.ServicerContext) -> Iterator[Any]:
    for n in range(3):
        yield scheduler_pb2.RunTaskResponse(summary=f"{request.name} {n}")


def _add_counting(servicer: Any, server: grpc.Server) -> None:
    decode, encode = scheduler_pb2.RunTaskRequest.FromString, scheduler_pb2.RunTaskResponse.SerializeToString
    handlers = {
        "Names": grpc.stream_unary_rpc_method_handler(_names, request_deserializer=decode, response_serializer=encode),
        "Repeat": grpc.unary_stream_rpc_method_handler(
            _repeat, request_deserializer=decode, response_serializer=encode
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(COUNTING, handlers),))


@pytest.fixture(scope="module")
def target(engine: Engine) -> Iterator[str]:
    box = SecretBox("test-secret")
    ingest = IngestServicer(
        Authenticator(engine, box), Sender(engine, lambda routing_key, item, timeout=0.0: None, "example.org"), engine
    )
    server = Server(
        "127.0.0.1:0",
        [
            ServiceBinding(TinyScheduler(), scheduler_pb2_grpc.add_SchedulerServicer_to_server, SCHEDULER),
            ServiceBinding(ingest, ingest_pb2_grpc.add_IngestServicer_to_server, "herald.v1.Ingest"),
            ServiceBinding(None, _add_counting, COUNTING),
        ],
        workers=4,
    )
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.fixture
def scheduler(target: str) -> Iterator[scheduler_pb2_grpc.SchedulerStub]:
    channel = observed_channel(target)
    yield scheduler_pb2_grpc.SchedulerStub(channel)
    channel.close()


@pytest.fixture
def raw_channel(target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as channel:
        yield channel


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _rpc(method: str, service: str = SCHEDULER, grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": service, "grpc_method": method}


def _call_code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_scrape_has_the_conventional_server_and_client_names_and_labels(
    scheduler: scheduler_pb2_grpc.SchedulerStub,
) -> None:
    list_tasks, run_task = _rpc("ListTasks"), _rpc("RunTask")
    before = {
        "started": _sample("grpc_server_started_total", **list_tasks),
        "ok": _sample("grpc_server_handled_total", **list_tasks, grpc_code="OK"),
        "not_found": _sample("grpc_server_handled_total", **run_task, grpc_code="NotFound"),
        "seconds": _sample("grpc_server_handling_seconds_count", **list_tasks),
        "client_started": _sample("grpc_client_started_total", **run_task),
        "client_not_found": _sample("grpc_client_handled_total", **run_task, grpc_code="NotFound"),
        "client_ok": _sample("grpc_client_handled_total", **run_task, grpc_code="OK"),
        "client_seconds": _sample("grpc_client_handling_seconds_count", **run_task),
    }

    scheduler.ListTasks(scheduler_pb2.ListTasksRequest())
    scheduler.ListTasks(scheduler_pb2.ListTasksRequest())
    assert _call_code(lambda: scheduler.RunTask(scheduler_pb2.RunTaskRequest(name="nope"))) == grpc.StatusCode.NOT_FOUND
    assert scheduler.RunTask.future(scheduler_pb2.RunTaskRequest(name="greet")).result().ran  # a future is observed too

    assert _sample("grpc_server_started_total", **list_tasks) - before["started"] == 2
    assert _sample("grpc_server_handled_total", **list_tasks, grpc_code="OK") - before["ok"] == 2
    assert _sample("grpc_server_handled_total", **run_task, grpc_code="NotFound") - before["not_found"] == 1
    assert _sample("grpc_server_handling_seconds_count", **list_tasks) - before["seconds"] == 2
    assert _sample("grpc_client_started_total", **run_task) - before["client_started"] == 2
    assert _sample("grpc_client_handled_total", **run_task, grpc_code="NotFound") - before["client_not_found"] == 1
    assert _sample("grpc_client_handled_total", **run_task, grpc_code="OK") - before["client_ok"] == 1
    assert _sample("grpc_client_handling_seconds_count", **run_task) - before["client_seconds"] == 2

    # The exposition itself, as Prometheus scrapes it: types, and exactly the conventional label names.
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(REGISTRY).decode())}
    method_labels = {"grpc_type", "grpc_service", "grpc_method"}
    for side in ("server", "client"):
        assert families[f"grpc_{side}_started"].type == "counter"
        assert families[f"grpc_{side}_handled"].type == "counter"
        assert families[f"grpc_{side}_handling_seconds"].type == "histogram"
        for sample in families[f"grpc_{side}_started"].samples:
            assert set(sample.labels) == method_labels
        for sample in families[f"grpc_{side}_handled"].samples:
            assert set(sample.labels) == method_labels | {"grpc_code"}
        for sample in families[f"grpc_{side}_handling_seconds"].samples:
            assert set(sample.labels) - {"le"} == method_labels
    served = {(s.labels["grpc_service"], s.labels["grpc_method"]) for s in families["grpc_server_started"].samples}
    assert (SCHEDULER, "ListTasks") in served
    codes = {s.labels["grpc_code"] for s in families["grpc_server_handled"].samples}
    assert {"OK", "NotFound", "InvalidArgument", "Internal", "Canceled", "Unauthenticated"} <= codes  # Go's names


def test_streaming_shapes_are_decoded_counted_and_typed(target: str, raw_channel: grpc.Channel) -> None:
    names = raw_channel.stream_unary(
        f"/{COUNTING}/Names",
        request_serializer=scheduler_pb2.RunTaskRequest.SerializeToString,
        response_deserializer=scheduler_pb2.RunTaskResponse.FromString,
    )
    repeat = raw_channel.unary_stream(
        f"/{COUNTING}/Repeat",
        request_serializer=scheduler_pb2.RunTaskRequest.SerializeToString,
        response_deserializer=scheduler_pb2.RunTaskResponse.FromString,
    )
    client_stream, server_stream = (
        _rpc("Names", COUNTING, "client_stream"),
        _rpc("Repeat", COUNTING, "server_stream"),
    )
    before_ok = _sample("grpc_server_handled_total", **client_stream, grpc_code="OK")
    before_repeat = _sample("grpc_server_handling_seconds_count", **server_stream)

    answer = names(iter([scheduler_pb2.RunTaskRequest(name="a"), scheduler_pb2.RunTaskRequest(name="b")]))
    assert answer.summary == "a,b"
    assert [r.summary for r in repeat(scheduler_pb2.RunTaskRequest(name="x"))] == ["x 0", "x 1", "x 2"]

    assert _sample("grpc_server_handled_total", **client_stream, grpc_code="OK") - before_ok == 1
    assert _sample("grpc_server_handling_seconds_count", **server_stream) - before_repeat == 1

    # One malformed message in a client stream fails the call as the caller's fault.
    raw_names = raw_channel.stream_unary(f"/{COUNTING}/Names")
    with pytest.raises(grpc.RpcError) as caught:
        raw_names(iter([scheduler_pb2.RunTaskRequest(name="a").SerializeToString(), b"\x0a\x05ab"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Malformed request: could not decode RunTaskRequest"


def _length_delimited(field: int, payload: bytes) -> bytes:
    """A protobuf field of wire type 2: tag, varint length, payload."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([field << 3 | 2]) + length + payload


def _personalisation_nested(depth: int) -> bytes:
    """SendSmsRequest.personalisation (3) as a Struct nested `depth` times through Value.struct_value (5):
    deeper than protobuf's recursion limit, which no well-behaved client can even serialise."""
    struct = b""
    for _ in range(depth):
        entry = _length_delimited(1, b"a") + _length_delimited(2, _length_delimited(5, struct))
        struct = _length_delimited(1, entry)
    return _length_delimited(3, struct)


@pytest.mark.parametrize(
    ("method", "raw", "message"),
    [
        (f"/{SCHEDULER}/RunTask", b"\x0a\x05ab", "RunTaskRequest"),  # truncated: 5 bytes announced, 2 sent
        (f"/{SCHEDULER}/RunTask", b"\x0a\x02\xff\xfe", "RunTaskRequest"),  # invalid UTF-8 in a string field
        (f"/{SCHEDULER}/ListTasks", b"\xff\xff\xff", "ListTasksRequest"),  # not protobuf at all
        ("/herald.v1.Ingest/SendSms", _personalisation_nested(200), "SendSmsRequest"),  # recursion too deep
    ],
    ids=["truncated", "bad-utf8", "garbage", "too-deep"],
)
def test_malformed_request_bytes_are_invalid_argument(
    raw_channel: grpc.Channel, method: str, raw: bytes, message: str
) -> None:
    service, name = method.strip("/").split("/")
    before = _sample("grpc_server_handled_total", **_rpc(name, service), grpc_code="InvalidArgument")
    call = raw_channel.unary_unary(method)  # no serializers: the bytes go as they are
    with pytest.raises(grpc.RpcError) as caught:
        call(raw, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"Malformed request: could not decode {message}"
    after = _sample("grpc_server_handled_total", **_rpc(name, service), grpc_code="InvalidArgument")
    assert after - before == 1


def test_an_unmapped_exception_is_internal_without_a_stack_trace(scheduler: scheduler_pb2_grpc.SchedulerStub) -> None:
    run_task = _rpc("RunTask")
    before = _sample("grpc_server_handled_total", **run_task, grpc_code="Internal")
    with pytest.raises(grpc.RpcError) as caught:
        scheduler.RunTask(scheduler_pb2.RunTaskRequest(name="explode"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "Internal server error"
    assert PERSONAL not in str(caught.value.debug_error_string())
    assert _sample("grpc_server_handled_total", **run_task, grpc_code="Internal") - before == 1


def test_health_and_reflection_run_through_the_wrapper(target: str, raw_channel: grpc.Channel) -> None:
    check = _rpc("Check", "grpc.health.v1.Health")
    reflection_info = _rpc("ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection", "bidi_stream")
    checks_before = _sample("grpc_server_handled_total", **check, grpc_code="OK")
    streams_before = _sample("grpc_server_started_total", **reflection_info)

    checked = health_pb2_grpc.HealthStub(raw_channel).Check(health_pb2.HealthCheckRequest(service=SCHEDULER))
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(raw_channel).get_services()  # one stream, kept open
    assert {SCHEDULER, "herald.v1.Ingest"} <= set(services)

    assert _sample("grpc_server_handled_total", **check, grpc_code="OK") - checks_before == 1
    assert _sample("grpc_server_started_total", **reflection_info) - streams_before == 1
