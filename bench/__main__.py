"""`python -m bench`: the raw limits, Herald's paths and issue 7's goals, in one run, into BENCHMARKS.md.

.venv/bin/python -m bench            # the full run (about ten minutes on 2 cores)
.venv/bin/python -m bench --quick    # small sizes, prints only (under three minutes): checks the harness
.venv/bin/python -m bench --quick --only jobs   # one section (step names' prefixes): issue 8's CSV job
.venv/bin/python -m bench.soak       # `make soak`: ten minutes at a steady load, memory drift per process
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
    BROKER_URL,
    CREATE_VHOST,
    DATABASE_URL,
    DEFAULT_VHOST_URL,
    BenchError,
    Figure,
    goals,
    herald_paths,
    jobs,
    limits,
    prepare_queues,
    purge_queues,
    raw,
    rest,
)
from herald.queues.topology import use_queue_type
from herald.settings import Settings

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
    "raw.grpc_unary": "gRPC echo",
    "raw.grpc_unary_requests": "gRPC echo of its requests",
    "raw.grpc_unary_confirmed": "gRPC echo after a broker confirm",
    "raw.grpc_batch": "gRPC batch servicer",
    "raw.grpc_email_batch": "gRPC email batch servicer",
    "raw.redis_script": "Redis script call",
}
SOAK_HEADING = "## Soak"

READING = """\
## Reading these figures

Every figure is measured in this run, on this machine, against the same PostgreSQL and RabbitMQ, so a
Herald figure is read against the raw figure beside it rather than against a number from elsewhere.
The machine is shared (see the load average above): figures move by 20% or more between runs, raw and
Herald alike, which is one more reason to read them only against each other.

