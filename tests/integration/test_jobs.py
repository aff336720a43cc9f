"""CSV jobs in one process, on real PostgreSQL, RabbitMQ and the provider simulator: CreateJob to every
row final, research mode per row, refused files, trial mode, daily limits, scheduling, cancelling, the
lanes, and the check that resumes a stalled job."""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from herald import bootstrap
from herald.clients import IngestClient, JobsClient, job_file_problems
from herald.db import jobs as jobs_db
from herald.limits import ALLOWED
from herald.limits.local_counter import LocalSendCounter
from herald.limits.redis_counter import RedisSendCounter
from herald.queues import ConfirmingPublisher
from herald.queues.topology import PROCESS_JOB_QUEUE
from herald.scheduling.tasks import check_job_status, redrive_due_notifications, run_scheduled_jobs
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.delivery import Republisher
from herald.service_layer.jobs import row_notification_id
from herald.settings import Settings
from herald.v1 import jobs_pb2
from tests.support import Stack, free_port, queue_depth, running_stack, wait_for


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    with running_stack(settings, clean_db) as s:
        yield s


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("jobs")


@pytest.fixture
def publisher(clean_broker: str) -> Iterator[ConfirmingPublisher]:
    """For driving the scheduler's job tasks directly, with a given "now"."""
    confirming = ConfirmingPublisher(clean_broker)
    yield confirming
    confirming.close()


def _csv(numbers: list[str], extra: str = "") -> bytes:
    header = "Phone Number,name,code" + (",note" if extra else "")
    lines = [f"{n},Ada {i},{i}" + (f",{extra}" if extra else "") for i, n in enumerate(numbers)]
    return ("\ufeff" + "\r\n".join([header, *lines]) + "\r\n").encode()


def _numbers(count: int) -> list[str]:
    # Not the simulator's failing numbers (07700900002, 07700900003).
    return [f"07800 1{i:05d}" for i in range(count)]


def _in_status(client: JobsClient, job_id: str, status: str, timeout: float = 60.0) -> jobs_pb2.Job:
    def reached() -> jobs_pb2.Job | None:
        job = client.get_job(job_id)
        return job if job.status == status else None

    return wait_for(reached, timeout=timeout, interval=0.1)


def _finished(client: JobsClient, job_id: str) -> jobs_pb2.Job:
    return _in_status(client, job_id, "finished")


def _count(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(sql), params) or 0)


def test_a_job_is_delivered_row_by_row_exactly_once(stack: Stack, demo: DemoSetup, clean_db: Engine) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    data = _csv(_numbers(300), extra="ignored")
    sent: list[int] = []
    job = client.create_job(demo.sms_template_id, data, "reminders.csv", on_chunk=sent.append)
    assert (job.status, job.row_count, job.template_version, job.original_file_name) == (
        "pending",
        300,
        1,
        "reminders.csv",
    )
    assert sent[-1] == len(data)
    done = _finished(client, job.id)
    assert dict(done.counts_by_status) == {"delivered": 300}
    assert done.rows_queued == 300
    assert done.processing_started.ToDatetime() <= done.processing_finished.ToDatetime()
    # Every row's id comes from the job and its row number (the header is row 1), handed off once.
    expected = {row_notification_id(job.id, row): 1 for row in range(2, 302)}
    assert stack.stats()["sends"] == expected
    ingest = IngestClient(stack.settings.ingest_address, demo.live_key)
    first = ingest.get_notification(row_notification_id(job.id, 2))
    assert (first.body, first.phone_number, first.status) == (
        "Hello Ada 0, your code is 0.",
        "447800100000",
        "delivered",
    )
    assert (
        _count(clean_db, "SELECT count(DISTINCT job_row_number) FROM notifications WHERE job_id = :j", j=job.id) == 300
    )
    assert [j.id for j in client.list_jobs().jobs] == [job.id]


def test_research_mode_rows_get_their_simulated_outcomes(stack: Stack, demo: DemoSetup) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.research_key)
    numbers = ["07811111111", "07822222222", "07833333333", "07811111111"]
    job = client.create_job(demo.research_sms_template_id, _csv(numbers))
    done = _finished(client, job.id)
    assert dict(done.counts_by_status) == {"delivered": 2, "permanent-failure": 1, "temporary-failure": 1}
    ingest = IngestClient(stack.settings.ingest_address, demo.research_key)
    outcomes = [ingest.get_notification(row_notification_id(job.id, row)).status for row in range(2, 6)]
    assert outcomes == ["delivered", "permanent-failure", "temporary-failure", "delivered"]
    assert stack.stats()["total"] == 0  # research mode hands nothing to a provider


