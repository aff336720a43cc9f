"""Herald as it is deployed: every service its own `herald ...` process, on the benchmark's database and
vhost, watched from outside (CPU and memory from /proc, health over gRPC, the simulator over HTTP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import BROKER_URL, DATABASE_URL, BenchError, wait_until
from herald.netports import free_port as free_port  # bench's modules take it from here

HERALD = [sys.executable, "-m", "herald.cli"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOGS = Path(__file__).resolve().parent.parent / ".herald" / "bench-logs"
# Receipts come back this long after a hand-off, as a fast provider's would.
RECEIPT_DELAY = 0.05


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int, what: str) -> float:
    """VmRSS (resident now) or VmHWM (the peak resident set) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{what}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids_named(names: Iterable[str]) -> list[int]:
    """Processes whose command name is one of `names` (the broker's beam.smp, PostgreSQL's backends)."""
    wanted = tuple(names)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip().startswith(wanted):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def cpu_of(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_mb(self) -> float:
        return memory_mb(self.pid, "VmHWM")

    def rss_mb(self) -> float:
        return memory_mb(self.pid, "VmRSS")


@dataclass
class Stack:
    """The services of one run. Ports are free ones; logs go to .herald/bench-logs/<name>.log."""

    secret_key: str
    env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    # The highest VmHWM seen per service over the run (a service restarted keeps its worst).
    peaks: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        sim = f"http://127.0.0.1:{free_port()}"
        self.sim_url = sim
        self.ingest = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": DATABASE_URL,
            "HERALD_BROKER_URL": BROKER_URL,
            "HERALD_SECRET_KEY": self.secret_key,
            "HERALD_INGEST_ADDRESS": self.ingest,
            "HERALD_CALLBACKS_ADDRESS": f"127.0.0.1:{free_port()}",
            "HERALD_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}",
            "HERALD_MMG_URL": sim,
            "HERALD_FIRETEXT_URL": sim,
            "HERALD_SES_URL": sim,
        }

    def start(self, name: str, *args: str, health: str | None = None, **env: str) -> Service:
        log = LOGS / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([*HERALD, *args], env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT)
        service = self.services[name] = Service(name, process, log)
        if health:
            _wait_serving(health, service)
        return service

    def start_provider_sim(self) -> None:
        port = self.sim_url.rsplit(":", 1)[1]
        self.start("provider-sim", "provider-sim", "--port", port, "--receipt-delay", str(RECEIPT_DELAY))
        if not wait_until(self._sim_up, 30.0, 0.1):
            raise BenchError(f"the provider simulator did not come up (see {LOGS / 'provider-sim.log'})")

    def _sim_up(self) -> bool:
        try:
            return httpx.get(f"{self.sim_url}/_stats", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def sim_control(self, **fields: object) -> None:
        httpx.post(f"{self.sim_url}/_control", json=fields, timeout=5.0).raise_for_status()

    def sim_reset(self) -> None:
        httpx.post(f"{self.sim_url}/_reset", timeout=5.0).raise_for_status()

    def start_front(self) -> None:
        """The provider simulator, callbacks, the scheduler and ingest: everything but the dispatchers."""
        self.start_provider_sim()
        self.start("callbacks", "callbacks", health=self.env["HERALD_CALLBACKS_ADDRESS"])
        self.start("scheduler", "scheduler", health=self.env["HERALD_SCHEDULER_ADDRESS"])
        self.start("ingest", "ingest", health=self.ingest)

    def start_dispatcher(self, name: str, queues: str, **env: str) -> Service:
        address = f"127.0.0.1:{free_port()}"
        return self.start(
            name, "dispatcher", "--queues", queues, health=address, HERALD_DISPATCHER_ADDRESS=address, **env
        )

    def start_dispatchers(self) -> None:
        self.start_dispatcher("db dispatcher", "db-sms,db-email")
        self.start_dispatcher("send dispatcher", "send-sms,send-email")
        self.start_dispatcher("receipts dispatcher", "sms-callbacks,ses-callbacks")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per service, plus the broker and PostgreSQL where they run on this machine."""
        used = {name: s.cpu() for name, s in self.services.items() if s.process.poll() is None}
        used["RabbitMQ"] = cpu_of(pids_named(["beam.smp"]))
        used["PostgreSQL"] = cpu_of(pids_named(["postgres"]))
        return used

    def record_peaks(self) -> dict[str, float]:
        for name, s in self.services.items():
            if s.process.poll() is None:
                self.peaks[name] = max(self.peaks.get(name, 0.0), s.peak_mb())
        return self.peaks

    def check_alive(self) -> None:
        dead = {n: s.process.returncode for n, s in self.services.items() if s.process.poll() is not None}
        if dead:
            raise BenchError(f"services exited: {dead} (logs in {LOGS})")

    def stop(self, name: str) -> None:
        service = self.services.pop(name)
        if service.process.poll() is None:
            self.peaks[name] = max(self.peaks.get(name, 0.0), service.peak_mb())
        _terminate([service])

    def stop_all(self) -> None:
        self.record_peaks()
        _terminate(list(reversed(self.services.values())))
        self.services.clear()


def _terminate(services: list[Service]) -> None:
    for s in services:
        if s.process.poll() is None:
            s.process.send_signal(signal.SIGTERM)
    for s in services:
        try:
            s.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            s.process.kill()
            s.process.wait(timeout=5)


def _wait_serving(address: str, service: Service) -> None:
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        if service.process.poll() is not None:
            raise BenchError(f"{service.name} exited with {service.process.returncode} (see {service.log})")
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    try:
        if not wait_until(serving, 60.0, 0.1):
            raise BenchError(f"{service.name} is not serving on {address} after 60 s (see {service.log})")
    finally:
        channel.close()
