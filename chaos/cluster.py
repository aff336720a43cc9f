"""Every Herald service as its own OS process, driven only through the `herald` command line and its env.

The harness knows the processes' interface (commands, HERALD_* settings, gRPC health, the simulator's
HTTP control endpoints), never Herald's classes, so it keeps working while their insides change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chaos.infra import InfraError, free_port, wait_for

HERALD = [sys.executable, "-m", "herald.cli"]
DB_QUEUES = "db-sms,db-email"
SEND_QUEUES = "send-sms,send-email"
RECEIPT_QUEUES = "sms-callbacks,ses-callbacks"
ADMIN_SECRET = "chaos-admin-secret-long-enough-for-hs256-keys"
# How long a service may take to answer SERVING: generous, because a crash is noticed at once anyway
# and a shared 2-core machine under load starts seven Python processes slowly.
_START_SECONDS = 180.0


@dataclass
class Role:
    """A service the cluster keeps running: restarting it starts the same command on a fresh port."""

    name: str
    args: tuple[str, ...]
    address_setting: str | None  # the HERALD_*_ADDRESS its gRPC server listens on, if any
    address: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0


def health_status(address: str, timeout: float = 2.0) -> str:
    """The server's overall grpc.health.v1 status, or the gRPC code that prevented the answer."""
    channel = grpc.insecure_channel(address)
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
    except grpc.RpcError as exc:
        return str(exc.code().name)
    finally:
        channel.close()


