"""Runs each due task exactly once across any number of scheduler replicas.

A task runs only while its PostgreSQL advisory lock is held, and only if scheduled_task_runs, re-read
under that lock, says it is still due: the lock stops two replicas running it at the same time, the
re-read stops a replica that lost the race from running it again just after the winner finished.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from herald import metrics
from herald.db import task_runs
from herald.scheduling.schedules import Schedule

log = logging.getLogger(__name__)

LOCK_HELD = "another scheduler holds the lock"


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    schedule: Schedule
    run: Callable[[Engine, datetime], str]  # returns a short summary without personal data


class Runner:
    def __init__(self, engine: Engine, tasks: Sequence[Task], *, tick: float = 1.0) -> None:
        self._tasks = {t.name: t for t in tasks}
        if len(self._tasks) != len(tasks):
            raise ValueError("task names must be unique")
        self._engine = engine
        self._tick = tick

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks.values())

    def run_forever(self, stop: threading.Event) -> None:
        """Runs due tasks every `tick` seconds until `stop` is set, each in a thread of its own, so a long
        nightly run never holds up the two-second sweep; a task in hand is finished first."""
        running: dict[str, threading.Thread] = {}
        while not stop.is_set():
            try:
                with self._engine.connect() as conn:
                    started = {name: row.last_started_at for name, row in task_runs.last_runs(conn).items()}
                now = datetime.now(UTC)
                for task in self._tasks.values():
                    busy = running.get(task.name)
                    if (busy is not None and busy.is_alive()) or not task.schedule.is_due(started.get(task.name), now):
                        continue
                    thread = threading.Thread(
                        target=self._run_logged, args=(task, now), name=f"task-{task.name}", daemon=True
                    )
                    running[task.name] = thread
                    thread.start()
            except Exception:  # the database is away: try again next tick
                log.warning("scheduler tick failed", exc_info=True)
            stop.wait(self._tick)
        for thread in running.values():
            thread.join()

    def _run_logged(self, task: Task, now: datetime) -> None:
        try:
            self._run(task, now, force=False)
        except Exception:  # the database went away mid-run: the task is due again next tick
            log.warning("scheduled task could not run", extra={"task": task.name}, exc_info=True)

    def run_due(self, now: datetime, stop: threading.Event | None = None) -> list[str]:
        """Runs the tasks due at `now`, one after another; returns the names of those this runner ran.
        `stop` is checked between tasks, so a shutdown waits for at most the one in hand."""
        with self._engine.connect() as conn:
            started = {name: row.last_started_at for name, row in task_runs.last_runs(conn).items()}
        ran = []
        for task in self._tasks.values():
            if stop is not None and stop.is_set():
                break
            # The unlocked read only saves a lock round trip per task and tick; _run decides.
            if not task.schedule.is_due(started.get(task.name), now):
                continue
            if self._run(task, now, force=False) is not None:
                ran.append(task.name)
        return ran

    def run_now(self, name: str) -> tuple[bool, str]:
        """Runs `name` whether due or not, under the same lock. KeyError if there is no such task."""
        summary = self._run(self._tasks[name], datetime.now(UTC), force=True)
        return (False, LOCK_HELD) if summary is None else (True, summary)

    def next_runs(self, now: datetime) -> list[tuple[Task, datetime]]:
        with self._engine.connect() as conn:
            runs = task_runs.last_runs(conn)
        return [
            (t, t.schedule.next_run(runs[t.name].last_started_at if t.name in runs else None, now))
            for t in self._tasks.values()
        ]

    def _run(self, task: Task, now: datetime, *, force: bool) -> str | None:
        """The task's summary, or None if another replica holds it or has already run it."""
        with self._engine.connect() as conn:
            # Autocommit: the lock is session-level, and a long task must not hold a transaction open.
            conn.execution_options(isolation_level="AUTOCOMMIT")
            if not task_runs.try_lock(conn, task.name):
                return None
            try:
                if not force and not task.schedule.is_due(task_runs.last_started(conn, task.name), now):
                    return None
                task_runs.record_start(conn, task.name, now)
                summary, seconds = self._execute(task, now)
                # Measured from `now`, so an injected clock gives consistent start and finish times.
                task_runs.record_finish(conn, task.name, now + timedelta(seconds=seconds), summary)
                return summary
            finally:
                task_runs.unlock(conn, task.name)

    def _execute(self, task: Task, now: datetime) -> tuple[str, float]:
        start = time.perf_counter()
        try:
            summary, outcome = task.run(self._engine, now), "ok"
        except Exception as exc:
            summary, outcome = f"failed: {type(exc).__name__}", "failed"
            log.exception("scheduled task failed", extra={"task": task.name})
        seconds = time.perf_counter() - start
        metrics.observe("scheduler.task", seconds, task=task.name, outcome=outcome)
        log.info(
            "scheduled task finished",
            extra={"task": task.name, "outcome": outcome, "summary": summary, "seconds": round(seconds, 3)},
        )
        return summary, seconds
