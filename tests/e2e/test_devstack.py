"""`herald run` (what `make run` starts) as a person runs it: embedded PostgreSQL and broker, a process per
service, the demo message to `delivered`; a service killed is restarted and the stack still delivers; Ctrl-C
stops every process, the broker and the database, and leaves none behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer

from herald.bootstrap import ALL_QUEUES_DISPATCHED
from herald.clients import IngestClient
from herald.devstack import DISPATCHERS, embedded_broker, isolated_env
from herald.queues.broker import TRANSPORT_OPTIONS, connect
from herald.queues.topology import EXCHANGE, declare_all, queue
from herald.supervisor import Supervisor, descendants, processes
from tests.support import final_status, process_alive, wait_for

pytestmark = pytest.mark.e2e


def test_every_queue_has_a_dispatcher_in_the_dev_stack() -> None:
    grouped = [name for queues in DISPATCHERS.values() for name in queues]
    assert sorted(grouped) == sorted(ALL_QUEUES_DISPATCHED)


# A consumer that takes one message and never acknowledges it: killed, it cannot give it back.
_HOLDER = """
import sys, time
from kombu import Consumer
from herald.queues.broker import connect
from herald.queues.topology import queue
with connect(sys.argv[1]) as conn:
    with Consumer(conn, [queue("db-sms")], on_message=lambda m: print("held", flush=True), prefetch_count=1):
        conn.drain_events(timeout=30)
        time.sleep(120)
"""


def test_the_embedded_broker_gives_a_killed_consumers_message_back_after_the_visibility_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor = Supervisor(out=io.StringIO(), grace=5)
    try:
        url = embedded_broker(supervisor, tmp_path / "broker")
        # The consumer that gives it back is connected as the dispatchers are (herald.queues.broker.connect),
        # with make run's options but a visibility timeout short enough for a test.
        assert TRANSPORT_OPTIONS["redis"]["visibility_timeout"] == 60  # make run's: a minute, not kombu's hour
        options: dict[str, Any] = {**TRANSPORT_OPTIONS["redis"], "visibility_timeout": 2}
        monkeypatch.setitem(TRANSPORT_OPTIONS, "redis", options)
        with Connection(url) as conn:
            declare_all(conn)
            Producer(conn.default_channel, exchange=EXCHANGE).publish(b"held by the killed", routing_key="db-sms")
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        finally:
            holder.kill()
            holder.wait()
        killed = time.monotonic()

        received: list[Any] = []
        with (
            connect(url) as conn,
            Consumer(conn, [queue("db-sms")], on_message=received.append),
        ):

            def drained() -> bool:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)  # an idle poll: where kombu restores what timed out
                return bool(received)

            # Restored by an idle poll (every tenth: kombu's unacked_restore_throttle) once it is older than
            # the timeout: not before, and not an hour later (kombu's default).
            wait_for(drained, timeout=options["visibility_timeout"] + 10 * 0.5 + 5, interval=0)
            back = time.monotonic() - killed
            received[0].ack()
        assert received[0].body == b"held by the killed"
        assert received[0].delivery_info["redelivered"]
        assert options["visibility_timeout"] - 0.5 <= back <= options["visibility_timeout"] + 10 * 0.5 + 5, back
    finally:
        supervisor.stop()


def _mentioning(folder: Path) -> list[int]:
    """Processes of this stack that are not children of `herald run`: the embedded PostgreSQL server."""
    return [pid for pid, (_, cmd) in processes().items() if str(folder) in cmd and process_alive(pid)]


def test_herald_run_delivers_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    env = isolated_env(os.environ)
    ingest = env["HERALD_INGEST_ADDRESS"]
    run = subprocess.Popen(
        [sys.executable, "-m", "herald.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []

    def read() -> None:
        assert run.stdout is not None
        lines.extend(raw.decode(errors="replace").rstrip("\n") for raw in run.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines) or run.poll() is not None, 240, 0.2)
        said = "\n".join(lines)
        assert "Ctrl-C stops everything" in said, said
        assert "starting the embedded broker" in said
        assert any(line.endswith("    delivered") for line in lines), said
        children = descendants([run.pid])
        names = {" ".join(cmd.split()[2:6]) for pid, cmd in children.items() if process_alive(pid)}
        assert {"herald.cli ingest", "herald.cli callbacks", "herald.cli gateway", "herald.cli scheduler"} <= names
        assert len([n for n in names if n.startswith("herald.cli dispatcher")]) == len(DISPATCHERS)
        database = _mentioning(tmp_path)
        assert database, "the embedded PostgreSQL runs in the stack's folder"

        # A dispatcher dies: the supervisor starts it again and messages still reach their final status.
        os.kill(next(pid for pid, cmd in children.items() if "db-sms,db-email" in cmd), signal.SIGKILL)
        wait_for(lambda: any("dispatch-db exited with -9; restarting" in line for line in lines), 30, 0.2)
        demo = json.loads((tmp_path / ".herald" / "demo.json").read_text())
        client = IngestClient(ingest, demo["research_key"], timeout=30)
        answer = client.send_sms("07700 900123", demo["research_sms_template_id"], {"name": "x", "code": "1"})
        assert final_status(client, answer.id, timeout=90) == "delivered"
        everything = [*descendants([run.pid]), *database]
    finally:
        run.send_signal(signal.SIGINT)
        try:
            code = run.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.kill()
            raise
        reader.join(10)
    said = "\n".join(lines)
    assert code == 0, said
    assert "Herald: every process stopped\n" in said + "\n", said
    assert "Herald: database stopped" in said
    assert [pid for pid in everything if process_alive(pid)] == []
    assert _mentioning(tmp_path) == []
