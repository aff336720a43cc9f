"""`make soak`: Herald as deployed (every service its own process) under a steady live load for ten
minutes; the resident set of every service process sampled every 10 s, the start and end figures and
the drift written to BENCHMARKS.md's soak section (issue 7, goal 6).

.venv/bin/python -m bench.soak                 # ten minutes, written to BENCHMARKS.md
.venv/bin/python -m bench.soak --minutes 1 --print-only
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench import BROKER_URL, BenchError, LoadProcess, prepare_queues, purge_queues, rate
from bench.goals import count, wait_final
from bench.herald_paths import setup, truncate_notifications
from bench.load import FINAL, sender
from bench.stack import Stack
from herald.queues.topology import use_queue_type
from herald.settings import Settings

OUTPUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADING = "## Soak"
SAMPLE_SECONDS = 10.0
# Memory grows while pools, caches and the interpreter warm up; drift is measured from this point.
WARM_SECONDS = 60.0


def drift_rows(samples: list[tuple[float, dict[str, float]]]) -> list[list[str]]:
    """Per process: RSS at the first sample after the warm-up, at the end, the peak, and the drift."""
    warm = next((s for at, s in samples if at >= WARM_SECONDS), samples[0][1])
    end = samples[-1][1]
    rows = []
    for name in sorted(end):
        start, last = warm.get(name, 0.0), end[name]
        peak = max(s.get(name, 0.0) for _, s in samples)
        drift = (last - start) / start * 100 if start else 0.0
        verdict = "flat" if abs(drift) <= 10 else "**drifts**"
        if name == "provider-sim":  # MMG's, Firetext's and SES's stand-in keeps every reference it de-duplicates
            verdict += " (test double, not deployed)"
        rows.append([name, f"{start:,.1f} MB", f"{last:,.1f} MB", f"{peak:,.1f} MB", f"{drift:+.1f}%", verdict])
    return rows


def section(about: dict[str, str], rows: list[list[str]], samples: list[tuple[float, dict[str, float]]]) -> str:
    lines = [
        HEADING,
        "",
        f"`make soak` (`.venv/bin/python -m bench.soak`) on {about['date']}: {about['load']}. Every service its "
        f"own process; RSS (VmRSS) of each sampled every {SAMPLE_SECONDS:.0f} s; *start* is the first sample "
        f"after {WARM_SECONDS:.0f} s (pools and caches warm), *end* the last one while the load ran. Goal 6: "
        "within 10% (flat) and under 150 MB.",
        "",
        "| process | start | end | peak | drift | |",
        "|---|---|---|---|---|---|",
        *["| " + " | ".join(row) + " |" for row in rows],
        "",
        "RSS in MB per minute (the sample nearest each minute):",
        "",
    ]
    names = sorted(samples[-1][1])
    minutes = [s for i, s in enumerate(samples) if i == 0 or int(s[0] // 60) != int(samples[i - 1][0] // 60)]
    lines += ["| s | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {at:.0f} | " + " | ".join(f"{s.get(n, 0.0):.1f}" for n in names) + " |" for at, s in minutes]
    return "\n".join(lines) + "\n"


def write_section(text_: str) -> None:
    current = OUTPUT.read_text() if OUTPUT.exists() else "# Herald benchmarks\n"
    start = current.find(f"\n{HEADING}")
    if start < 0:
        OUTPUT.write_text(current.rstrip("\n") + "\n\n" + text_)
        return
    end = current.find("\n## ", start + 1)
    rest = current[end:] if end > 0 else ""
    OUTPUT.write_text(current[: start + 1] + text_ + rest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=500.0, help="live SMS a second (half issue 7's live goal)")
    parser.add_argument("--print-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    use_queue_type(Settings.from_env().queue_type)
    try:
        prepare_queues(BROKER_URL)
        ctx = setup()
    except BenchError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    seconds = args.minutes * 60
    stack = Stack(ctx.settings.secret_key)
    samples: list[tuple[float, dict[str, float]]] = []
    outcome: dict[str, Any] = {}
    try:
        print("starting every service", flush=True)
        stack.start_front()
        stack.start_dispatchers()
        feeder = LoadProcess(sender, stack.ingest)
        try:

            def feed() -> None:
                try:
                    outcome.update(
                        feeder.ask(
                            "batch",
                            seconds + 300.0,
                            api_key=ctx.demo.live_key,
                            template_id=ctx.demo.sms_template_id,
                            seconds=seconds,
                            callers=4,
                            size=100,
                            per_second=args.rate,
                            # If the pipeline cannot keep up, the backlog stays bounded: the soak measures
                            # memory under load, not the size of a queue it would take minutes to drain.
                            max_outstanding=int(args.rate * 4),
                        )
                    )
                except BenchError as exc:
                    outcome["error"] = str(exc)

            feeding = threading.Thread(target=feed, daemon=True)
            started = time.monotonic()
            feeding.start()
            with tqdm(
                total=round(seconds), unit="s", desc=f"soak, {args.rate:,.0f} live SMS/s", file=sys.stderr
            ) as bar:
                while feeding.is_alive():
                    at = time.monotonic() - started
                    stack.check_alive()
                    samples.append((at, {name: s.rss_mb() for name, s in stack.services.items()}))
                    bar.n = min(round(at), bar.total)
                    bar.set_postfix_str(f"final {count(ctx.engine, FINAL):,}")
                    feeding.join(SAMPLE_SECONDS)
            if "error" in outcome:
                raise BenchError(outcome["error"])
            final_at = wait_final(ctx.engine, int(outcome["accepted"]), 600.0)
        finally:
            feeder.close()
    finally:
        stack.stop_all()
        purge_queues(BROKER_URL)
        truncate_notifications(ctx.engine)
    accepted = int(outcome["accepted"])
    about = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{args.minutes:g} minutes of live SMS paced at up to {args.rate:,.0f} a second through "
        f"SendSmsBatch (100-item calls, at most 4 s of that rate accepted and not final); {accepted:,} "
        f"accepted, all final {final_at - outcome['begun']:.0f} s after the first "
        f"call ({rate(accepted, final_at - outcome['begun']):,.0f} msg/s), "
        f"{outcome['failed_items']:,} refused; load average {Path('/proc/loadavg').read_text().split()[0]} at the end",
    }
    text_ = section(about, drift_rows(samples), samples)
    print()
    print(text_)
    if not args.print_only:
        write_section(text_)
        print(f"written to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
