"""`python -m bench`: measure the raw limits and Herald's paths in one run, print them, write BENCHMARKS.md.

.venv/bin/python -m bench            # the full run (about three minutes on 2 cores)
.venv/bin/python -m bench --quick    # small sizes, prints only: for checking the harness itself
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from kombu import Connection
from sqlalchemy import text
from tqdm import tqdm

from bench import (
    BRIEF_FIGURES,
    BROKER_URL,
    CREATE_VHOST,
    DATABASE_URL,
    DEFAULT_VHOST_URL,
    BenchError,
    Figure,
    herald_paths,
    prepare_queues,
    purge_queues,
    raw,
)

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "BENCHMARKS.md"

# Short names for the "compared with" column.
SHORT = {
    "raw.publish": "publish, no confirms",
    "raw.publish_confirm_each": "publish, confirm each",
    "raw.consume": "consume, ack each",
    "raw.pg_row_commit": "insert + commit per row",
    "raw.pg_executemany": "executemany",
    "raw.pg_multirow": "multi-row INSERT",
    "raw.pg_copy": "COPY",
    "raw.pg_multirow_bare": "multi-row INSERT, bare table",
    "raw.pg_copy_bare": "COPY, bare table",
    "raw.grpc_unary": "gRPC unary",
}

READING = """\
## Reading these figures

