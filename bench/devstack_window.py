"""`python -m bench.devstack_window`: `make run`'s stack under load, and its accepted-to-stored window.

Starts `herald run` exactly as `make run` does (embedded PostgreSQL and Valkey, every service its own
supervised process), but in a temporary folder and on free ports so that it clashes with nothing, then
sends the demo's research-mode service paced load through SendSms and SendSmsBatch from a process of its
own (bench.load.sender), phase by phase (`--phases unary:500,batch:500,batch:1000`: RPC and messages a
second). For each phase it reports:

- accepted-to-stored: from a sampled answer to the moment its row is visible in PostgreSQL (what
  GetNotification reads), polled every 5 ms by the load process (bench.load.StoredWatcher);
- accepted-to-final: `updated_at - created_at` of every row of the phase, read from PostgreSQL once all
  are final (created_at is stamped by ingest just before it publishes);
- CPU per 1,000 messages of each process of the stack (from /proc), which is what decides the window on
  two cores shared by a dozen processes.

Ctrl-C (SIGINT) stops the stack at the end, as a person would; nothing is left behind but the printout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import redis
from sqlalchemy.engine import make_url

from bench import LoadProcess, percentile, wait_until
from bench.load import sender
from bench.stack import cpu_seconds
from herald.crypto import SecretBox
from herald.db.engine import make_engine
from herald.devstack import isolated_env
from herald.domain import limits
from herald.domain import statuses as st
from herald.service_layer.admin import Admin
from herald.settings import Settings
from herald.supervisor import descendants, processes

DEFAULT_PHASES = "unary:500,batch:500,batch:1000"
BATCH_SIZE = 100  # items per SendSmsBatch call: 5 to 10 calls a second at these rates
UNARY_CALLERS = 32
BATCH_CALLERS = 4
SAMPLES = 200  # answers whose stored moment is watched, per phase


@dataclass(frozen=True)
class Phase:
    rpc: str  # unary or batch
    rate: float  # messages a second

    @classmethod
    def parse(cls, text: str) -> Phase:
        rpc, _, rate = text.partition(":")
        if rpc not in ("unary", "batch") or not rate:
            raise argparse.ArgumentTypeError(f"a phase is unary:<rate> or batch:<rate>, not {text!r}")
        return cls(rpc, float(rate))


def _label(cmdline: str) -> str:
    """A short name for a process of the stack: the herald command (and a dispatcher's queues), valkey,
    postgres."""
    words = cmdline.split()
    if "herald.cli" in words:
        rest = words[words.index("herald.cli") + 1 :]
        if rest[:1] == ["dispatcher"] and "--queues" in rest:
            return f"dispatcher {rest[rest.index('--queues') + 1]}"
        return " ".join(rest[:1])
    if "valkey" in cmdline:
        return "valkey"
    if "postgres" in cmdline:
        return "postgres"
    return words[0].rsplit("/", 1)[-1] if words else "?"


@dataclass
class Devstack:
    """`herald run` in a folder of its own, on free ports, with its output kept (and shown on failure)."""

    folder: Path
    process: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    ingest: str = ""

    def start(self, settings: dict[str, str], timeout: float = 240.0) -> None:
        env = {**isolated_env(os.environ), **settings}
        self.ingest = env["HERALD_INGEST_ADDRESS"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "herald.cli", "run"],
            cwd=self.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()
        up = wait_until(
            lambda: any("Ctrl-C stops everything" in line for line in self.lines) or self.process_exited(), timeout, 0.2
        )
        if not up or self.process_exited():
            raise RuntimeError("herald run did not come up:\n" + "\n".join(self.lines[-40:]))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        self.lines.extend(raw.decode(errors="replace").rstrip("\n") for raw in self.process.stdout)

    def process_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def demo(self) -> dict[str, str]:
        return dict(json.loads((self.folder / ".herald" / "demo.json").read_text()))

    def tree(self) -> dict[int, str]:
        """Every process of the stack (pid -> label): herald run's descendants (the services, Valkey) and
        the embedded PostgreSQL's, which runs in the stack's folder but is not herald run's child."""
        assert self.process is not None
        table = processes()
        roots = {self.process.pid} | {
            pid for pid, (_, cmd) in table.items() if str(self.folder) in cmd and "postgres" in cmd
        }
        found = {pid: _label(table[pid][1]) for pid in roots if pid in table}
        found.update({pid: _label(cmd) for pid, cmd in descendants(roots, table).items()})
        found.pop(self.process.pid, None)  # the supervisor itself: its CPU is the merged output
        return found

    def setting(self, name: str) -> str:
        """A setting herald run gave its services (HERALD_DATABASE_URL, say), read from ingest's environment."""
        for pid, label in self.tree().items():
            if label == "ingest":
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                return dict(e.decode().split("=", 1) for e in environ if b"=" in e)[name]
        raise RuntimeError("no ingest process in the stack")

    def lift_limits(self, database_url: str) -> None:
        """The research service may send as much as the phases ask: the demo's are Notify's defaults (3,000
        a minute). The limits are still checked on every call, as in make run; ingest sees the new ones
        once its cache of the service expires."""
        engine = make_engine(database_url)
        try:
            admin = Admin(engine, SecretBox(Settings().secret_key))
            top = {"rate_limit": limits.MAX_RATE_LIMIT, "sms_message_limit": limits.MAX_DAILY_LIMIT}
            admin.update_service(self.demo()["research_service_id"], limit_values=top)
        finally:
            engine.dispose()
        time.sleep(Settings().cache_seconds + 0.5)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGINT)  # Ctrl-C, as a person stops make run
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _cpu(pids: dict[int, str]) -> dict[int, float]:
    used = {}
    for pid in pids:
        try:
            used[pid] = cpu_seconds(pid)
        except OSError:  # gone (a restarted child, a closed PostgreSQL backend)
            continue
    return used


