"""Every service as its own process, on the machine's PostgreSQL and RabbitMQ, with the provider simulator.

Follows a live SMS, a live email and research-mode messages to their final status, and shows that a
dispatcher killed mid-hand-off loses nothing and causes no second hand-off.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Engine

from herald.clients import IngestClient
from herald.service_layer.admin import Admin, DemoSetup
from herald.settings import Settings
from tests.support import final_status, free_port, wait_for

pytestmark = pytest.mark.e2e
HERALD = [sys.executable, "-m", "herald.cli"]


@dataclass
class Cluster:
    env: dict[str, str]
    sim_url: str
    ingest: str
    logs: Path
    metrics_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str, grpc_address: str | None = None, **env: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [*HERALD, *args], env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        if grpc_address:
            _wait_serving(grpc_address, self.processes[name])

    def stop_all(self) -> dict[str, int]:
        """SIGTERM to all; returns each exit code (a graceful stop is 0)."""
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in running.items():
            try:
                codes[name] = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = -9
        return codes


def _wait_serving(address: str, process: subprocess.Popen[bytes]) -> None:
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)

    def serving() -> bool:
        assert process.poll() is None, f"process exited with {process.returncode}"
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    wait_for(serving, timeout=30, interval=0.1)
    channel.close()


@pytest.fixture
def cluster(settings: Settings, clean_db: Engine, clean_broker: str, tmp_path: Path) -> Iterator[Cluster]:
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    callbacks = f"127.0.0.1:{free_port()}"
    ingest = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": settings.database_url,
        "HERALD_BROKER_URL": settings.broker_url,
        "HERALD_SECRET_KEY": settings.secret_key,
        "HERALD_CALLBACKS_ADDRESS": callbacks,
        "HERALD_INGEST_ADDRESS": ingest,
        "HERALD_MMG_URL": sim_url,
        "HERALD_FIRETEXT_URL": sim_url,
        "HERALD_SES_URL": sim_url,
        "HERALD_DB_BATCH_LINGER": "0.002",
        "HERALD_PREFETCH": "10",
        "HERALD_SEND_LEASE_SECONDS": "3",
        "HERALD_SWEEP_SECONDS": "1",
        "HERALD_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    c = Cluster(env, sim_url, ingest, tmp_path, free_port())
    c.start("provider-sim", "provider-sim", "--port", str(sim_port), "--receipt-delay", "0.1")
    c.start("callbacks", "callbacks", grpc_address=callbacks)
    c.start("ingest", "ingest", grpc_address=ingest, HERALD_METRICS_PORT=str(c.metrics_port))
    db_address = f"127.0.0.1:{free_port()}"
    c.start("db-dispatcher", "dispatcher", "--queues", "db-sms,db-email", grpc_address=db_address,
            HERALD_DISPATCHER_ADDRESS=db_address)  # fmt: skip
    send_address = f"127.0.0.1:{free_port()}"
    c.start("send-dispatcher", "dispatcher", "--queues", "send-sms,send-email", grpc_address=send_address,
            HERALD_DISPATCHER_ADDRESS=send_address)  # fmt: skip
    receipts_address = f"127.0.0.1:{free_port()}"
    c.start("receipts-dispatcher", "dispatcher", "--queues", "sms-callbacks,ses-callbacks",
            grpc_address=receipts_address, HERALD_DISPATCHER_ADDRESS=receipts_address)  # fmt: skip
    c.start("scheduler", "scheduler", grpc_address=env["HERALD_SCHEDULER_ADDRESS"])
    wait_for(lambda: _sim_up(sim_url), timeout=15)
    yield c
    assert set(c.stop_all().values()) == {0}, "every service stops cleanly on SIGTERM"
    for name in c.processes:
        assert b"Traceback" not in (tmp_path / f"{name}.log").read_bytes(), f"{name} logged a traceback"


def _sim_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/_stats").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("e2e")


def test_live_and_research_messages_reach_their_final_status(cluster: Cluster, demo: DemoSetup) -> None:
    live = IngestClient(cluster.ingest, demo.live_key)
    research = IngestClient(cluster.ingest, demo.research_key)
    fields = {"name": "Ada", "code": "7"}
    expected = {
        (live, live.send_sms("+44 7700 900123", demo.sms_template_id, fields).id): "delivered",
        (live, live.send_email("ada@example.com", demo.email_template_id, fields).id): "delivered",
    }
    research_cases = {
        ("sms", "07833333333"): "temporary-failure",
        ("sms", "07822222222"): "permanent-failure",
        ("sms", "07811111111"): "delivered",
        ("email", "temp-fail@simulator.notify"): "temporary-failure",
        ("email", "perm-fail@simulator.notify"): "permanent-failure",
        ("email", "delivered@simulator.notify"): "delivered",
    }
    for (kind, to), outcome in research_cases.items():
        if kind == "sms":
            sent = research.send_sms(to, demo.research_sms_template_id, fields)
        else:
            sent = research.send_email(to, demo.research_email_template_id, fields)
        expected[research, sent.id] = outcome
    test_key = IngestClient(cluster.ingest, demo.test_key)
    expected[test_key, test_key.send_sms("07822222222", demo.sms_template_id, fields).id] = "permanent-failure"

    for (client, notification_id), outcome in expected.items():
        assert final_status(client, notification_id) == outcome, notification_id
    stats = httpx.get(f"{cluster.sim_url}/_stats").json()
    assert stats["total"] == 2  # research mode and test keys never reach a provider
    scrape = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics").text
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="SendSms",grpc_service="herald.v1.Ingest",'
        'grpc_type="unary"} 5.0'
    ) in scrape
    assert "447700900123" not in scrape  # no personal data in metrics


def test_dispatcher_killed_mid_handoff_loses_nothing_and_sends_once(cluster: Cluster, demo: DemoSetup) -> None:
    # The provider holds its answer, so the send dispatcher is caught between taking and acking.
    httpx.post(f"{cluster.sim_url}/_control", json={"fail_next": 1, "delay": 3.0}).raise_for_status()
    client = IngestClient(cluster.ingest, demo.live_key)
    sent = client.send_sms("07700900123", demo.sms_template_id, {"name": "Ada", "code": "9"})
    wait_for(lambda: httpx.get(f"{cluster.sim_url}/_stats").json()["sends"].get(sent.id), timeout=15)

    cluster.processes["send-dispatcher"].send_signal(signal.SIGKILL)
    cluster.processes["send-dispatcher"].wait(timeout=5)
    replacement = f"127.0.0.1:{free_port()}"
    cluster.start("send-dispatcher-2", "dispatcher", "--queues", "send-sms,send-email",
                  grpc_address=replacement, HERALD_DISPATCHER_ADDRESS=replacement)  # fmt: skip

    assert final_status(client, sent.id) == "delivered"
    assert httpx.get(f"{cluster.sim_url}/_stats").json()["sends"] == {sent.id: 1}


def test_a_claim_whose_dispatcher_died_before_the_provider_saw_it_is_redriven(
    cluster: Cluster, demo: DemoSetup
) -> None:
    """The provider never got the message (its every send refused while the dispatcher is killed), so no
    receipt will come: after the claim's lease runs out, the scheduler re-drives it."""
    httpx.post(f"{cluster.sim_url}/_control", json={"fail_all": "timeout", "provider": "all"}).raise_for_status()
    client = IngestClient(cluster.ingest, demo.live_key)
    sent = client.send_sms("07700900123", demo.sms_template_id, {"name": "Ada", "code": "9"})
    wait_for(lambda: httpx.get(f"{cluster.sim_url}/_stats").json()["requests"].get(sent.id), timeout=15)
    cluster.processes["send-dispatcher"].send_signal(signal.SIGKILL)
    cluster.processes["send-dispatcher"].wait(timeout=5)
    httpx.post(f"{cluster.sim_url}/_control", json={"fail_all": False}).raise_for_status()
    replacement = f"127.0.0.1:{free_port()}"
    cluster.start("send-dispatcher-2", "dispatcher", "--queues", "send-sms,send-email",
                  grpc_address=replacement, HERALD_DISPATCHER_ADDRESS=replacement)  # fmt: skip
    assert final_status(client, sent.id) == "delivered"
    assert client.get_notification(sent.id).attempts == 2
    assert httpx.get(f"{cluster.sim_url}/_stats").json()["sends"] == {sent.id: 1}


def test_messages_accepted_while_the_db_dispatcher_is_down_are_all_delivered(cluster: Cluster, demo: DemoSetup) -> None:
    cluster.processes["db-dispatcher"].send_signal(signal.SIGKILL)
    cluster.processes["db-dispatcher"].wait(timeout=5)
    client = IngestClient(cluster.ingest, demo.live_key)
    ids = [client.send_sms("07700900123", demo.sms_template_id, {"name": "Ada", "code": str(i)}).id for i in range(20)]
    replacement = f"127.0.0.1:{free_port()}"
    cluster.start("db-dispatcher-2", "dispatcher", "--queues", "db-sms,db-email",
                  grpc_address=replacement, HERALD_DISPATCHER_ADDRESS=replacement)  # fmt: skip
    assert [final_status(client, i) for i in ids] == ["delivered"] * 20
    assert httpx.get(f"{cluster.sim_url}/_stats").json()["sends"] == dict.fromkeys(ids, 1)
