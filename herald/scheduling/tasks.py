"""The schedule, in one place: which periodic tasks Herald runs, and when (UTC, as Notify's beat).

Each task is thin: it works out its time window from `now` and calls repository functions. Bulk work
goes in batches, each in its own transaction, so a long run holds no long locks and a stopped run
keeps what it has done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, Engine

from herald import metrics
from herald.db import inbound, notifications
from herald.domain import limits
from herald.domain import statuses as st
from herald.scheduling.runner import Task
from herald.scheduling.schedules import Schedule
from herald.service_layer import jobs, receipts
from herald.service_layer.service_callbacks import CallbackTrigger
from herald.settings import Settings

log = logging.getLogger(__name__)

# Publishes send-* messages built from the rows the sweep took; returns how many it published.
Republish = Callable[[Sequence[Any]], int]

BATCH = 10_000
REPUBLISH_BATCH = 1_000
SENDING_TIMEOUT = timedelta(days=3)
# Notify replays rows still `created` between 1 hour and 7 days old: older ones are past saving.
REPLAY_AFTER = timedelta(hours=1)
REPLAY_UNTIL = timedelta(days=7)
# A row re-published but not yet claimed (a long queue) is re-published again only after this long.
RESWEEP_AFTER = timedelta(minutes=5)
# In-flight rows older than this count as stuck (Notify's KPI is a hand-off within 10 seconds).
STUCK_AFTER = timedelta(minutes=10)


def build_tasks(
    settings: Settings,
    republish: Republish | None = None,
    callbacks: CallbackTrigger | None = None,
    publisher: jobs.BatchPublish | None = None,
) -> list[Task]:
    """The schedule table: one line per task. `callbacks`: early receipts that finish a notification
    queue its delivery callback, as the receipts dispatcher does. `publisher`: puts jobs on process-job."""
    tasks = []
    if publisher is not None:
        tasks += [
            # The seed's (and Notify's first) schedule: one minute past every hour. An operator wanting
            # scheduled jobs started sooner changes this one line (Notify later moved to every 15 minutes).
            Task("run-scheduled-jobs", Schedule.hourly(1), partial(run_scheduled_jobs, publisher=publisher)),
            Task("check-job-status", Schedule.every(60), partial(check_job_status, publisher=publisher)),
        ]
    if republish is None:
        log.warning("re-publishing tasks are not scheduled: no publisher was given")
    else:
        tasks += [
            Task(
                "redrive-due-notifications",
                Schedule.every(settings.sweep_seconds),
                partial(redrive_due_notifications, republish=republish),
            ),
            Task(
                "replay-created-notifications",
                Schedule.every(15 * 60),
                partial(replay_created_notifications, republish=republish),
            ),
        ]
    tasks += [
        Task("apply-early-receipts", Schedule.every(10), partial(apply_early_receipts, callbacks=callbacks)),
        Task("count-stuck-notifications", Schedule.every(60), count_stuck_notifications),
        Task("timeout-sending-notifications", Schedule.daily(0, 5), timeout_sending_notifications),
        Task(
            "delete-notifications-older-than-retention",
            Schedule.daily(3, 0),
            partial(delete_notifications_older_than_retention, retention_days=settings.retention_days),
        ),
        Task(
            "delete-inbound-sms",
            Schedule.daily(1, 40),
            partial(delete_inbound_sms, retention_days=settings.retention_days),
        ),
    ]
    return tasks


@metrics.instrumented
def delete_notifications_older_than_retention(engine: Engine, now: datetime, *, retention_days: int) -> str:
    """Seed: keep a full week (midnight to midnight, London, as Notify), or each service's own retention
    for the type (3 to 90 days); test-key rows leave no history."""
    earliest = limits.retention_cutoff(now, limits.MIN_RETENTION_DAYS)
    moved = _drain(
        engine, lambda conn: notifications.move_expired_to_history(conn, now, earliest, retention_days, BATCH)
    )
    return f"moved {moved}"


@metrics.instrumented
def delete_inbound_sms(engine: Engine, now: datetime, *, retention_days: int) -> str:
    """Received texts are kept for the service's SMS retention, or the default, cut at London midnight as
    notifications are (Notify's delete-inbound-sms, 01:40)."""
    earliest = limits.retention_cutoff(now, limits.MIN_RETENTION_DAYS)
    deleted = _drain(engine, lambda conn: inbound.delete_expired(conn, now, earliest, retention_days, BATCH))
    return f"deleted {deleted}"


@metrics.instrumented
def run_scheduled_jobs(engine: Engine, now: datetime, *, publisher: jobs.BatchPublish) -> str:
    """Every scheduled job whose scheduled_for has passed goes on process-job."""
    return f"started {jobs.start_due_jobs(engine, now, publisher)}"


@metrics.instrumented
def check_job_status(engine: Engine, now: datetime, *, publisher: jobs.BatchPublish) -> str:
    """Jobs whose rows are all done finish; jobs without progress for 30 minutes resume (Notify's)."""
    finished, requeued = jobs.check_jobs(engine, now, publisher)
    return f"finished {finished}, re-queued {requeued}"


@metrics.instrumented
def timeout_sending_notifications(engine: Engine, now: datetime) -> str:
    """No receipt within 3 days will not come now: the notification failed, temporarily."""
    cutoff = now - SENDING_TIMEOUT
    timed_out = _drain(
        engine,
        lambda conn: notifications.move_status_created_before(
            conn, (st.SENDING, st.PENDING), st.TEMPORARY_FAILURE, cutoff, now, BATCH
        ),
    )
    return f"timed out {timed_out}"


@metrics.instrumented
def redrive_due_notifications(engine: Engine, now: datetime, *, republish: Republish) -> str:
    """Retries that have fallen due and hand-offs whose lease ran out (their dispatcher died) go back to
    their send queue. The rows are marked in the same transaction, committed only after the publish was
    confirmed: a failed publish leaves them for the next run."""
    total = _drain(
        engine,
        lambda conn: _republish(republish, notifications.take_due(conn, now, now - RESWEEP_AFTER, REPUBLISH_BATCH)),
    )
    return f"republished {total}"


@metrics.instrumented
def replay_created_notifications(engine: Engine, now: datetime, *, republish: Republish) -> str:
    """Stored but never attempted (its send-* message was lost): published again, as Notify's replay."""
    total = _drain(
        engine,
        lambda conn: _republish(
            republish,
            notifications.take_never_attempted(
                conn, now - REPLAY_UNTIL, now - REPLAY_AFTER, now, now - RESWEEP_AFTER, REPUBLISH_BATCH
            ),
        ),
    )
    return f"republished {total}"


@metrics.instrumented
def apply_early_receipts(engine: Engine, now: datetime, *, callbacks: CallbackTrigger | None = None) -> str:
    applied, dropped = receipts.apply_pending(engine, now, REPUBLISH_BATCH, callbacks)
    return f"applied {applied}, dropped {dropped}"


@metrics.instrumented
def count_stuck_notifications(engine: Engine, now: datetime) -> str:
    """Sets the stuck gauge (alerts read it): in-flight rows older than STUCK_AFTER, per status."""
    with engine.connect() as conn:
        counts = notifications.stuck_counts(conn, now - STUCK_AFTER, now)
    for status in (st.CREATED, st.SENDING, st.PENDING):
        metrics.gauge("notifications_stuck", counts.get(status, 0), status=status)
    return ", ".join(f"{status} {count}" for status, count in sorted(counts.items())) or "none"


def _republish(republish: Republish, rows: Sequence[Any]) -> int:
    return republish(rows) if rows else 0


def _drain(engine: Engine, step: Callable[[Connection], int]) -> int:
    """Repeats `step`, a transaction each, until it reports no rows; returns the total."""
    total = 0
    while True:
        with engine.begin() as conn:
            done = step(conn)
        if done == 0:
            return total
        total += done
