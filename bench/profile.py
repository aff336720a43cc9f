"""Where a service's CPU goes under load: the stack as `make bench` runs it, a load, and py-spy sampling
one service process from outside (`.venv/bin/pip install py-spy`; it needs ptrace rights on the process).

.venv/bin/python -m bench.profile unary            # ingest under 64 callers of SendSms (research mode)
.venv/bin/python -m bench.profile live             # the send dispatcher under live SendSmsBatch load
.venv/bin/python -m bench.profile batch --process "db dispatcher" --seconds 30
.venv/bin/python -m bench.profile batch-alone    # ingest alone under goal 2's load (no dispatcher running)
.venv/bin/python -m bench.profile email-batch-alone   # the same with SendEmailBatch (goal 2's email figure)

Samples only the thread holding the interpreter lock (--gil): where the Python CPU goes. Prints the ten
frames with the most samples of their own (where the CPU is spent) and the functions present in the most
samples (what the time is spent under); the raw samples stay in .herald/bench-logs for a flame graph.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import BROKER_URL, BenchError, LoadProcess, prepare_queues, purge_queues
from bench.herald_paths import setup, truncate_notifications
from bench.load import sender
from bench.stack import LOGS, Stack
from herald.queues.topology import use_queue_type
from herald.settings import Settings

# scenario -> (the process sampled by default, research mode or live, the feeder's command)
SCENARIOS = {
    "unary": ("ingest", "research", "unary"),
    "batch": ("ingest", "research", "batch"),
    "batch-alone": ("ingest", "research", "batch"),
    "email-batch-alone": ("ingest", "research", "batch"),
    "live": ("send dispatcher", "live", "batch"),
}
# Scenarios run as bench/goals.py's goal 2 does: ingest alone, its backlog thrown away after.
ALONE = {"batch-alone", "email-batch-alone"}
# Scenarios that send SendEmailBatch (to the email template of the same service) rather than SendSmsBatch.
EMAIL = {"email-batch-alone"}
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def top_frames(collapsed: Path, n: int = 10) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's raw (collapsed) output: samples, the frames with most samples of their own, and the
    functions present in most samples (line numbers dropped, so a function is one entry)."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_ = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count_)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            under[frame] += samples
    return total, own.most_common(n), under.most_common(n + 10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--process", help="which service to sample (default: the scenario's)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    process, mode, command = SCENARIOS[args.scenario]
    process = args.process or process
    spy = py_spy()
    use_queue_type(Settings.from_env().queue_type)
    prepare_queues(BROKER_URL)
    ctx = setup()
    d = ctx.demo
    email = args.scenario in EMAIL
    key, template = (
        (d.research_key, d.research_email_template_id if email else d.research_sms_template_id)
        if mode == "research"
        else (d.live_key, d.sms_template_id)
    )
    load: dict[str, Any] = {"api_key": key, "template_id": template, "seconds": args.seconds + 10.0}
    if command == "unary":
        load["callers"] = 64
    elif args.scenario in ALONE:
        load.update(callers=4, size=1000, email=email)
    else:
        load.update(callers=2, size=1000, max_outstanding=4000)
    stack = Stack(ctx.settings.secret_key)
    output = LOGS / f"py-spy-{args.scenario}-{process.replace(' ', '-')}.txt"
    try:
        stack.start_front()
        if args.scenario not in ALONE:
            stack.start_dispatchers()
        if process not in stack.services:
            raise BenchError(f"no process {process!r}; one of {', '.join(stack.services)}")
        feeder = LoadProcess(sender, stack.ingest)
        try:
            feeding = threading.Thread(target=lambda: feeder.ask(command, args.seconds + 310.0, **load), daemon=True)
            feeding.start()
            time.sleep(5.0)  # past the warm-up: pools filled, caches loaded
            print(f"sampling {process} (pid {stack.services[process].pid}) for {args.seconds:.0f} s", flush=True)
            subprocess.run(
                [spy, "record", "--nonblocking", "--gil", "-r", "200", "-d", str(int(args.seconds)), "-f", "raw", "-o",
                 str(output), "--pid", str(stack.services[process].pid)],
                check=True, capture_output=True,
            )  # fmt: skip
            feeding.join(args.seconds + 310.0)
        finally:
            feeder.close()
    finally:
        stack.stop_all()
        purge_queues(BROKER_URL)
        truncate_notifications(ctx.engine)
    total, own, under = top_frames(output)
    print(
        f"\n{process} under {args.scenario} load: {total:,} samples of {args.seconds * 200:,.0f} (200 a second, "
        "of the thread holding the interpreter lock: Python's CPU, not grpcio's C threads)"
    )
    print("\nmost samples of their own (where the CPU goes):")
    for frame, samples in own:
        print(f"  {samples / total:6.1%}  {frame}")
    print("\npresent in most samples (what it goes under):")
    for frame, samples in under:
        print(f"  {samples / total:6.1%}  {frame}")
    print(f"\nraw samples: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
