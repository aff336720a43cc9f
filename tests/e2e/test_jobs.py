"""CSV jobs with every service its own process (test_processes' cluster) and the job lanes' dispatchers
beside it: a job delivered with its counts right, and a job processor and a bulk dispatcher SIGKILLed
halfway through a job, restarted, and every row handed to the provider exactly once."""

from __future__ import annotations

import signal

import httpx
import pytest
from sqlalchemy import Engine, text

from herald.clients import JobsClient
from herald.service_layer.admin import DemoSetup
from herald.service_layer.jobs import CHUNK_ROWS, row_notification_id
from herald.v1 import jobs_pb2
from tests.e2e.test_processes import Cluster, cluster, demo  # noqa: F401 - the fixtures
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e


def _start_job_lanes(c: Cluster) -> None:
    processor = f"127.0.0.1:{free_port()}"
    c.start("job-processor", "dispatcher", "--queues", "process-job", grpc_address=processor,
            HERALD_DISPATCHER_ADDRESS=processor)  # fmt: skip
    bulk = f"127.0.0.1:{free_port()}"
    c.start("bulk-dispatcher", "dispatcher", "--queues", "bulk-sms,bulk-email,send-bulk-sms,send-bulk-email",
            grpc_address=bulk, HERALD_DISPATCHER_ADDRESS=bulk)  # fmt: skip


def _csv(rows: int) -> bytes:
    return ("phone number,name,code\n" + "".join(f"07800 1{i:05d},Ada,{i}\n" for i in range(rows))).encode()


def _finished(client: JobsClient, job_id: str, timeout: float) -> jobs_pb2.Job:
    def done() -> jobs_pb2.Job | None:
        job = client.get_job(job_id)
        return job if job.status == "finished" else None

    return wait_for(done, timeout=timeout, interval=0.2)


def _sends(c: Cluster) -> dict[str, int]:
    return dict(httpx.get(f"{c.sim_url}/_stats", timeout=5).json()["sends"])


def test_a_job_is_delivered_through_its_lanes(cluster: Cluster, demo: DemoSetup, engine: Engine) -> None:  # noqa: F811
    _start_job_lanes(cluster)
    client = JobsClient(cluster.ingest, demo.live_key)
    job = client.create_job(demo.sms_template_id, _csv(300), "e2e.csv")
    assert (job.status, job.row_count) == ("pending", 300)
    done = _finished(client, job.id, timeout=60)
    assert done.rows_queued == 300
    assert dict(done.counts_by_status) == {"delivered": 300}
    assert _sends(cluster) == {row_notification_id(job.id, row): 1 for row in range(2, 302)}
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM notifications WHERE job_id IS NULL")) == 0


def test_killed_job_processor_and_bulk_dispatcher_send_every_row_once(
    cluster: Cluster,  # noqa: F811
    demo: DemoSetup,  # noqa: F811
    engine: Engine,
) -> None:
    _start_job_lanes(cluster)
    rows = 3 * CHUNK_ROWS
    client = JobsClient(cluster.ingest, demo.live_key)
    job = client.create_job(demo.sms_template_id, _csv(rows))

    def queued() -> int:
        with engine.connect() as conn:
            return int(conn.scalar(text("SELECT rows_queued FROM jobs WHERE id = :j"), {"j": job.id}) or 0)

    wait_for(lambda: queued() >= CHUNK_ROWS, timeout=60, interval=0.005)
    for name in ("job-processor", "bulk-dispatcher"):
        cluster.processes[name].send_signal(signal.SIGKILL)
        cluster.processes[name].wait(10)
    at_kill = queued()
    assert at_kill < rows, "the processor finished before it could be killed: the job is too small"
    _start_job_lanes(cluster)  # the process-job message, never acked, comes back to the new processor
    done = _finished(client, job.id, timeout=180)
    assert dict(done.counts_by_status) == {"delivered": rows}
    assert done.rows_queued == rows
    assert _sends(cluster) == {row_notification_id(job.id, row): 1 for row in range(2, rows + 2)}