Every figure is measured in this run, on this machine, against the same PostgreSQL and RabbitMQ, so a
Herald figure is read against the raw figure beside it rather than against a number from elsewhere (the
brief's figures are shown for orientation only). Throughputs are medians of three runs where a "runs"
column lists them, single runs otherwise; latencies are per call as the caller saw them. The machine
is shared: with other work running (see the load average above) figures move by 20% or more between
runs, raw and Herald alike, which is one more reason to read them only against each other.

**Raw limits** (`bench/raw.py`): what the libraries Herald uses can do with no Herald code in the way.

- *publish, no confirms*: kombu `Producer.publish`, persistent, Herald's exchange and `db-sms`, Herald's
  real message body; timed until the broker holds every message. The ceiling for any publisher.
- *publish, confirm each*: the same with py-amqp's `confirm_publish`, one round trip per message. The
  floor a publisher falls to if it waits for each confirm.
- *consume, ack each*: kombu consumer, prefetch 100, one `basic.ack` per message. The ceiling for a
  dispatcher that does nothing with its messages.
- *insert + commit per row*, *executemany* (psycopg2 `executemany`: still one statement and one round
  trip per row, which is why it is far below the brief's figure), *multi-row INSERT* (`execute_values`:
  one statement per 1,000 rows, the shape of Herald's `insert_batch`, and the figure to hold a batch
  writer to), *COPY*: Herald's `notifications` rows into the real table, with its foreign key and three
  secondary indexes; the *bare table* rows show what those cost.
- *gRPC unary*: a bytes-echo servicer on a sync server with 32 threads (Herald's server shape), 64
  blocking callers in another process. The ceiling for any Herald RPC on this machine.

**Herald** (`bench/herald_paths.py`), each with the raw figures it should be compared with:

- *publish_batch, 100 / 1,000 per batch*: `ConfirmingPublisher` publishing and awaiting the confirms of
  a whole batch. Should approach *publish, no confirms*; far above *confirm each*.
- *PublisherThread, 64 threads*: what ingest uses: concurrent callers each wait for their own confirm,
  the thread groups them into one confirm round. Between *confirm each* (no grouping) and *publish, no
  confirms*; the mean batch shows how much grouping happened.
- *db dispatcher*: a pre-filled `db-sms` drained by `bootstrap.start_dispatcher(..., ["db-sms"])`: decode,
  one INSERT per batch, commit, publish each to `send-sms` with confirms, ack each. Bounded by the
  slowest of *consume*, *multi-row INSERT* and *publish*; *insert_batch alone* isolates the SQL part and
  should be read against *multi-row INSERT*.
- *SendSms accepted*: 64 callers (another process, a fresh JWT per call as Notify's clients make)
  against ingest running in this process with the rest of the stack; compare with *gRPC unary*. Its p50
  / p99 are the latency an API user sees under that load.
- *SendSms to delivered*: from the first call until every message is final. Research mode: ingest ->
  db dispatcher -> send dispatcher -> `Callbacks.SimulateDelivery`. Live service: the send dispatcher
  hands each message to the provider simulator over HTTP and its receipt comes back through
  `Callbacks.ReportDelivery` (0.05 s receipt delay). All services share one Python process, as in the
  integration tests and `herald all`. The note gives the stack's CPU per message and how far behind the
  rest of the stack was when the callers stopped.
- *a process per service*: the research-mode run again with ingest, the two dispatchers and callbacks
  each in its own process (as `herald ingest`, `herald dispatcher --queues ...` run them): the same
  code without one interpreter lock shared by all of it. The note splits the CPU per message by process.
- *accepted -> stored window*: after a SendSms answer, the time until the row is there for
  `GetNotification` (the README tells API users it answers NOT_FOUND meanwhile). Under the load above,
  ~200 sampled ids are looked up in PostgreSQL by the load process every 5 ms (polling the API would add
  RPCs to the server being measured); on an idle stack, one caller sends 200 times and polls
  `GetNotification` itself. The figure is the median; p99 and maximum are in the note.
- *CPU per stage*: the use cases a message passes through, called directly from one thread, in
  microseconds of that thread's CPU (time waiting for PostgreSQL is not counted). With every service in
  one process and Python's one-core-per-process limit, their sum bounds the end-to-end rate: 10 ms per
  message is 100 messages/s whatever PostgreSQL and RabbitMQ could do. Compare *insert_batch, per row*
  with 1,000,000 / *multi-row INSERT* (the raw cost per row, wall time).
- *Rendering and validation*: `bench/bench_templates.py`, microseconds of CPU per message, the floor
  of ingest's own work per SendSms.
"""


def _sizes(quick: bool) -> tuple[raw.Sizes, herald_paths.Sizes]:
    if not quick:
        return raw.Sizes(), herald_paths.Sizes()
    return (
        raw.Sizes(
            publish=2000, confirm_each=300, pg_row_commit=300, pg_batch=3000, pg_executemany=2000, grpc_calls=1280
        ),
        herald_paths.Sizes(
            publish=2000,
            thread_publish=1280,
            persist=2000,
            e2e_research=640,
            e2e_live=320,
            window_samples=40,
            cpu_calls=50,
        ),
    )


def _templates(n: int) -> Callable[[], list[Figure]]:
    def run() -> list[Figure]:
        try:
            from bench import bench_templates
        except ImportError as exc:
            return [Figure("templates.skipped", "bench_templates not importable", 0, "", note=str(exc))]
        labels = {
            "sms_us": "SMS render + UK number validation",
            "sms_render_us": "SMS render only",
            "uk_phone_us": "UK number validation only",
            "email_us": "email render + address validation",
        }
        return [
            Figure(f"templates.{name}", labels.get(name, name), value, "µs", n)
            for name, value in bench_templates.run(n).items()
        ]

    return run


# --- describing the run -------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            # Untracked files (a benchmark being written, say) do not change what Herald runs.
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def _versions(ctx: herald_paths.Context) -> list[str]:
    found = [f"Python {platform.python_version()}"]
    for package in ("kombu", "amqp", "grpcio", "protobuf", "SQLAlchemy", "psycopg2-binary"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} ?")
    with ctx.engine.connect() as conn:
        found.append(f"PostgreSQL {conn.scalar(text('SHOW server_version'))}")
    with Connection(BROKER_URL) as conn:
        conn.connect()
        version = conn.connection.server_properties.get("version", "?")
        found.append(f"RabbitMQ {version.decode() if isinstance(version, bytes) else version}")
    return found


# --- output -----------------------------------------------------------------------------------------


def _value(figure: Figure) -> str:
    if figure.unit in ("ms", "µs"):
        return f"{figure.value:,.1f} {figure.unit}"
    return f"{figure.value:,.0f} {figure.unit}"


def _comparison(figure: Figure, raw_figures: dict[str, Figure]) -> str:
    parts = []
    for key in figure.compare:
        base = raw_figures.get(key)
        if base is None or not base.value:
            continue
        ratio = figure.value / base.value
        share = f"{ratio:.0%} of" if ratio < 1 else f"{ratio:.1f}×"
        parts.append(f"{share} {SHORT.get(key, key)} ({base.value:,.0f})")
    return "; ".join(parts)


def _runs(figure: Figure) -> str:
    return " / ".join(f"{r:,.0f}" for r in figure.runs)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def markdown(figures: list[Figure], about: dict[str, str], failures: list[str]) -> str:
    raw_figures = {f.key: f for f in figures if f.key.startswith("raw.")}
    lines = [
        "# Herald benchmarks",
        "",
        f"Generated by `make bench` (`.venv/bin/python -m bench`) on {about['date']}; the run took "
        f"{about['took']}. Rewritten by every run: edit `bench/__main__.py`, not this file.",
        "",
        f"- Machine: {about['machine']}",
        f"- Versions: {about['versions']}",
        f"- Herald: {about['git']}; settings {about['settings']}",
        f"- Services: PostgreSQL database `{about['database']}`, RabbitMQ `{about['broker']}`",
        "",
        READING,
        "## Raw limits (this run)",
        "",
    ]
    lines += _table(
        ["path", "this run", "runs", "n", "brief", "note"],
        [
            [f.label, _value(f), _runs(f), f"{f.count:,}", BRIEF_FIGURES.get(f.key, "-"), f.note]
            for f in figures
            if f.key.startswith("raw.")
        ],
    )
    lines += ["", "## Herald (this run)", ""]
    lines += _table(
        ["path", "figure", "compared with (this run)", "n", "note"],
        [
            [f.label, _value(f), _comparison(f, raw_figures), f"{f.count:,}", f.note]
            for f in figures
            if f.key.startswith(("herald.", "e2e."))
        ],
    )
    cpu_rows = [f for f in figures if f.key.startswith("cpu.")]
    if cpu_rows:
        lines += ["", "## CPU per stage, one thread (this run)", ""]
        lines += _table(
            ["use case", "CPU per call", "n", "note"], [[f.label, _value(f), f"{f.count:,}", f.note] for f in cpu_rows]
        )
    template_rows = [f for f in figures if f.key.startswith("templates.")]
    if template_rows:
        lines += ["", "## Rendering and validation (bench/bench_templates.py)", ""]
        lines += _table(
            ["per message", "CPU time"], [[f.label, _value(f) if f.unit else f.note] for f in template_rows]
        )
    if failures:
        lines += ["", "## Not measured in this run", ""] + [f"- {failure}" for failure in failures]
    return "\n".join(lines) + "\n"


def console_line(figure: Figure, raw_figures: dict[str, Figure]) -> str:
    compared = _comparison(figure, raw_figures)
    return f"  {figure.label:<72} {_value(figure):>14}" + (f"   [{compared}]" if compared else "")


# --- the run ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; print only, do not write")
    parser.add_argument("--only", default="", help="comma-separated step name prefixes (implies no write)")
    args = parser.parse_args(argv)
    # Herald's own warnings still reach stderr; INFO from the services would drown the progress bar.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    raw_sizes, herald_sizes = _sizes(args.quick)
    print(f"Herald benchmarks: database {DATABASE_URL}, broker {BROKER_URL}", flush=True)
    if BROKER_URL == DEFAULT_VHOST_URL:
        print(
            "warning: no herald_bench vhost, so the default one is used: do not run the tests meanwhile. "
            f"To isolate the benchmark: {CREATE_VHOST}",
            flush=True,
        )
    try:
        prepare_queues(BROKER_URL)
        ctx = herald_paths.setup()
    except BenchError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # PostgreSQL or RabbitMQ missing: say so plainly
        print(f"cannot run: PostgreSQL and RabbitMQ must be reachable ({type(exc).__name__}: {exc})")
        return 2

    steps = [("templates: render + validate", _templates(2000 if args.quick else 20_000))]
    steps += raw.steps(ctx.ids, raw_sizes)
    steps += herald_paths.steps(ctx, herald_sizes)
    if args.only:
        wanted = tuple(p.strip() for p in args.only.split(","))
        steps = [(name, step) for name, step in steps if name.startswith(wanted)]

    figures: list[Figure] = []
    failures: list[str] = []
    raw_figures: dict[str, Figure] = {}
    with tqdm(total=len(steps), unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            for name, step in steps:
                bar.set_description(name)
                step_started = time.monotonic()
                try:
                    produced = step()
                except Exception as exc:  # one broken path must not hide the others' figures
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    bar.write(f"{name}: FAILED ({type(exc).__name__}: {exc})")
                    produced = []
                figures += produced
                raw_figures.update({f.key: f for f in produced if f.key.startswith("raw.")})
                bar.write(f"{name} ({time.monotonic() - step_started:.1f} s)")
                for figure in produced:
                    bar.write(console_line(figure, raw_figures))
                    if figure.note:
                        bar.write(f"      {figure.note}")
                bar.update(1)
        finally:
            purge_queues(BROKER_URL)

    took = time.monotonic() - started
    about = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "took": f"{took:.0f} s",
        "machine": f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), {_cpu_model()}, "
        f"load average {load_before} before the run and "
        f"{Path('/proc/loadavg').read_text().split()[0]} after (other work on the machine skews every figure)",
        "versions": ", ".join(_versions(ctx)),
        "git": _git(),
        "database": DATABASE_URL.rsplit("/", 1)[-1],
        "broker": BROKER_URL.split("@", 1)[-1],
        "settings": f"db_batch_size {ctx.settings.db_batch_size}, db_batch_linger "
        f"{ctx.settings.db_batch_linger} s, prefetch {ctx.settings.prefetch}",
    }
    ctx.engine.dispose()
    print()
    print(f"{'path':<74} {'figure':>14}   [compared with, this run]")
    for figure in figures:
        print(console_line(figure, {f.key: f for f in figures if f.key.startswith("raw.")}))
    for failure in failures:
        print(f"  not measured: {failure}")
    if args.quick or args.only:
        print(f"\n{took:.0f} s; --quick/--only: {OUTPUT.name} left as it was")
    else:
        OUTPUT.write_text(markdown(figures, about, failures))
        print(f"\n{took:.0f} s; written to {OUTPUT}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
