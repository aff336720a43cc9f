"""The RPC fuzzer: every RPC of every herald.v1 service, found from the generated modules and placed by
asking each server's reflection which services it serves, so a new RPC is fuzzed without a change here.

Passes when no answer is INTERNAL or UNKNOWN, every server still answers SERVING to grpc.health.v1, and
every send answered OK is then stored.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import Engine
from tqdm import tqdm

import herald.v1
from chaos.cluster import Cluster
from chaos.fuzz_inputs import Case, Generator, Seeds, Target
from chaos.verdict import statuses
from herald.clients import IngestClient
from herald.v1 import ingest_pb2, scheduler_pb2, scheduler_pb2_grpc

BAD_CODES = frozenset({"INTERNAL", "UNKNOWN"})
_SEND_METHODS = frozenset({"SendSms", "SendEmail"})
# How callers of a service authenticate: Admin with the admin token; any other service on ingest's port
# with an API key (Ingest, Reads and whatever comes next); the internal services with nothing.
_ADMIN_SERVICE = "herald.v1.Admin"
_EXAMPLES_PER_GROUP = 3
_CALL_TIMEOUT = 15.0
# 4 MiB is gRPC's default receive limit; a few cases are bigger on purpose, so the client may send them.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)]


def contract_services() -> dict[str, list[tuple[str, str]]]:
    """service full name -> [(method name, request type full name)] from every herald.v1 *_pb2 module."""
    found: dict[str, list[tuple[str, str]]] = {}
    for module in pkgutil.iter_modules(herald.v1.__path__):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(f"herald.v1.{module.name}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            found[service.full_name] = [(m.name, m.input_type.full_name) for m in service.methods]
    return found


def served_services(address: str) -> set[str]:
    channel = grpc.insecure_channel(address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = stub.ServerReflectionInfo(iter([request]), timeout=10)
        return {s.name for answer in answers for s in answer.list_services_response.service}
    finally:
        channel.close()


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    target: Target


def discover(addresses: Iterable[str], ingest: str) -> tuple[list[Endpoint], list[str]]:
    """Every contract RPC with the address serving it; and the contract services no server serves."""
    contracts = contract_services()
    pool = importlib.import_module("google.protobuf.descriptor_pool").Default()
    endpoints: list[Endpoint] = []
    placed: set[str] = set()
    for address in addresses:
        for service in sorted(served_services(address) & contracts.keys() - placed):
            placed.add(service)
            auth = "admin" if service == _ADMIN_SERVICE else "api-key" if address == ingest else "none"
            for method, request_type in contracts[service]:
                target = Target(f"/{service}/{method}", pool.FindMessageTypeByName(request_type), auth)
                endpoints.append(Endpoint(address, target))
    return endpoints, sorted(contracts.keys() - placed)


@dataclass
class FuzzReport:
    seed: int
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # (path, kind, code) -> repros
    failure_counts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)
    unhealthy: dict[str, str] = field(default_factory=dict)
    unserved: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bad_answers(self) -> int:
        return sum(self.codes[c] for c in BAD_CODES)

    @property
    def failed(self) -> bool:
        return bool(self.bad_answers or self.not_stored or self.unhealthy or self.unserved)

    def summary(self) -> str:
        lines = [
            f"fuzz: seed {self.seed}, {self.requests} requests over {len(self.methods)} RPCs in {self.seconds:.0f}s",
            "  answers: " + ", ".join(f"{code} {n}" for code, n in self.codes.most_common()),
            f"  INTERNAL/UNKNOWN: {self.bad_answers}; sends accepted: {len(self.accepted)}, "
            f"not stored: {len(self.not_stored)}; unhealthy: {self.unhealthy or 'none'}",
        ]
        if self.unserved:
            lines.append(f"  contract services no server serves: {', '.join(self.unserved)}")
        unimplemented = sorted(path for path, codes in self.by_method.items() if codes["UNIMPLEMENTED"])
        if unimplemented:
            lines.append(f"  in the contracts, answered UNIMPLEMENTED: {', '.join(unimplemented)}")
        for (path, kind, code), repros in sorted(self.failures.items()):
            lines.append(f"  {code} x{self.failure_counts[path, kind, code]} {path} [{kind}]")
            lines.extend(f"      {r}" for r in repros)
        if self.not_stored:
            lines.append(f"  accepted but not stored (first ids): {', '.join(self.not_stored[:5])}")
        return "\n".join(lines)


class _Caller:
    """Raw-bytes calls: the request is sent exactly as generated, never re-encoded by the client."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._channels = {a: grpc.insecure_channel(a, options=_CHANNEL_OPTIONS) for a in {e.address for e in endpoints}}
        self._calls = {
            e.target.path: self._channels[e.address].unary_unary(e.target.path) for e in endpoints
        }  # identity (de)serializers: bytes in, bytes out

    def call(self, case: Case) -> tuple[str, bytes]:
        try:
            answer = self._calls[case.target.path](case.payload, metadata=case.metadata, timeout=_CALL_TIMEOUT)
        except grpc.RpcError as exc:
            return str(exc.code().name), b""
        except ValueError:
            # The client itself refuses some metadata (e.g. characters gRPC cannot carry): not a server answer.
            return "CLIENT_REFUSED", b""
        return "OK", bytes(answer)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


