"""The scheduler on real PostgreSQL: the task table's SQL, exactly-once across replicas, the gRPC view."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, inspect, select

from herald.db import notifications, task_runs
from herald.db.models import Notification, NotificationHistory
from herald.db.services import create_service, create_template
from herald.domain import limits
from herald.domain import statuses as st
from herald.logs import JsonFormatter
from herald.scheduling import Runner, Schedule, Task, tasks
from herald.scheduling.runner import LOCK_HELD
from herald.settings import Settings
from herald.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.scheduler.servicer import SchedulerServicer
from tests.support import wait_for

PERSONAL = "07700900123"
DAY_ONE = datetime(2030, 1, 1, 4, 0, tzinfo=UTC)  # after that day's 03:00 slot


class Recorder:
    """A task body that counts its runs (thread-safe), optionally taking a while or failing."""

    def __init__(self, seconds: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._seconds = seconds
        self._fail = fail

    def __call__(self, engine: Engine, now: datetime) -> str:
        with self._lock:
            self.calls += 1
            calls = self.calls
        time.sleep(self._seconds)
        if self._fail:
            raise RuntimeError(f"could not send to {PERSONAL}")  # personal data in the message
        return f"run {calls}"


# -- rows, written directly with the repository functions ------------------------------------------


def _service_and_template(engine: Engine) -> tuple[str, str]:
    with engine.begin() as conn:
        service_id = create_service(conn, f"scheduler-{uuid.uuid4()}")
        return service_id, create_template(conn, service_id, "code", "sms", "Your code is ((code))")


def _notification(
    ids: tuple[str, str], created_at: datetime, status: str = st.CREATED, key_type: str = "normal"
) -> dict[str, Any]:
    service_id, template_id = ids
    return {
        "id": uuid.uuid4(),
        "service_id": service_id,
        "template_id": template_id,
        "template_version": 1,
        "api_key_id": None,
        "key_type": key_type,
        "notification_type": "sms",
        "reference": None,
        "status": status,
        "billable_units": 1,
        "sent_by": None,
        "created_at": created_at,
        "sent_at": None,
        "updated_at": None,
        "to": PERSONAL,
        "personalisation": '{"code": "1234"}',
        "body": "Your code is 1234",
        "subject": None,
    }


def _insert(engine: Engine, *rows: dict[str, Any]) -> list[str]:
    with engine.begin() as conn:
        notifications.insert_batch(conn, rows)
    return [str(r["id"]) for r in rows]


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(i): s for i, s in conn.execute(select(Notification.id, Notification.status))}


def _runs(engine: Engine) -> dict[str, task_runs.TaskRunRow]:
    with engine.connect() as conn:
        return task_runs.last_runs(conn)


# -- schedules ------------------------------------------------------------------------------------


def test_schedules_name_their_latest_and_next_slots() -> None:
    now = datetime(2030, 1, 2, 2, 59, 30, tzinfo=UTC)
    daily, hourly, quarter = Schedule.daily(3, 0), Schedule.hourly(1), Schedule.every(15 * 60)
    assert daily.latest_slot(now) == datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    assert hourly.latest_slot(now) == datetime(2030, 1, 2, 2, 1, tzinfo=UTC)
    assert quarter.latest_slot(now) == datetime(2030, 1, 2, 2, 45, tzinfo=UTC)
    ran_at = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
    assert not daily.is_due(ran_at, now)
    assert daily.next_run(ran_at, now) == datetime(2030, 1, 2, 3, 0, tzinfo=UTC)
    assert daily.is_due(ran_at, now + timedelta(seconds=30))  # 03:00:00 exactly
    assert daily.next_run(None, now) == now  # never ran: due at once
    assert [s.description for s in (daily, hourly, quarter)] == [
        "daily at 03:00 UTC",
        "hourly at minute 1",
        "every 900 s",
    ]
    with pytest.raises(ValueError):
        Schedule.daily(24)


def test_the_task_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="herald.scheduling.tasks")
    table = {t.name: t.schedule.description for t in tasks.build_tasks(Settings())}
    assert table == {
        "apply-early-receipts": "every 10 s",
        "count-stuck-notifications": "every 60 s",
        "timeout-sending-notifications": "daily at 00:05 UTC",
        "delete-notifications-older-than-retention": "daily at 03:00 UTC",
        "delete-inbound-sms": "daily at 01:40 UTC",
    }
    assert "re-publishing tasks are not scheduled" in caplog.text
    redrive, replay = tasks.build_tasks(Settings(), republish=len)[:2]
    assert (redrive.name, redrive.schedule.description) == ("redrive-due-notifications", "every 2 s")
    assert (replay.name, replay.schedule.description) == ("replay-created-notifications", "every 900 s")


# -- the tasks' SQL ---------------------------------------------------------------------------------


def test_retention_moves_rows_older_than_seven_days_to_history_without_personal_data(
    clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks, "BATCH", 1)  # several batches, each its own transaction
    ids = _service_and_template(clean_db)
    now = datetime.now(UTC)
    # A full week: London midnight seven days back (the seed's "full week", Notify's cutoff).
    cutoff = limits.retention_cutoff(now, 7)
    old, old_team, old_test, young = _insert(
        clean_db,
        _notification(ids, cutoff - timedelta(seconds=1), st.DELIVERED),
        _notification(ids, cutoff - timedelta(days=2), st.PERMANENT_FAILURE, key_type="team"),
        _notification(ids, cutoff - timedelta(seconds=1), st.DELIVERED, key_type="test"),
        _notification(ids, cutoff + timedelta(seconds=1), st.DELIVERED),
    )

    summary = tasks.delete_notifications_older_than_retention(clean_db, now, retention_days=7)

    assert summary == "moved 3"
    assert set(_statuses(clean_db)) == {young}
    with clean_db.connect() as conn:
        history = {str(r.id): r for r in conn.execute(select(NotificationHistory))}
        history_columns = {c["name"] for c in inspect(conn).get_columns("notification_history")}
    assert set(history) == {old, old_team}  # test-key rows leave no history
    assert history[old].status == st.DELIVERED
    assert history[old].created_at == cutoff - timedelta(seconds=1)
    assert not {"to", "personalisation", "body", "subject"} & history_columns
    assert old_test not in history


def test_sending_or_pending_for_three_days_times_out_as_temporary_failure(clean_db: Engine) -> None:
    ids = _service_and_template(clean_db)
    now = datetime.now(UTC)
    stale = now - timedelta(days=3, seconds=1)
    sending, pending, recent, delivered, created = _insert(
        clean_db,
        _notification(ids, stale, st.SENDING),
        _notification(ids, stale, st.PENDING),
        _notification(ids, now - timedelta(days=3) + timedelta(minutes=1), st.SENDING),
        _notification(ids, stale, st.DELIVERED),
        _notification(ids, stale, st.CREATED),
    )

    assert tasks.timeout_sending_notifications(clean_db, now) == "timed out 2"

    assert _statuses(clean_db) == {
        sending: st.TEMPORARY_FAILURE,
        pending: st.TEMPORARY_FAILURE,
        recent: st.SENDING,
        delivered: st.DELIVERED,  # final statuses never move
        created: st.CREATED,
    }


def test_created_between_one_hour_and_seven_days_old_is_republished(clean_db: Engine) -> None:
    ids = _service_and_template(clean_db)
    now = datetime.now(UTC)
    stuck, *_ = _insert(
        clean_db,
        _notification(ids, now - timedelta(hours=2)),
        _notification(ids, now - timedelta(minutes=30)),  # may still be on its way
        _notification(ids, now - timedelta(days=8)),  # past saving
        _notification(ids, now - timedelta(hours=2), st.SENDING),
    )
    published: list[list[str]] = []

    def republish(rows: Sequence[Any]) -> int:
        published.append([str(r.id) for r in rows])
        return len(rows)

    assert tasks.replay_created_notifications(clean_db, now, republish=republish) == "republished 1"
    assert published == [[stuck]]
    # Re-published rows are not re-published again on the next run while they may still be queued.
    assert tasks.replay_created_notifications(clean_db, now, republish=republish) == "republished 0"


# -- the runner -----------------------------------------------------------------------------------


def test_two_runners_racing_run_a_due_task_exactly_once(clean_db: Engine) -> None:
    body = Recorder(seconds=0.05)
    task = Task("raced", Schedule.daily(3, 0), body)
    replicas = [Runner(clean_db, [task]), Runner(clean_db, [task])]
    with ThreadPoolExecutor(2) as pool:
        for day in range(8):
            now = DAY_ONE + timedelta(days=day)
            start = threading.Barrier(2)

            def race(runner: Runner, now: datetime = now, start: threading.Barrier = start) -> list[str]:
                start.wait()
                return runner.run_due(now)

            results = list(pool.map(race, replicas))
            assert sorted(results) == [[], ["raced"]]
            assert body.calls == day + 1
    assert _runs(clean_db)["raced"].last_summary == "run 8"


def test_a_replica_whose_read_went_stale_does_not_run_the_task_again(clean_db: Engine) -> None:
    body = Recorder()
    target = Task("target", Schedule.daily(3), body)
    other = Runner(clean_db, [target])

    def other_replica_runs_target(engine: Engine, now: datetime) -> str:
        return f"other ran {other.run_due(now)}"

    # run_due reads "target: due" first, then (running `first`) the other replica runs target to the
    # end; the lock is free again when this runner reaches target, so only the re-read can stop it.
    runner = Runner(clean_db, [Task("first", Schedule.daily(3), other_replica_runs_target), target])
    assert runner.run_due(DAY_ONE) == ["first"]
    assert body.calls == 1
    assert _runs(clean_db)["first"].last_summary == "other ran ['target']"


def test_a_failing_task_is_recorded_without_personal_data_and_the_rest_run(
    clean_db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="herald.scheduling.runner")
    ok = Recorder()
    runner = Runner(clean_db, [Task("boom", Schedule.daily(3), Recorder(fail=True)), Task("ok", Schedule.daily(3), ok)])

    assert runner.run_due(DAY_ONE) == ["boom", "ok"]

    runs = _runs(clean_db)
    assert runs["boom"].last_summary == "failed: RuntimeError"
    assert runs["boom"].last_finished_at is not None
    assert runs["ok"].last_summary == "run 1"
    logged = "\n".join(JsonFormatter("scheduler").format(r) for r in caplog.records)
    assert "RuntimeError" in logged and '"task":"boom"' in logged
    assert PERSONAL not in logged


def test_run_forever_survives_a_failing_task_and_stops_when_asked(clean_db: Engine) -> None:
    ok = Recorder()
    runner = Runner(
        clean_db,
        [Task("boom", Schedule.daily(3), Recorder(fail=True)), Task("ok", Schedule.daily(3), ok)],
        tick=0.02,
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: ok.calls, timeout=5)
        time.sleep(0.1)  # several more ticks: a daily task already run is not run again
    finally:
        stop.set()
        thread.join(2)
    assert not thread.is_alive()
    assert ok.calls == 1
    assert _runs(clean_db)["boom"].last_summary == "failed: RuntimeError"


def test_a_restarted_runner_does_not_rerun_todays_daily_task(clean_db: Engine) -> None:
    body = Recorder()
    task = Task("daily", Schedule.daily(3, 0), body)
    assert Runner(clean_db, [task]).run_due(DAY_ONE) == ["daily"]

    restarted = Runner(clean_db, [task])
    assert restarted.run_due(DAY_ONE.replace(hour=23, minute=59)) == []
    assert restarted.run_due(DAY_ONE + timedelta(hours=23)) == ["daily"]  # the next day at 03:00
    assert body.calls == 2


def test_run_now_refuses_while_another_scheduler_holds_the_lock(clean_db: Engine) -> None:
    runner = Runner(clean_db, [Task("locked", Schedule.daily(3), Recorder())])
    with clean_db.connect() as other:
        assert task_runs.try_lock(other, "locked")
        assert runner.run_now("locked") == (False, LOCK_HELD)
        assert runner.run_due(DAY_ONE) == []
        task_runs.unlock(other, "locked")
        other.commit()
    assert runner.run_now("locked") == (True, "run 1")


# -- gRPC (pytest-grpc, real server) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Any, grpc.Server], None]:
    return scheduler_pb2_grpc.add_SchedulerServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(engine: Engine) -> SchedulerServicer:
    return SchedulerServicer(Runner(engine, [Task("greet", Schedule.daily(3), Recorder())]))


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type[scheduler_pb2_grpc.SchedulerStub]:
    return scheduler_pb2_grpc.SchedulerStub


def test_grpc_lists_and_runs_tasks(clean_db: Engine, grpc_stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    before = grpc_stub.ListTasks(scheduler_pb2.ListTasksRequest()).tasks
    assert [(t.name, t.schedule) for t in before] == [("greet", "daily at 03:00 UTC")]
    assert before[0].next_run.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)  # never ran: due now

    answer = grpc_stub.RunTask(scheduler_pb2.RunTaskRequest(name="greet"))
    assert answer.ran
    assert answer.summary.startswith("run ")

    after = grpc_stub.ListTasks(scheduler_pb2.ListTasksRequest()).tasks
    now = datetime.now(UTC)
    assert after[0].next_run.ToDatetime(tzinfo=UTC) == Schedule.daily(3).latest_slot(now) + timedelta(days=1)


def test_grpc_run_task_reports_a_held_lock(clean_db: Engine, grpc_stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    with clean_db.connect() as other:
        task_runs.try_lock(other, "greet")
        answer = grpc_stub.RunTask(scheduler_pb2.RunTaskRequest(name="greet"))
        task_runs.unlock(other, "greet")
        other.commit()
    assert (answer.ran, answer.summary) == (False, LOCK_HELD)


def test_grpc_run_task_unknown_name_is_not_found(grpc_stub: scheduler_pb2_grpc.SchedulerStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_stub.RunTask(scheduler_pb2.RunTaskRequest(name="no-such-task"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "No scheduled task named 'no-such-task': ListTasks names them"


# -- the process -----------------------------------------------------------------------------------


def test_the_service_runs_its_table_and_stops_on_sigterm(clean_db: Engine, settings: Settings) -> None:
    env = {
        **os.environ,
        "HERALD_DATABASE_URL": settings.database_url,
        "HERALD_BROKER_URL": settings.broker_url,
        "HERALD_SCHEDULER_ADDRESS": "127.0.0.1:0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "herald.cli", "scheduler"], env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []

    def read(stream: Iterator[str]) -> None:
        for line in stream:
            lines.append(line)

    assert proc.stderr is not None
    threading.Thread(target=read, args=(proc.stderr,), daemon=True).start()
    try:
        wait_for(lambda: any("scheduler running" in line for line in lines), timeout=10)
        # Never run before, so every task is due at once.
        wait_for(lambda: all(r.last_finished_at for r in _runs(clean_db).values()) and len(_runs(clean_db)) == 9)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    summaries = {name: r.last_summary for name, r in _runs(clean_db).items()}
    assert summaries == {
        "timeout-sending-notifications": "timed out 0",
        "delete-notifications-older-than-retention": "moved 0",
        "delete-inbound-sms": "deleted 0",
        "replay-created-notifications": "republished 0",
        "redrive-due-notifications": "republished 0",
        "apply-early-receipts": "applied 0, dropped 0",
        "count-stuck-notifications": "none",
        "run-scheduled-jobs": "started 0",
        "check-job-status": "finished 0, re-queued 0",
    }
    output = "".join(lines)
    assert '"msg":"stopped"' in output