def test_an_email_job_with_a_test_key_is_simulated(stack: Stack, demo: DemoSetup) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.test_key)
    data = b"email_address,Name,code\nsomeone@example.com,Ada,1\nother@example.com,Bo,2\n"
    job = client.create_job(demo.email_template_id, data)
    assert job.notification_type == 2  # EMAIL
    done = _finished(client, job.id)
    assert dict(done.counts_by_status) == {"delivered": 2}
    assert stack.stats()["total"] == 0


def test_a_bad_file_is_refused_with_row_numbers_and_nothing_is_stored(
    stack: Stack, demo: DemoSetup, clean_db: Engine
) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    data = b"phone number,name,code\n07700900123,Ada,1\nnot a number,Bo,2\n07700900124,,3\n"
    with pytest.raises(grpc.RpcError) as refused:
        client.create_job(demo.sms_template_id, data)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    problems = [(p.row, p.column) for p in job_file_problems(refused.value)]
    assert problems == [(3, "phone number"), (4, "name")]
    assert refused.value.details().splitlines()[0].startswith("row 3: phone number: ")
    with pytest.raises(grpc.RpcError) as no_column:
        client.create_job(demo.sms_template_id, b"number,name,code\n07700900123,Ada,1\n")
    assert no_column.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert job_file_problems(no_column.value)
    with pytest.raises(grpc.RpcError) as header_only:
        client.create_job(demo.sms_template_id, b"phone number,name,code\n")
    assert [p.row for p in job_file_problems(header_only.value)] == [0]
    with pytest.raises(grpc.RpcError) as email_template:
        client.create_job(demo.email_template_id, data)
    assert email_template.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as other_service:
        client.create_job(demo.research_sms_template_id, data)
    assert other_service.value.details() == "Template not found"
    assert _count(clean_db, "SELECT count(*) FROM jobs") == 0
    assert _count(clean_db, "SELECT count(*) FROM job_files") == 0
    assert queue_depth(stack.settings.broker_url, PROCESS_JOB_QUEUE) == 0
    bad_key = JobsClient(stack.settings.ingest_address, demo.live_key[:-5] + "00000")
    with pytest.raises(grpc.RpcError) as unauthorised:
        bad_key.create_job(demo.sms_template_id, _csv(_numbers(1)))
    assert unauthorised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_trial_mode_refuses_rows_outside_the_team(
    stack: Stack, admin: Admin, demo: DemoSetup, clean_db: Engine
) -> None:
    admin.update_service(demo.service_id, flags={"restricted": True})
    admin.add_team_member(demo.service_id, mobile_number=_numbers(1)[0])
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    with pytest.raises(grpc.RpcError) as refused:
        client.create_job(demo.sms_template_id, _csv(_numbers(3)))
    assert [p.row for p in job_file_problems(refused.value)] == [3, 4]
    assert "trial mode" in job_file_problems(refused.value)[0].message
    assert _count(clean_db, "SELECT count(*) FROM jobs") == 0
    job = client.create_job(demo.sms_template_id, _csv(_numbers(1)))  # the team member alone passes
    assert dict(_finished(client, job.id).counts_by_status) == {"delivered": 1}


REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not reachable")


def test_a_job_past_the_daily_limit_is_refused_whole(
    settings: Settings, clean_db: Engine, clean_broker: str, admin: Admin, demo: DemoSetup
) -> None:
    """Counted once for the whole job, in the counters single sends use (Redis: ingest and the job
    processor are different processes)."""
    _redis_or_skip()
    admin.update_service(demo.service_id, limit_values={"sms_message_limit": 5})
    with running_stack(replace(settings, redis_url=REDIS_URL), clean_db) as stack:
        _daily_limit(stack, demo)