def _cpu_by_label(stack: Devstack, before: dict[int, float]) -> dict[str, float]:
    """CPU seconds per process label since `before` (a process that started meanwhile counts whole)."""
    tree = stack.tree()
    now = _cpu(tree)
    spent: dict[str, float] = {}
    for pid, seconds in now.items():
        spent[tree[pid]] = spent.get(tree[pid], 0.0) + seconds - before.get(pid, 0.0)
    return spent


def _broker_commands(stack: Devstack) -> dict[str, int]:
    """Calls of each command the embedded Valkey has served so far (INFO commandstats): how many broker
    round trips a message costs, whoever makes them. Empty when the stack uses a RabbitMQ."""
    url = stack.setting("HERALD_BROKER_URL")
    if not url.startswith("redis"):
        return {}
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def _final_windows(db: dict[str, Any], since: float, expected: int, timeout: float) -> tuple[int, list[float]]:
    """Waits (bounded) until `expected` rows created since `since` (Unix seconds) are final, then returns
    how many are, and each one's seconds from created_at to updated_at."""
    final = list(st.FINAL)
    conn = psycopg2.connect(**db)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:

            def count() -> int:
                cur.execute(
                    "SELECT count(*) FROM notifications WHERE created_at >= to_timestamp(%s) AND status = ANY(%s)",
                    (since, final),
                )
                return int(cur.fetchone()[0])

            wait_until(lambda: count() >= expected, timeout, 0.25)
            cur.execute(
                "SELECT extract(epoch FROM updated_at - created_at) FROM notifications "
                "WHERE created_at >= to_timestamp(%s) AND status = ANY(%s)",
                (since, final),
            )
            spans = [float(row[0]) for row in cur.fetchall()]
    finally:
        conn.close()
    return len(spans), spans


def _ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:,.0f}" if values else "-"


def run_phase(stack: Devstack, load: LoadProcess, db: dict[str, Any], phase: Phase, seconds: float) -> dict[str, Any]:
    demo = stack.demo()
    common = {"api_key": demo["research_key"], "template_id": demo["research_sms_template_id"], "seconds": seconds}
    before = _cpu(stack.tree())
    commands_before = _broker_commands(stack)
    since = time.time()
    if phase.rpc == "unary":
        # StoredWatcher samples every (seconds * 1000 / samples)th answer: SAMPLES of them at this rate.
        samples = round(SAMPLES * 1000 / phase.rate)
        result = load.ask(
            "unary", seconds + 180, **common, callers=UNARY_CALLERS, samples=samples, per_second=phase.rate
        )
    else:
        # Both ends of every sampled call are watched: the first and the last item stored of the batch.
        result = load.ask(
            "batch",
            seconds + 180,
            **common,
            callers=BATCH_CALLERS,
            size=BATCH_SIZE,
            per_second=phase.rate,
            samples=SAMPLES // 2,
        )
    accepted = int(result["accepted"])
    finals, spans = _final_windows(db, since, accepted, 120.0)
    cpu = _cpu_by_label(stack, before)
    after = _broker_commands(stack)
    commands = {name: calls - commands_before.get(name, 0) for name, calls in after.items()}
    return {"phase": phase, "result": result, "finals": finals, "spans": spans, "cpu": cpu, "commands": commands}