**Goals** (`bench/goals.py`, `bench/stack.py`, `bench/load.py`): Herald as deployed, every service its
own `herald ...` process (ingest; db, send and receipts dispatchers; scheduler; callbacks; the provider
simulator), queues of the default type (quorum), the load from processes of their own with a fresh
token per call. The demo services' rate limit is lifted (Notify's 3,000 a minute would refuse the load).
CPU per message is from /proc for each service process, and for RabbitMQ's and PostgreSQL's processes
(those servers are shared with the team's tests: their figures include whatever else ran on them).

- *goal 2*: 4 callers of 1,000-item SendSmsBatch calls for a fixed time, ingest alone (no dispatcher
  running, so ingest's figure is not shared with the pipeline; the backlog is purged after), then the
  same with SendEmailBatch. Raw limit: the gRPC batch servicer on the same request bytes.
- *goal 1*: 64 callers of SendSms (research mode) with the dispatchers running behind ingest, as the
  issue measured it; its target is a share of the gRPC echo of the same run. Beside it, for half as
  long, the same callers with no dispatcher running: ingest's own ceiling on this machine.
- *goal 3*: two callers of 1,000-item SendSmsBatch calls for the stated time, holding at most three
  seconds of the goal rate accepted but not final (so that the figure is what the pipeline sustains,
  not the size of a backlog); the figure is from the first call until every message is final. Live:
  the send dispatcher hands each SMS to the provider simulator over HTTP, the receipt comes back 50 ms
  later through `Callbacks.ReportDelivery`, sms-callbacks and the receipts dispatcher. At half load the
  calls are 100 items, paced; "handed off" is `sent_at - created_at` of every row (created_at is
  stamped by ingest just before its publish).
- *goal 5*: from a SendSmsBatch answer to its first and last ids' rows seen in PostgreSQL (polled
  every 5 ms by the load process, rather than adding GetNotification calls to the server measured).
- *goal 4*: the provider simulator answers every send 50 ms late; delivered per second over the steady
  three quarters of a live run, with one send-sms dispatcher process, then with a second one started,
  then with one again (the one-dispatcher figure is the mean of the runs before and after).
  The send dispatchers of this phase are sized to 16 hand-offs in flight (HERALD_SEND_CONCURRENCY=16;
  the default is 64), so one is bounded near 320 a second: at 64 one dispatcher's bound (1,280 a second)
  is above what the 2 cores carry for the whole live pipeline, and a second could only show the CPU's limit.
- *goal 6*: VmHWM (peak resident set) of each service process at the end of all the phases above. The
  drift over ten minutes is `make soak`'s (its own section, kept by `make bench`).
- *goal 10* (issue 10, `bench/rest.py`, `--only rest`): ingest and the REST gateway each a process, no
  dispatcher; 64 callers of `POST /v2/notifications/sms` (one keep-alive HTTP/1.1 connection each, a
  fresh token per call) beside 64 callers of gRPC SendSms straight to ingest, in alternating rounds,
  medians of the rounds. At 64 callers the p50 is mostly queueing (callers / calls a second), so the
  latency the gateway itself adds is also shown with one caller.

**Raw limits** (`bench/raw.py`): what the libraries Herald uses can do with no Herald code in the way.
Publishes go through Herald's exchange to `db-sms` with Herald's message body; rows are Herald's
`notifications` rows into the real table (and into a bare table with only a primary key); the gRPC
echo is a bytes-in-bytes-out servicer on Herald's own `Server` (sync, 32 threads, Herald's interceptor)
in its own process, with the callers in another. Goal 1's reference is the echo of 64 bytes with no
metadata, as the issue measured it; beside it, the same echo of what goal 1's callers send (a SendSmsRequest
and a token signed per call), which tells how much of the gap is the requests' own weight, and that echo
answering only once the broker has confirmed the request (published as ingest publishes, through
Herald's PublisherThread, and nothing else): the ceiling, in this server shape on this machine, of any
servicer that answers after a durable hand-off, which goal 1 asks for.

**Herald's components** (`bench/herald_paths.py`, full run only): `ConfirmingPublisher.publish_batch`,
`PublisherThread` under 64 threads, the db dispatcher draining a pre-filled `db-sms` (100
notifications per broker message, as ingest packs them), and CPU per use case on one thread.
"""


def _sizes(quick: bool) -> tuple[raw.Sizes, herald_paths.Sizes, goals.Sizes]:
    if not quick:
        return raw.Sizes(), herald_paths.Sizes(), goals.Sizes()
    return (
        raw.Sizes(
            publish=2000,
            confirm_each=300,
            pg_row_commit=300,
            pg_batch=3000,
            pg_executemany=1000,
            grpc_calls=1280,
            batch_calls=20,
            repeats=1,
        ),
        herald_paths.Sizes(),
        goals.QUICK,
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
            "intl_phone_us": "international number validation and billing",
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
    if figure.unit in ("ms", "µs", "%", "MB"):
        return f"{figure.value:,.1f} {figure.unit}"
    if figure.unit == "×":
        return f"{figure.value:.2f}×"
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


def _ratio(figure: Figure, raw_figures: dict[str, Figure]) -> tuple[float | None, str]:
    """The figure as a share of the first raw figure it names, and that raw figure, for the goals table."""
    for key in figure.compare:
        base = raw_figures.get(key)
        if base is not None and base.value:
            return figure.value / base.value, f"{SHORT.get(key, key)}: {_value(base)}"
    return None, "-"


def _target(figure: Figure) -> str:
    if figure.target is None:
        return "-"
    if figure.target_is_ratio:
        return f"≥ {figure.target:.0%} of the raw limit"
    sign = "≤" if figure.at_most else "≥"
    return f"{sign} {figure.target:,.{1 if figure.unit == '×' else 0}f} {figure.unit}"


def goal_rows(figures: list[Figure], raw_figures: dict[str, Figure]) -> list[list[str]]:
    rows = []
    # By goal number (1. before 2.), each goal's rows in the order they were measured.
    for f in sorted((f for f in figures if f.goal), key=lambda f: f.goal.split(".", 1)[0]):
        ratio, base = _ratio(f, raw_figures)
        met = f.met(ratio)
        rows.append(
            [
                f.goal,
                _value(f),
                f"{ratio:.0%}" if ratio is not None else "-",
                base,
                _target(f),
                {True: "met", False: "**not met**", None: "-"}[met],
            ]
        )
    return rows


def _kept_soak() -> list[str]:
    """The soak's section of the current BENCHMARKS.md (written by `make soak`), kept as it is."""
    if not OUTPUT.exists():
        return []
    text_ = OUTPUT.read_text()
    start = text_.find(f"\n{SOAK_HEADING}")
    if start < 0:
        return []
    end = text_.find("\n## ", start + 1)
    return ["", *text_[start + 1 : end if end > 0 else None].rstrip("\n").splitlines()]


def markdown(figures: list[Figure], about: dict[str, str], failures: list[str]) -> str:
    raw_figures = {f.key: f for f in figures if f.key.startswith("raw.")}
    lines = [
        "# Herald benchmarks",
        "",
        f"Generated by `{'python -m bench --quick --write' if about.get('quick') else 'make bench'}` on "
        f"{about['date']}; the run took "
        f"{about['took']}. Rewritten by every run (the soak section by `make soak`): edit `bench/`, not "
        "this file.",
        "",
        *(
            [
                "**A quick run (`--quick --write`)**: every phase far shorter than the issue asks (end to end for",
                f"{about.get('quick')} s, not 60), raw figures from one run each, Herald's components not measured.",
                "Read it for the shape only; `make bench` writes the real figures.",
                "",
            ]
            if about.get("quick")
            else []
        ),
        f"- Machine: {about['machine']}",
        f"- Versions: {about['versions']}",
        f"- Herald: {about['git']}; settings {about['settings']}",
        f"- Services: PostgreSQL database `{about['database']}`, RabbitMQ `{about['broker']}`",
        "",
        "## Issue 7's goals (this run)",
        "",
    ]
    lines += _table(
        ["goal", "this run", "ratio", "raw limit (this run)", "target", ""], goal_rows(figures, raw_figures)
    )
    lines += ["", READING, "## Goals in detail (this run)", ""]
    lines += _table(
        ["path", "figure", "compared with (this run)", "n", "note"],
        [
            [f.label, _value(f), _comparison(f, raw_figures), f"{f.count:,}" if f.count else "-", f.note]
            for f in figures
            if f.key.startswith("goal.")
        ],
    )
    lines += ["", "## Raw limits (this run)", ""]
    lines += _table(
        ["path", "this run", "runs", "n", "note"],
        [[f.label, _value(f), _runs(f), f"{f.count:,}", f.note] for f in figures if f.key.startswith("raw.")],
    )
    component_rows = [f for f in figures if f.key.startswith("herald.")]
    if component_rows:
        lines += ["", "## Herald's components (this run)", ""]
        lines += _table(
            ["path", "figure", "compared with (this run)", "n", "note"],
            [[f.label, _value(f), _comparison(f, raw_figures), f"{f.count:,}", f.note] for f in component_rows],
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
    sections = (
        ("limits.", "Issue 9: what the rate and daily limits cost (bench/limits.py)", limits.READING),
        ("jobs.", "Issue 8: a 100,000-row CSV job beside single sends (bench/jobs.py)", jobs.READING),
    )
    for prefix, title, reading in sections:
        section_rows = [f for f in figures if f.key.startswith(prefix)]
        if not section_rows:
            continue
        lines += ["", f"## {title}", "", reading]
        lines += _table(
            ["path", "figure", "compared with (this run)", "target", "", "n", "note"],
            [
                [
                    f.label,
                    _value(f),
                    _comparison(f, raw_figures),
                    _target(f),
                    {True: "met", False: "**not met**", None: ""}[f.met(None)],
                    f"{f.count:,}",
                    f.note,
                ]
                for f in section_rows
            ],
        )
    if failures:
        lines += ["", "## Not measured in this run", ""] + [f"- {failure}" for failure in failures]
    lines += _kept_soak()
    return "\n".join(lines) + "\n"


def console_line(figure: Figure, raw_figures: dict[str, Figure]) -> str:
    compared = _comparison(figure, raw_figures)
    return f"  {figure.label:<72} {_value(figure):>14}" + (f"   [{compared}]" if compared else "")


# --- the run ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; print only, do not write")
    parser.add_argument("--only", default="", help="comma-separated step name prefixes (implies no write)")
    parser.add_argument(
        "--write", action="store_true", help="with --quick: write BENCHMARKS.md anyway, labelled as a quick run"
    )
    args = parser.parse_args(argv)
    # Herald's own warnings still reach stderr; INFO from the services would drown the progress bar.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    raw_sizes, herald_sizes, goal_sizes = _sizes(args.quick)
    print(f"Herald benchmarks: database {DATABASE_URL}, broker {BROKER_URL}", flush=True)
    if BROKER_URL == DEFAULT_VHOST_URL:
        print(
            "warning: no herald_bench vhost, so the default one is used: do not run the tests meanwhile. "
            f"To isolate the benchmark: {CREATE_VHOST}",
            flush=True,
        )
    try:
        use_queue_type(Settings.from_env().queue_type)  # as the services will declare them
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
    if not args.quick:
        steps += herald_paths.steps(ctx, herald_sizes)
    failures: list[str] = []
    # Before the job's section: 100,000 rows leave the database and broker busy for a while after.
    rest_sizes = rest.QUICK if args.quick else rest.Sizes()
    steps += [("rest: the gateway beside gRPC", lambda: rest.measure(ctx, rest_sizes, tqdm.write))]
    limit_sizes = limits.QUICK if args.quick else limits.Sizes()
    steps += [("limits: what the rate and daily limits cost", lambda: limits.measure(ctx, limit_sizes, tqdm.write))]
    job_sizes = jobs.QUICK if args.quick else jobs.Sizes()
    steps += [("jobs: a CSV job beside single sends", lambda: jobs.measure(ctx, job_sizes, tqdm.write))]
    steps += [("goals: Herald as deployed", lambda: goals.measure(ctx, goal_sizes, tqdm.write, failures))]
    if args.only:
        wanted = tuple(p.strip() for p in args.only.split(","))
        steps = [(name, step) for name, step in steps if name.startswith(wanted)]

    figures: list[Figure] = []
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
        f"{ctx.settings.db_batch_linger} s, prefetch {ctx.settings.prefetch}, send_concurrency "
        f"{ctx.settings.send_concurrency}, queue_type {ctx.settings.queue_type}",
    }
    ctx.engine.dispose()
    print()
    print(f"{'path':<74} {'figure':>14}   [compared with, this run]")
    for figure in figures:
        print(console_line(figure, {f.key: f for f in figures if f.key.startswith("raw.")}))
    for failure in failures:
        print(f"  not measured: {failure}")
    rows = goal_rows(figures, {f.key: f for f in figures if f.key.startswith("raw.")})
    if rows:
        print(f"\n{'issue 7 goal':<72} {'this run':>12} {'ratio':>6}  {'target':<26} verdict")
        for goal, value, ratio, _base, target, met in rows:
            print(f"  {goal:<70} {value:>12} {ratio:>6}  {target:<26} {met.strip('*')}")
    if args.only or (args.quick and not args.write):
        print(f"\n{took:.0f} s; --quick/--only: {OUTPUT.name} left as it was")
    else:
        about["quick"] = f"{goal_sizes.e2e_seconds:.0f}" if args.quick else ""
        OUTPUT.write_text(markdown(figures, about, failures))
        print(f"\n{took:.0f} s; written to {OUTPUT}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