def _daily_limit(stack: Stack, demo: DemoSetup) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    job = client.create_job(demo.sms_template_id, _csv(_numbers(6)))
    refused = _in_status(client, job.id, "sending limits exceeded")
    assert refused.rows_queued == 0 and dict(refused.counts_by_status) == {}
    fits = client.create_job(demo.sms_template_id, _csv(_numbers(5)))
    assert dict(_finished(client, fits.id).counts_by_status) == {"delivered": 5}
    # The five were counted: a single send now passes the limit.
    with pytest.raises(grpc.RpcError) as single:
        IngestClient(stack.settings.ingest_address, demo.live_key).send_sms(
            "07700900123", demo.sms_template_id, {"name": "x", "code": "1"}
        )
    assert single.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_scheduled_job_starts_when_due_and_not_before(
    stack: Stack, demo: DemoSetup, clean_db: Engine, publisher: ConfirmingPublisher
) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    at = datetime.now(UTC) + timedelta(hours=2)
    job = client.create_job(demo.sms_template_id, _csv(_numbers(3)), scheduled_for=at)
    assert job.status == "scheduled"
    assert job.scheduled_for.ToDatetime(tzinfo=UTC) == at
    assert run_scheduled_jobs(clean_db, at - timedelta(seconds=1), publisher=publisher) == "started 0"
    assert client.get_job(job.id).status == "scheduled"
    assert run_scheduled_jobs(clean_db, at, publisher=publisher) == "started 1"
    assert run_scheduled_jobs(clean_db, at, publisher=publisher) == "started 0"
    done = _finished(client, job.id)
    assert dict(done.counts_by_status) == {"delivered": 3}


def test_cancel_only_a_scheduled_job(
    stack: Stack, demo: DemoSetup, clean_db: Engine, publisher: ConfirmingPublisher
) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    at = datetime.now(UTC) + timedelta(hours=1)
    job = client.create_job(demo.sms_template_id, _csv(_numbers(2)), scheduled_for=at)
    assert client.cancel_job(job.id).status == "cancelled"
    with pytest.raises(grpc.RpcError) as again:
        client.cancel_job(job.id)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert run_scheduled_jobs(clean_db, at + timedelta(hours=1), publisher=publisher) == "started 0"
    running = client.create_job(demo.sms_template_id, _csv(_numbers(1)))
    _finished(client, running.id)
    with pytest.raises(grpc.RpcError) as finished:
        client.cancel_job(running.id)
    assert finished.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    other = JobsClient(stack.settings.ingest_address, demo.research_key)
    with pytest.raises(grpc.RpcError) as not_theirs:
        other.cancel_job(running.id)
    assert not_theirs.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad_id:
        client.get_job("not-a-uuid")
    assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _count(clean_db, "SELECT count(*) FROM notifications WHERE job_id = :j", j=job.id) == 0


def test_job_rows_take_their_own_send_lane(
    settings: Settings, clean_db: Engine, clean_broker: str, admin: Admin
) -> None:
    """With nobody consuming send-bulk-sms, a job's rows wait there while a single send is delivered."""
    demo = admin.demo("lanes")
    s = replace(
        settings,
        ingest_address=f"127.0.0.1:{free_port()}",
        dispatcher_address=f"127.0.0.1:{free_port()}",
    )
    queues = ("db-sms", "bulk-sms", "process-job")
    stops = [bootstrap.start_dispatcher(s, clean_db, queues), bootstrap.start_ingest(s, clean_db)]
    try:
        jobs = JobsClient(s.ingest_address, demo.live_key)
        job = jobs.create_job(demo.sms_template_id, _csv(_numbers(1500)))
        single = IngestClient(s.ingest_address, demo.live_key).send_sms(
            "07700900999", demo.sms_template_id, {"name": "x", "code": "1"}
        )
        stored = "SELECT count(*) FROM notifications WHERE job_id = :j"
        wait_for(lambda: _count(clean_db, stored, j=job.id) == 1500, timeout=30)
        wait_for(lambda: queue_depth(s.broker_url, "send-sms") == 1, timeout=10)
        assert queue_depth(s.broker_url, "send-bulk-sms") >= 1
        assert _count(clean_db, "SELECT count(*) FROM notifications WHERE id = :i AND job_id IS NULL", i=single.id) == 1
    finally:
        for stop in reversed(stops):
            stop()


def test_a_stalled_job_resumes_from_its_last_chunk(
    stack: Stack, demo: DemoSetup, clean_db: Engine, publisher: ConfirmingPublisher
) -> None:
    """As if its processor died after the first chunk: check-job-status re-queues it after 30 minutes
    without progress, and only the rows after the recorded chunk are queued again."""
    client = JobsClient(stack.settings.ingest_address, demo.test_key)
    job = client.create_job(demo.sms_template_id, _csv(_numbers(1200)))
    _finished(client, job.id)
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM notifications WHERE job_id = :j AND job_row_number > 1001"), {"j": job.id})
        conn.execute(
            text("UPDATE jobs SET status = 'in progress', rows_queued = 1000, processing_finished = NULL, "
                 "progress_at = now() - interval '31 minutes' WHERE id = :j"),
            {"j": job.id},
        )  # fmt: skip
    queued_before = _rows_queued_metric()
    now = datetime.now(UTC)
    assert check_job_status(clean_db, now, publisher=publisher) == "finished 0, re-queued 1"
    assert check_job_status(clean_db, now, publisher=publisher) == "finished 0, re-queued 0"
    done = _finished(client, job.id)
    assert dict(done.counts_by_status) == {"delivered": 1200}
    assert _rows_queued_metric() - queued_before == 200  # the recorded chunk was not queued again


