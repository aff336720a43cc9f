"""The schedule, in one place: which periodic tasks Herald runs, and when (UTC, as Notify's beat).

Each task is thin: it works out its time window from `now` and calls repository functions. Bulk work
goes in batches, each in its own transaction, so a long run holds no long locks and a stopped run
keeps what it has done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Connection, Engine

from herald.db import notifications
from herald.domain import statuses as st
from herald.scheduling.runner import Task
from herald.scheduling.schedules import Schedule
from herald.settings import Settings

log = logging.getLogger(__name__)

# Publishes the notifications with these ids to their send queues again; returns how many it published.
Republish = Callable[[list[str]], int]

BATCH = 10_000
SENDING_TIMEOUT = timedelta(days=3)
# Notify replays rows still `created` between 1 hour and 7 days old: older ones are past saving.
REPLAY_AFTER = timedelta(hours=1)
REPLAY_UNTIL = timedelta(days=7)


def build_tasks(settings: Settings, republish: Republish | None = None) -> list[Task]:
    tasks = []
    if republish is None:
        log.warning("replay-created-notifications is not scheduled: no publisher was given")
    else:
        tasks.append(
            Task(
                "replay-created-notifications",
                Schedule.every(15 * 60),
                partial(replay_created_notifications, republish=republish),
            )
        )
    tasks += [
        Task("timeout-sending-notifications", Schedule.daily(0, 5), timeout_sending_notifications),
        Task(
            "delete-notifications-older-than-retention",
            Schedule.daily(3, 0),
            partial(delete_notifications_older_than_retention, retention_days=settings.retention_days),
        ),
    ]
    return tasks


def delete_notifications_older_than_retention(engine: Engine, now: datetime, *, retention_days: int) -> str:
    """Seed: keep a full week, deleting only what is 7 x 24 hours older than the run (not midnight-based)."""
    cutoff = now - timedelta(days=retention_days)
    moved = _drain(engine, lambda conn: notifications.move_to_history(conn, cutoff, BATCH))
    return f"moved {moved}"


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


def replay_created_notifications(engine: Engine, now: datetime, *, republish: Republish) -> str:
    """Re-publishes what was stored but never sent. One batch a run: the rows stay `created` until a
    send dispatcher claims them, and a duplicate publish is harmless because that claim is guarded."""
    with engine.connect() as conn:
        ids = notifications.ids_in_status_between(conn, (st.CREATED,), now - REPLAY_UNTIL, now - REPLAY_AFTER, BATCH)
    return f"republished {republish(ids) if ids else 0} of {len(ids)}"


def _drain(engine: Engine, step: Callable[[Connection], int]) -> int:
    """Repeats `step`, a transaction each, until it reports no rows; returns the total."""
    total = 0
    while True:
        with engine.begin() as conn:
            done = step(conn)
        if done == 0:
            return total
        total += done
