"""`python -m chaos` (`make chaos`): Herald under faults, on a PostgreSQL and a RabbitMQ node of its own.

.venv/bin/python -m chaos                      # every scenario, full length, then 20,000 fuzzed requests (7-10 min)
.venv/bin/python -m chaos --quick              # short faults and 2,000 fuzzed requests: checks the harness
.venv/bin/python -m chaos --scenario postgres  # one scenario (repeat the option for more; "fuzz" too)
.venv/bin/python -m chaos --scenario fuzz --seed 7   # replay a fuzz run
.venv/bin/python -m chaos --scenario fuzz --seed 7 --fuzz-case 1234   # replay one case of it

Exits 1 if any accepted message was lost, left stuck or handed to the provider twice, if a refused send
was stored anyway, or if the fuzzer got INTERNAL/UNKNOWN, an unhealthy service or an unstored send.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from sqlalchemy import create_engine

from chaos.cluster import ADMIN_SECRET, Cluster
from chaos.fuzz import FuzzReport, run_fuzz, seeds_for
from chaos.infra import OwnPostgres, OwnRabbitMQ
from chaos.scenarios import CLUSTER_SETTINGS, SCENARIOS, Context, run
from chaos.verdict import Row
from herald.settings import Settings

FUZZ = "fuzz"


def _table(rows: list[Row]) -> str:
    head = ("scenario", "attempts", "accepted", "delivered", "other final", "stuck", "lost", "duplicate hand-offs",
            "refused yet stored", "callers' answers", "seconds")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        other = ", ".join(f"{s} {n}" for s, n in r.other_final.most_common()) or "0"
        stuck = ", ".join(f"{s} {n}" for s, n in r.stuck.most_common()) or "0"
        answers = ", ".join(f"{c} {n}" for c, n in r.codes.most_common())
        refused = ", ".join(f"{n} ({c})" for c, n in r.refused_stored.most_common()) or "0"
        cells = (r.scenario, r.attempts, r.accepted, r.delivered, other, stuck, r.lost, r.duplicated, refused,
                 answers, f"{r.seconds:.0f}")  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _missing_settings() -> list[str]:
    """The HERALD_* settings the harness relies on that this version of Herald does not read."""
    known = {f"HERALD_{f.name.upper()}" for f in fields(Settings)}
    return sorted(name for name in CLUSTER_SETTINGS if name not in known)


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if result.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, FUZZ], help="run only these")
    parser.add_argument("--quick", action="store_true", help="short faults, fewer fuzzed requests")
    parser.add_argument("--seed", type=int, default=None, help="fuzz and fault seed (printed; default: random)")
    parser.add_argument("--fuzz-requests", type=int, default=None, help="default 20,000 (2,000 with --quick)")
    parser.add_argument("--fuzz-case", type=int, action="append", default=[],
                        help="replay only this case of --seed (repeatable)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=50.0, help="sends per second during the scenarios")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data and logs)")
    args = parser.parse_args(argv)
    chosen = args.scenario or [*SCENARIOS, FUZZ]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    fuzz_requests = args.fuzz_requests or (2_000 if args.quick else 20_000)

    workdir = Path(tempfile.mkdtemp(prefix="herald-chaos-"))
    workdir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    print(f"chaos: seed {seed}, commit {_commit()}, work directory {workdir}", flush=True)
    for name in _missing_settings():
        print(f"chaos: note: this Herald does not read {name}; the scenario that needs it may fail", flush=True)

    postgres, rabbitmq = OwnPostgres(workdir), OwnRabbitMQ(workdir)
    cluster: Cluster | None = None
    rows: list[Row] = []
    fuzz_report: FuzzReport | None = None
    failed = True
    try:
        print("chaos: starting PostgreSQL and RabbitMQ of our own ...", flush=True)
        postgres.init()
        rabbitmq.init()
        database_url = postgres.url("herald_chaos")
        cluster = Cluster(database_url, rabbitmq.url, workdir / "logs", settings=CLUSTER_SETTINGS)
        print("chaos: starting Herald, every service its own process ...", flush=True)
        cluster.start()
        for note in cluster.notes:
            print(f"chaos: note: {note}", flush=True)
        engine = create_engine(database_url, pool_pre_ping=True)
        ctx = Context(postgres, rabbitmq, cluster, engine, args.quick, random.Random(seed), args.rate)
        for name in chosen:
            if name == FUZZ:
                continue
            print(f"chaos: scenario {name} ...", flush=True)
            row = run(ctx, SCENARIOS[name])
            rows.append(row)
            print(_table([row]).splitlines()[-1], flush=True)
            for problem in row.problems:
                print(f"  problem: {problem}", flush=True)
        if FUZZ in chosen:
            demo = cluster.demo(f"fuzz-{seed}-{os.getpid()}")
            seeds = seeds_for(cluster, demo, ADMIN_SECRET)
            fuzz_report = run_fuzz(cluster, engine, seeds, seed, fuzz_requests, only=args.fuzz_case)
        engine.dispose()
        failed = any(r.failed for r in rows) or (fuzz_report is not None and fuzz_report.failed)
    finally:
        if cluster is not None:
            cluster.stop()
        rabbitmq.destroy()
        postgres.destroy()
        if args.keep or failed:
            print(f"chaos: logs and data kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nchaos run, commit {_commit()}, seed {seed}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
          f"{' (--quick)' if args.quick else ''}\n")  # fmt: skip
    if rows:
        print(_table(rows))
        for row in rows:
            for problem in row.problems:
                print(f"{row.scenario}: {problem}")
            if row.rerequested:
                print(f"{row.scenario}: {row.rerequested} reference(s) sent to the provider again (re-drives, "
                      f"retries); {row.redriven} repeat(s) answered from the simulator's de-duplication")  # fmt: skip
    if fuzz_report is not None:
        print("\n" + fuzz_report.summary())
    print("\nchaos: FAILED" if failed else "\nchaos: passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