def run_fuzz(
    cluster: Cluster,
    engine: Engine,
    seeds: Seeds,
    seed: int,
    requests: int,
    workers: int = 12,
    progress: bool = True,
    only: Sequence[int] = (),
) -> FuzzReport:
    """Cases 0 .. requests-1 of `seed`, or only the case indices given (to replay a failure)."""
    indices = list(only) or list(range(requests))
    started = time.monotonic()
    addresses = [cluster.ingest, cluster.callbacks, cluster.scheduler]
    addresses += [cluster.roles[name].address for name in cluster.dispatchers]
    endpoints, unserved = discover(addresses, cluster.ingest)
    report = FuzzReport(seed, unserved=unserved, methods=[e.target.path for e in endpoints])
    targets = [e.target for e in endpoints]
    generator = Generator(seeds, seed)
    caller = _Caller(endpoints)
    lock = threading.Lock()
    bar = tqdm(total=len(indices), desc=f"fuzz (seed {seed})", unit="req", disable=not progress, leave=False)

    def one(index: int) -> None:
        case = generator.case(index, targets)
        code, answer = caller.call(case)
        method = case.target.path.rsplit("/", 1)[-1]
        with lock:
            report.requests += 1
            report.codes[code] += 1
            report.by_method[case.target.path][code] += 1
            if code in BAD_CODES:
                group = (case.target.path, case.kind, code)
                report.failure_counts[group] += 1
                examples = report.failures.setdefault(group, [])
                if len(examples) < _EXAMPLES_PER_GROUP:
                    examples.append(case.repro(seed))
            if code == "OK" and method in _SEND_METHODS:
                report.accepted.append(ingest_pb2.SendResponse.FromString(answer).id)
            bar.update(1)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fuzz") as pool:
        for future in [pool.submit(one, i) for i in indices]:
            future.result()
    bar.close()
    caller.close()
    report.not_stored = _not_stored(engine, report.accepted)
    report.unhealthy = cluster.unhealthy()
    report.seconds = time.monotonic() - started
    return report


def _not_stored(engine: Engine, ids: list[str], timeout: float = 30.0) -> list[str]:
    """Accepted ids still missing from the database after `timeout` (storing is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = sorted(set(ids) - statuses(engine, ids).keys())
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1.0)


def seeds_for(cluster: Cluster, demo: dict[str, str], admin_secret: str) -> Seeds:
    """Real ids for valid requests: a stored notification and the scheduler's task names."""
    client = IngestClient(cluster.ingest, demo["live_key"])
    sent = client.send_sms("07700900123", demo["sms_template_id"], {"name": "Fuzz", "code": "0"})
    client.follow(sent.id, timeout=30)
    client.close()
    channel = grpc.insecure_channel(cluster.scheduler)
    try:
        tasks = [t.name for t in scheduler_pb2_grpc.SchedulerStub(channel).ListTasks(
            scheduler_pb2.ListTasksRequest(), timeout=10).tasks]  # fmt: skip
    except grpc.RpcError:
        tasks = []
    finally:
        channel.close()
    return Seeds.from_demo(demo, admin_secret, sent.id, tasks)
