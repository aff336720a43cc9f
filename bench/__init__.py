"""Herald's benchmarks: the machine's raw limits and Herald's own paths, measured in one run.

`python -m bench` (or `make bench`) runs everything and rewrites BENCHMARKS.md. This package holds what
raw.py and herald_paths.py share: where the benchmark's database and broker are, the result type, the
sample message, queue purging, and a load generator that runs in its own process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from typing import Any

from kombu import Connection

from herald.queues.topology import ALL_QUEUES, declare_all, queue
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationMessage

# The benchmark's own database (created and migrated by the run) and its own vhost on the team's broker:
# the integration tests purge and consume the default vhost's queues, so sharing it breaks both.
DATABASE_URL = os.environ.get("HERALD_BENCH_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/herald_bench")
BENCH_VHOST_URL = "amqp://guest:guest@127.0.0.1:5672/herald_bench"
DEFAULT_VHOST_URL = "amqp://guest:guest@127.0.0.1:5672//"
CREATE_VHOST = "rabbitmqctl add_vhost herald_bench && rabbitmqctl set_permissions -p herald_bench guest '.*' '.*' '.*'"


def _vhost_reachable() -> bool:
    try:
        with Connection(BENCH_VHOST_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:  # no such vhost (or no broker: the run reports that itself)
        return False


def _broker_url() -> str:
    """HERALD_BENCH_BROKER_URL if set; else the herald_bench vhost, made with rabbitmqctl where the
    broker runs on this machine; else `/`."""
    chosen = os.environ.get("HERALD_BENCH_BROKER_URL")
    if chosen:
        return chosen
    if _vhost_reachable():
        return BENCH_VHOST_URL
    if shutil.which("rabbitmqctl"):
        subprocess.run(CREATE_VHOST, shell=True, capture_output=True, timeout=60, check=False)
        if _vhost_reachable():
            return BENCH_VHOST_URL
    return DEFAULT_VHOST_URL


BROKER_URL = _broker_url()


@dataclass(slots=True)
class Figure:
    """One measured figure. `compare` names the raw figure (its key) this one should be read against."""

    key: str
    label: str
    value: float
    unit: str
    count: int = 0
    compare: tuple[str, ...] = ()
    note: str = ""
    runs: list[float] = field(default_factory=list)
    # A row of the goals table (issue 7) when set: the goal's name, its target in `unit`, and which way.
    goal: str = ""
    target: float | None = None
    at_most: bool = False
    target_is_ratio: bool = False  # the target is a share of the first `compare` figure

    def met(self, ratio: float | None) -> bool | None:
        measured = ratio if self.target_is_ratio else self.value
        if self.target is None or measured is None:
            return None
        return measured <= self.target if self.at_most else measured >= self.target


class BenchError(Exception):
    """A benchmark could not run (a service is missing, the queues are in use, a phase timed out)."""


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def median_of(repeats: int, run: Callable[[], float]) -> tuple[float, list[float]]:
    runs = [run() for _ in range(repeats)]
    return statistics.median(runs), runs


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Polls `check` until it holds or `timeout` passes; bounded in time and so in count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


# --- the broker -------------------------------------------------------------------------------------


def queue_depths(broker_url: str) -> dict[str, tuple[int, int]]:
    """(messages, consumers) per Herald queue, from a passive declare."""
    depths: dict[str, tuple[int, int]] = {}
    with Connection(broker_url) as conn:
        channel = conn.channel()
        for name in ALL_QUEUES:
            _, messages, consumers = queue(name)(channel).queue_declare(passive=True)
            depths[name] = (messages, consumers)
        channel.close()
    return depths


def prepare_queues(broker_url: str) -> None:
    """Declares and purges Herald's queues, but refuses if anything else consumes them: the benchmark
    shares the broker with the team's tests, and purging under a running test would break it."""
    with Connection(broker_url) as conn:
        conn.ensure_connection(max_retries=2)
        declare_all(conn)
    busy = {name: c for name, (_, c) in queue_depths(broker_url).items() if c}
    if busy:
        raise BenchError(f"queues in use by other consumers (tests running?): {busy}; try again later")
    purge_queues(broker_url)