def _rows_queued_metric() -> float:
    return REGISTRY.get_sample_value("herald_jobs_rows_queued_total", {"type": "sms"}) or 0.0


def test_create_job_refuses_a_stream_without_its_header(stack: Stack, demo: DemoSetup) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    stub = client._stub  # a malformed stream, which the client never sends
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateJob(iter([jobs_pb2.CreateJobChunk(data=b"phone number\n")]), metadata=client._metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as unknown:
        client.get_job(str(uuid.uuid4()))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("seconds", [-(10**12), 10**12])
def test_a_scheduled_for_no_datetime_can_hold_is_refused_not_an_internal_error(
    stack: Stack, demo: DemoSetup, seconds: int
) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    header = jobs_pb2.JobHeader(template_id=demo.sms_template_id, original_file_name="far.csv")
    header.scheduled_for.seconds = seconds  # a Timestamp the client's datetime could never make
    chunk = jobs_pb2.CreateJobChunk(header=header, data=_csv(_numbers(1)))
    with pytest.raises(grpc.RpcError) as refused:
        client._stub.CreateJob(iter([chunk]), metadata=client._metadata())
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "scheduled_for is not a valid time",
    )
    assert list(client.list_jobs().jobs) == []


@pytest.mark.parametrize("counter", ["local", "redis"])
def test_a_whole_job_is_counted_at_once_or_not_at_all(counter: str) -> None:
    if counter == "redis":
        _redis_or_skip()
    counts = RedisSendCounter(REDIS_URL) if counter == "redis" else LocalSendCounter()
    key, international = f"{uuid.uuid4()}-sms-count", f"{uuid.uuid4()}-international-count"
    assert counts.add([(key, 10, 6), (international, 2, 2)]) == ALLOWED
    assert counts.add([(key, 10, 5), (international, 2, 0)]) == 1  # 11 would pass 10: nothing counted
    assert counts.add([(key, 10, 4), (international, 2, 1)]) == 2
    assert counts.add([(key, 10, 4), (international, 2, 0)]) == ALLOWED
    assert counts.add([(key, 10, 1)]) == 1


def test_jobs_are_listed_newest_first_a_page_at_a_time(stack: Stack, demo: DemoSetup) -> None:
    client = JobsClient(stack.settings.ingest_address, demo.test_key)
    at = datetime.now(UTC) + timedelta(hours=3)  # scheduled: listed without being sent
    ids = [
        client.create_job(demo.sms_template_id, _csv(_numbers(1)), f"{i}.csv", scheduled_for=at).id for i in range(3)
    ]
    first = client.list_jobs(page_size=2).jobs
    assert [j.id for j in first] == ids[:0:-1]
    assert [j.id for j in client.list_jobs(page_size=2, older_than=first[-1].id).jobs] == ids[:1]
    assert JobsClient(stack.settings.ingest_address, demo.research_key).list_jobs().jobs == []
    with pytest.raises(grpc.RpcError) as too_many:
        client.list_jobs(page_size=251)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as long_name:
        client.create_job(demo.sms_template_id, _csv(_numbers(1)), "x" * 256)
    assert long_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_job_row_due_a_retry_is_redriven_to_its_lane(
    clean_db: Engine, clean_broker: str, demo: DemoSetup, publisher: ConfirmingPublisher, settings: Settings
) -> None:
    """The sweep rebuilds messages from stored rows: a job's row goes back to send-bulk-*, a single send
    to send-*."""
    job_id = str(uuid.uuid4())
    due = datetime.now(UTC) - timedelta(seconds=1)
    with clean_db.begin() as conn:
        for row_number, job in ((2, job_id), (None, None)):
            conn.execute(
                text(
                    "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                    ' notification_type, "to", body, status, billable_units, created_at, attempts,'
                    " next_attempt_at, last_error, job_id, job_row_number)"
                    " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447800100000', 'Hi', 'created', 1, :at, 1,"
                    " :at, 'mmg-500', :job, :row)"
                ),
                {"id": str(uuid.uuid4()), "s": demo.service_id, "t": demo.sms_template_id, "at": due,
                 "job": job, "row": row_number},
            )  # fmt: skip
    republish = Republisher(publisher, settings.email_domain)
    assert redrive_due_notifications(clean_db, datetime.now(UTC), republish=republish) == "republished 2"
    assert queue_depth(clean_broker, "send-bulk-sms") == 1
    assert queue_depth(clean_broker, "send-sms") == 1