class Simulator:
    """The provider simulator's control endpoints."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=10)

    def stats(self) -> dict[str, Any]:
        answer = self._http.get("/_stats")
        answer.raise_for_status()
        return dict(answer.json())

    def control(self, **settings: Any) -> None:
        self._http.post("/_control", json=settings).raise_for_status()

    def fail_all(self, mode: str = "status") -> str:
        """Every send fails until clear(): refused with 503 ("status"), the connection closed ("drop") or
        held unanswered ("timeout"). Returns the mode applied: a simulator without the outage control
        gets an endless count of 503s instead."""
        answer = self._http.post("/_control", json={"fail_all": mode, "status": 503})
        if answer.status_code == 400:
            self.control(fail_next=10**9, status=503)
            return "status (fail_next)"
        answer.raise_for_status()
        return mode

    def clear(self) -> None:
        """Ends any outage and any pending fail_next."""
        if self._http.post("/_control", json={"fail_all": False, "fail_next": 0}).status_code == 400:
            self.control(fail_next=0)

    def reset(self) -> None:
        self._http.post("/_reset").raise_for_status()

    def up(self) -> bool:
        try:
            return self._http.get("/_stats").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()


@dataclass
class Cluster:
    database_url: str
    broker_url: str
    logs: Path
    settings: dict[str, str] = field(default_factory=dict)  # extra HERALD_* for every process
    receipt_delay: float = 0.05
    roles: dict[str, Role] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what this version of Herald lacked, for the report
    simulator: Simulator | None = None
    _log_files: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sim_port = free_port()
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": self.database_url,
            "HERALD_BROKER_URL": self.broker_url,
            "HERALD_SECRET_KEY": "chaos-secret-key",
            "HERALD_ADMIN_SECRET": ADMIN_SECRET,
            "HERALD_CALLBACKS_ADDRESS": f"127.0.0.1:{free_port()}",
            "HERALD_INGEST_ADDRESS": f"127.0.0.1:{free_port()}",
            "HERALD_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}",
            "HERALD_MMG_URL": f"http://127.0.0.1:{self.sim_port}",
            "HERALD_FIRETEXT_URL": f"http://127.0.0.1:{self.sim_port}",
            "HERALD_SES_URL": f"http://127.0.0.1:{self.sim_port}",
            "HERALD_LOG_LEVEL": "WARNING",
            **self.settings,
        }

    @property
    def ingest(self) -> str:
        return self.env["HERALD_INGEST_ADDRESS"]

    @property
    def callbacks(self) -> str:
        return self.env["HERALD_CALLBACKS_ADDRESS"]

    @property
    def scheduler(self) -> str:
        return self.env["HERALD_SCHEDULER_ADDRESS"]

    def herald(self, *args: str, timeout: float = 120) -> str:
        """Runs a one-off `herald` command; returns its standard output."""
        result = subprocess.run([*HERALD, *args], env=self.env, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise InfraError(f"herald {' '.join(args)} failed: {result.stderr.decode(errors='replace')[-800:]}")
        return result.stdout.decode()

    def demo(self, suffix: str) -> dict[str, str]:
        """`herald demo`: keys and template ids (live_key, research_key, sms_template_id, ...)."""
        return dict(json.loads(self.herald("demo", "--suffix", suffix)))

    def start(self) -> None:
        """Starts every service side by side, then waits until each answers SERVING."""
        self.herald("db", "upgrade")
        self.simulator = Simulator(f"http://127.0.0.1:{self.sim_port}")
        roles = [
            Role("provider-sim", ("provider-sim", "--port", str(self.sim_port), "--receipt-delay",
                                  str(self.receipt_delay)), None),
            Role("callbacks", ("callbacks",), "HERALD_CALLBACKS_ADDRESS", self.callbacks),
            Role("ingest", ("ingest",), "HERALD_INGEST_ADDRESS", self.ingest),
            Role("scheduler", ("scheduler",), "HERALD_SCHEDULER_ADDRESS", self.scheduler),
            Role("db-dispatcher", ("dispatcher", "--queues", DB_QUEUES), "HERALD_DISPATCHER_ADDRESS"),
            Role("send-dispatcher", ("dispatcher", "--queues", SEND_QUEUES), "HERALD_DISPATCHER_ADDRESS"),
            Role("receipt-dispatcher", ("dispatcher", "--queues", RECEIPT_QUEUES), "HERALD_DISPATCHER_ADDRESS"),
        ]  # fmt: skip
        for role in roles:
            self.roles[role.name] = role
            self._spawn(role)
        simulator_process = self.roles["provider-sim"].process

        def simulator_up() -> bool:
            if simulator_process is not None and simulator_process.poll() is not None:
                raise InfraError(f"provider-sim exited with {simulator_process.returncode}")
            return self.simulator is not None and self.simulator.up()

        wait_for(simulator_up, _START_SECONDS, what="provider simulator up")
        for role in roles:
            try:
                self._await(role, probe=role.args[-1] == RECEIPT_QUEUES)
            except _UnknownQueue:
                # This Herald predates durable receipts: callbacks applies them itself.
                self.roles.pop(role.name)
                self.notes.append("no receipts dispatcher (sms-callbacks, ses-callbacks unknown)")

    @property
    def dispatchers(self) -> list[str]:
        return [name for name in self.roles if name.endswith("-dispatcher")]

    def _spawn(self, role: Role) -> None:
        env = dict(self.env)
        if role.address_setting is not None:
            # The fixed services keep their address (clients know it); dispatchers take a fresh port.
            if not role.address or role.address_setting == "HERALD_DISPATCHER_ADDRESS":
                role.address = f"127.0.0.1:{free_port()}"
            env[role.address_setting] = role.address
        role.starts += 1
        log = self._log_path(role).open("wb")
        self._log_files.append(log)
        role.process = subprocess.Popen([*HERALD, *role.args], env=env, stdout=log, stderr=subprocess.STDOUT)

    def _log_path(self, role: Role) -> Path:
        return self.logs / f"{role.name}.{role.starts}.log"

    def _await(self, role: Role, probe: bool = False) -> None:
        process = role.process
        if role.address_setting is None or process is None:
            return

        def serving() -> bool:
            if process.poll() is not None:
                text = self._log_path(role).read_text(errors="replace")
                if probe and "unknown queue" in text.lower():
                    raise _UnknownQueue(role.name)
                raise InfraError(f"{role.name} exited with {process.returncode}: {text[-800:]}")
            return health_status(role.address, timeout=0.5) == "SERVING"

        wait_for(serving, _START_SECONDS, 0.1, f"{role.name} serving")

    def _launch(self, role: Role) -> None:
        self._spawn(role)
        self._await(role)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        role = self.roles[name]
        if role.process is not None and role.process.poll() is None:
            role.process.send_signal(sig)
            role.process.wait(timeout=30)

    def restart(self, name: str) -> None:
        self.kill(name)
        self._launch(self.roles[name])

    def ensure_running(self) -> None:
        """Restarts any role whose process died (for example after an outage it did not survive)."""
        for role in self.roles.values():
            if role.process is None or role.process.poll() is not None:
                self._launch(role)

    def unhealthy(self) -> dict[str, str]:
        """Roles whose process has exited or whose health check does not answer SERVING."""
        found = {}
        for name, role in self.roles.items():
            if role.process is None or role.process.poll() is not None:
                found[name] = f"exited {role.process.returncode if role.process else '-'}"
            elif role.address_setting is not None and (status := health_status(role.address)) != "SERVING":
                found[name] = status
        return found

    def stop(self, grace: float = 20.0) -> dict[str, int | None]:
        """SIGTERM to every process, SIGKILL to any still running after `grace` seconds; returns exit codes."""
        running = [r for r in self.roles.values() if r.process is not None and r.process.poll() is None]
        for role in running:
            assert role.process is not None
            role.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        for role in running:
            assert role.process is not None
            try:
                codes[role.name] = role.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                role.process.kill()
                codes[role.name] = role.process.wait()
        if self.simulator is not None:
            self.simulator.close()
        for log in self._log_files:
            log.close()
        return codes


class _UnknownQueue(Exception):
    pass