def report(outcome: dict[str, Any]) -> str:
    phase: Phase = outcome["phase"]
    result = outcome["result"]
    accepted = int(result["accepted"])
    took = result["ended"] - result["begun"]
    windows, spans = result["windows"], outcome["spans"]
    lines = [
        f"{phase.rpc} at {phase.rate:,.0f} msg/s: {accepted:,} accepted in {took:.1f} s "
        f"({accepted / took if took else 0:,.0f}/s), {result['failed_items'] + result['failed_calls']} refused "
        f"{result['errors'] or ''}; call p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms",
        f"  accepted-to-stored ({len(windows)} sampled): p50 {_ms(windows, 50)} ms, p99 {_ms(windows, 99)} ms, "
        f"max {_ms(windows, 100)} ms",
        f"  accepted-to-final ({outcome['finals']:,} of {accepted:,} final): p50 {_ms(spans, 50)} ms, "
        f"p99 {_ms(spans, 99)} ms",
    ]
    cpu: dict[str, float] = outcome["cpu"]
    total = sum(cpu.values())
    per_k = 1000 / accepted if accepted else 0.0
    commands: dict[str, int] = outcome["commands"]
    if commands and accepted:
        busiest = sorted(commands.items(), key=lambda kv: -kv[1])[:8]
        lines.append(
            f"  broker commands: {sum(commands.values()) * per_k:,.0f} per 1,000 messages ("
            + ", ".join(f"{name} {calls * per_k:,.0f}" for name, calls in busiest)
            + ")"
        )
    lines.append(f"  CPU: {total:.1f} s in all, {total * per_k * 1000:.0f} ms per 1,000 messages; per process:")
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {name:<56} {seconds:6.2f} s  {seconds * per_k * 1000:6.0f} ms/1,000")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.devstack_window", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phases",
        type=lambda text: [Phase.parse(p) for p in text.split(",")],
        default=[Phase.parse(p) for p in DEFAULT_PHASES.split(",")],
        help=f"RPC:messages-a-second, comma separated (default {DEFAULT_PHASES})",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase's length (default 20)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="HERALD_NAME=VALUE",
        help="a setting for herald run's processes, to compare (e.g. HERALD_DB_BATCH_LINGER=0.02)",
    )
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU measured over this long first (0: not)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="herald-window-") as folder:
        stack = Devstack(Path(folder))
        load: LoadProcess | None = None
        try:
            print("starting herald run (as make run does) ...", flush=True)
            stack.start(dict(pair.split("=", 1) for pair in args.set))
            database_url = stack.setting("HERALD_DATABASE_URL")
            stack.lift_limits(database_url)
            url = make_url(database_url)
            db: dict[str, Any] = {"host": url.query["host"], "user": url.username, "dbname": url.database}
            print(f"stack up: {len(stack.tree())} processes; {os.cpu_count()} cores", flush=True)
            if args.idle:
                before = _cpu(stack.tree())
                time.sleep(args.idle)
                idle = _cpu_by_label(stack, before)
                print(f"idle: {sum(idle.values()) / args.idle * 100:.1f}% of a core for the whole stack", flush=True)
            # The load process's StoredWatcher reaches the embedded PostgreSQL through libpq's PGHOST (its
            # URL has no host), and needs no broker of the benchmark's.
            os.environ.update(
                {
                    "HERALD_BENCH_DATABASE_URL": f"postgresql+psycopg2://{db['user']}@/{db['dbname']}",
                    "PGHOST": db["host"],
                    "HERALD_BENCH_BROKER_URL": "memory://",
                }
            )
            load = LoadProcess(sender, stack.ingest)
            for phase in args.phases:
                print(report(run_phase(stack, load, db, phase, args.seconds)), flush=True)
        finally:
            if load is not None:
                load.close()
            code = stack.stop()
            if code != 0:
                print("\n".join(stack.lines[-40:]), file=sys.stderr)
                print(f"herald run exited with {code}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