def test_a_stored_file_that_no_longer_passes_ends_the_job_in_error(
    stack: Stack, demo: DemoSetup, clean_db: Engine, publisher: ConfirmingPublisher
) -> None:
    """As if the service changed after the file was checked: nothing is sent, and the job ends rather
    than being found stalled and tried again every 30 minutes."""
    client = JobsClient(stack.settings.ingest_address, demo.live_key)
    at = datetime.now(UTC) + timedelta(hours=1)
    job = client.create_job(demo.sms_template_id, _csv(_numbers(3)), scheduled_for=at)
    with clean_db.begin() as conn:
        conn.execute(
            text("UPDATE job_files SET data = :data WHERE job_id = :j"),
            {"data": zlib.compress(b"phone number,name,code\r\nnot a number,Ada,1\r\n"), "j": job.id},
        )
    assert run_scheduled_jobs(clean_db, at, publisher=publisher) == "started 1"
    ended = _in_status(client, job.id, "error")
    assert ended.rows_queued == 0
    assert _count(clean_db, "SELECT count(*) FROM notifications WHERE job_id = :j", j=job.id) == 0
    later = datetime.now(UTC) + timedelta(hours=2)
    assert check_job_status(clean_db, later, publisher=publisher) == "finished 0, re-queued 0"


def test_rows_refused_while_expanding_are_counted_once_and_do_not_hold_the_job_back(
    demo: DemoSetup, clean_db: Engine
) -> None:
    job_id = str(uuid.uuid4())
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, service_id, template_id, template_version, notification_type,"
                " original_file_name, row_count, status, key_type, processing_started)"
                " VALUES (:j, :s, :t, 1, 'sms', 'f.csv', 3, 'in progress', 'normal', now())"
            ),
            {"j": job_id, "s": demo.service_id, "t": demo.sms_template_id},
        )
        now = datetime.now(UTC)
        jobs_db.record_progress(conn, job_id, 3, 1, now)
        jobs_db.record_progress(conn, job_id, 3, 1, now)  # the same chunk recorded by a second processor
        for row in (2, 3):
            conn.execute(
                text(
                    "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                    ' notification_type, "to", body, status, billable_units, created_at, job_id, job_row_number)'
                    " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi', 'delivered', 1, now(), :j, :r)"
                ),
                {"id": str(uuid.uuid4()), "s": demo.service_id, "t": demo.sms_template_id, "j": job_id, "r": row},
            )
    assert _count(clean_db, "SELECT rows_rejected FROM jobs WHERE id = :j", j=job_id) == 1
    with clean_db.begin() as conn:
        assert [done for done, _ in jobs_db.finish_done(conn, datetime.now(UTC), job_id)] == [job_id]


def test_a_processor_expands_a_job_no_faster_than_its_pace(
    settings: Settings, clean_db: Engine, clean_broker: str, admin: Admin
) -> None:
    """HERALD_JOB_ROWS_PER_SECOND: 4,000 rows at 1,000 a second go out as chunks at 0, 1, 2 and 3 s (a lower
    bound on the time taken, never an upper one; unpaced, they take well under a second here)."""
    demo = admin.demo("paced")
    s = replace(
        settings,
        ingest_address=f"127.0.0.1:{free_port()}",
        dispatcher_address=f"127.0.0.1:{free_port()}",
        job_rows_per_second=1000.0,
    )
    stops = [bootstrap.start_dispatcher(s, clean_db, ("process-job",)), bootstrap.start_ingest(s, clean_db)]
    try:
        jobs = JobsClient(s.ingest_address, demo.test_key)
        started = time.monotonic()
        job = jobs.create_job(demo.sms_template_id, _csv(_numbers(4000)))
        wait_for(lambda: jobs.get_job(job.id).rows_queued == 4000, timeout=30, interval=0.05)
        assert time.monotonic() - started >= 3.0
    finally:
        for stop in reversed(stops):
            stop()