def purge_queues(broker_url: str) -> None:
    with Connection(broker_url) as conn:
        channel = conn.channel()
        for name in ALL_QUEUES:
            queue(name)(channel).purge()
        channel.close()


# --- messages ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ids:
    """Valid foreign keys for rows of the benchmark database (from Admin.demo)."""

    service_id: str
    template_id: str
    api_key_id: str


def notification(ids: Ids, index: int, *, research_mode: bool = True) -> NotificationMessage:
    """A message shaped like the ones ingest publishes for the demo SMS template."""
    message = NotificationMessage(
        id=str(uuid.uuid4()),
        service_id=ids.service_id,
        template_id=ids.template_id,
        template_version=1,
        type=NotificationType.SMS,
        to="447700900123",
        personalisation_json=f'{{"name":"Ada","code":"{index}"}}',
        body=f"Hello Ada, your code is {index}.",
        key_type=KeyType.NORMAL,
        api_key_id=ids.api_key_id,
        research_mode=research_mode,
        billable_units=1,
        sender="Herald",
    )
    message.created_at.FromDatetime(datetime.now(UTC))
    return message


# --- load from another process ----------------------------------------------------------------------


@dataclass(slots=True)
class CallRecord:
    """One call as the caller saw it, on CLOCK_MONOTONIC (shared by every process on the machine)."""

    started: float
    ended: float
    ok: bool
    answer: str = ""


def run_callers(
    callers: int, per_caller: int, call: Callable[[int], str], timeout: float
) -> tuple[list[CallRecord], float, float]:
    """`callers` threads make `per_caller` calls each, all starting together; bounded by `timeout`.

    Returns the records, and when the first call started and the last ended."""
    records: list[list[CallRecord]] = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers + 1)
    deadline = time.monotonic() + timeout

    def work(slot: int) -> None:
        barrier.wait()
        mine = records[slot]
        for i in range(per_caller):
            if time.monotonic() > deadline:
                break
            started = time.monotonic()
            try:
                answer, ok = call(slot * per_caller + i), True
            except Exception as exc:  # a failed call is counted, not fatal: the figure says how many
                answer, ok = type(exc).__name__, False
            mine.append(CallRecord(started, time.monotonic(), ok, answer))

    threads = [threading.Thread(target=work, args=(slot,), daemon=True) for slot in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    begun = time.monotonic()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()) + 5.0)
    flat = [r for mine in records for r in mine]
    ended = max((r.ended for r in flat), default=begun)
    return flat, begun, ended


class LoadProcess:
    """Runs `target(pipe, *args)` in a fresh process, so that the callers do not share the GIL of the
    process being measured. The target sends "ready", then answers each command it receives."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=target, args=(child, *args), daemon=True)
        self._process.start()
        self._expect("ready", 60.0)

    def _expect(self, what: str, timeout: float) -> Any:
        if not self._pipe.poll(timeout):
            raise BenchError(f"load process: no {what} within {timeout:.0f}s")
        answer = self._pipe.recv()
        if isinstance(answer, BaseException):
            raise BenchError(f"load process failed: {answer!r}")
        return answer

    def ask(self, command: str, timeout: float, **arguments: Any) -> Any:
        self._pipe.send((command, arguments))
        return self._expect(f"answer to {command}", timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the child is gone already
            self._pipe.send("stop")
        self._process.join(10.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5.0)


def serve_commands(pipe: Pipe, handlers: dict[str, Callable[..., Any]]) -> None:
    """The child side of LoadProcess: answers (command, keyword arguments) until "stop" (or an idle
    15 minutes: the soak's longest phase is 10)."""
    pipe.send("ready")
    while pipe.poll(900.0):
        message = pipe.recv()
        if message == "stop":
            return
        command, arguments = message
        try:
            pipe.send(handlers[command](**arguments))
        except Exception as exc:  # handed to the parent, which reports it (as text: not all pickle)
            pipe.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
