"""Issue 7's goals, measured on Herald as it is deployed: every service its own `herald ...` process
(bench/stack.py), load from processes of their own (bench/load.py), read against the raw limits that
bench/raw.py measured earlier in the same run.

One stack serves every phase, in this order: (2) SendSmsBatch and then SendEmailBatch accepted, with no
dispatcher running so that ingest alone is measured and each backlog is thrown away after; then the
dispatchers start and (1) unary SendSms accepted, with the unary-fed end to end from the same calls;
(3) end to end fed by the batch RPC, research mode and live, at full load and at half load (with (5)
the accepted-to-stored window at half load); (4) one and then two send-sms dispatchers against a
provider answering in 50 ms; (6) the peak RSS every service process reached over all of it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from tqdm import tqdm

from bench import BROKER_URL, BenchError, Figure, LoadProcess, percentile, purge_queues, queue_depths, rate
from bench.herald_paths import Context, truncate_notifications
from bench.load import FINAL, sender
from bench.stack import Stack
from herald.queues.topology import DB_QUEUE
from herald.v1.notifications_pb2 import NotificationType

# Goal 4's send dispatchers are sized to this many hand-offs in flight (HERALD_SEND_CONCURRENCY; the
# default is 64): at 64 and 50 ms one dispatcher's bound is 1,280 msg/s, above what two cores carry for
# the whole pipeline, so a second one could only show the CPU's limit, not the dispatcher's.
SEND_CONCURRENCY = 16
PROVIDER_LATENCY = 0.05
RSS_LIMIT_MB = 150.0


@dataclass(frozen=True, slots=True)
class Sizes:
    batch_seconds: float = 10.0
    batch_callers: int = 4
    batch_size: int = 1_000
    unary_seconds: float = 20.0
    unary_callers: int = 64
    e2e_seconds: float = 60.0
    half_seconds: float = 30.0
    half_batch: int = 100  # half load is paced in calls of this size: 10 a second at 1,000 messages/s
    scale_seconds: float = 20.0
    window_samples: int = 200
    research_goal: float = 2_000.0
    live_goal: float = 1_000.0
    # Accepted but not final that the full-load feeder allows, in seconds of the goal rate: enough
    # to keep every stage busy, bounded so that the run measures the pipeline rather than a backlog.
    backlog_seconds: float = 3.0


QUICK = Sizes(
    batch_seconds=3.0,
    unary_seconds=4.0,
    e2e_seconds=6.0,
    half_seconds=4.0,
    scale_seconds=5.0,
    window_samples=40,
    backlog_seconds=1.5,
)

Say = Callable[[str], None]


def count(engine: Engine, statuses: list[str] | None = None) -> int:
    with engine.connect() as conn:
        if statuses is None:
            return int(conn.scalar(text("SELECT count(*) FROM notifications")) or 0)
        query = text("SELECT count(*) FROM notifications WHERE status = ANY(:s)")
        return int(conn.scalar(query, {"s": statuses}) or 0)


def wait_final(engine: Engine, expected: int, timeout: float) -> float:
    """Polls until `expected` notifications are final; returns when they were (monotonic)."""
    deadline = time.monotonic() + timeout
    with tqdm(total=expected, unit="msg", desc="  until final", leave=False, file=sys.stderr, disable=None) as bar:
        while time.monotonic() < deadline:
            final = count(engine, FINAL)
            bar.n = min(final, expected)
            bar.refresh()
            if final >= expected:
                return time.monotonic()
            time.sleep(0.2)  # each poll is a count over the growing table: kept rare
    raise BenchError(f"{count(engine, FINAL):,} of {expected:,} final after {timeout:.0f} s")


def handoffs(engine: Engine) -> dict[str, float]:
    """Acceptance (created_at, stamped by ingest before its publish) to hand-off (sent_at, the claim)."""
    query = text(
        "SELECT count(*) FILTER (WHERE sent_at <= created_at + interval '1 second'), count(sent_at), "
        "percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at)) "
        "FROM notifications WHERE sent_at IS NOT NULL"
    )
    with engine.connect() as conn:
        within, total, (p50, p99) = conn.execute(query).one()
    return {"share": within / total if total else 0.0, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000}


def cpu_note(before: dict[str, float], after: dict[str, float], messages: int) -> str:
    """CPU per message by process, in ms, the busiest first."""
    used = {name: after[name] - before.get(name, after[name]) for name in after}
    parts = sorted(((v / max(messages, 1) * 1000, k) for k, v in used.items() if v > 0), reverse=True)
    return "CPU per message: " + ", ".join(f"{k} {ms:.2f} ms" for ms, k in parts if ms >= 0.005)


class Goals:
    def __init__(self, ctx: Context, sizes: Sizes, say: Say) -> None:
        self.ctx = ctx
        self.sizes = sizes
        self.say = say
        self.stack = Stack(ctx.settings.secret_key)
        self.figures: list[Figure] = []
        self.failures: list[str] = []
        self.started = time.monotonic()

    def _say(self, what: str) -> None:
        self.say(f"  [{time.monotonic() - self.started:5.0f} s] {what}")

    # --- the phases -----------------------------------------------------------------------------

    def run(self) -> list[Figure]:
        purge_queues(BROKER_URL)
        truncate_notifications(self.ctx.engine)
        self._say("starting the provider simulator, callbacks, the scheduler and ingest")
        self.stack.start_front()
        self.feeder = LoadProcess(sender, self.stack.ingest)
        d, s = self.ctx.demo, self.sizes
        try:
            # What goals 2 and 1 accept with no dispatcher running is never to be delivered: each of these
            # phases starts on an empty broker.
            self._phase("goal 2", self.batch_accepted)
            purge_queues(BROKER_URL)
            self._phase("goal 2, email", lambda: self.batch_accepted(email=True))
            purge_queues(BROKER_URL)
            self._phase("goal 1, ingest alone", self.unary_alone)
            purge_queues(BROKER_URL)
            truncate_notifications(self.ctx.engine)
            self._say("starting the db, send and receipts dispatchers")
            self.stack.start_dispatchers()
            self._phase("goal 1", self.unary)
            self._phase(
                "goal 3, research mode",
                lambda: self.end_to_end("research mode", d.research_key, d.research_sms_template_id, s.research_goal),
            )
            self._phase("goal 3, live", lambda: self.end_to_end("live", d.live_key, d.sms_template_id, s.live_goal))
            self._phase(
                "goals 3 and 5, research mode at half load",
                lambda: self.half_load(
                    "research mode", d.research_key, d.research_sms_template_id, s.research_goal / 2
                ),
            )
            self._phase(
                "goal 3, live at half load",
                lambda: self.half_load("live", d.live_key, d.sms_template_id, s.live_goal / 2),
            )
            self._phase("goal 4", self.scaling)
            self.memory()
        finally:
            self.feeder.close()
            self.stack.stop_all()
            purge_queues(BROKER_URL)
            truncate_notifications(self.ctx.engine)
        return self.figures

    def _phase(self, name: str, run: Callable[[], None]) -> None:
        """One phase; a failure is reported and the next phase still runs (the stack is shared, so a
        phase that died midway may leave a backlog: its successors truncate and wait for their own)."""
        try:
            run()
        except Exception as exc:
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            self._say(f"{name}: FAILED ({type(exc).__name__}: {exc})")
            purge_queues(BROKER_URL)

    def _ask(self, command: str, seconds: float, **arguments: Any) -> dict[str, Any]:
        """The feeder's answer, with a bar counting the seconds meanwhile."""
        answer: dict[str, Any] = {}

        def ask() -> None:
            try:
                answer["result"] = self.feeder.ask(command, seconds + 300.0, seconds=seconds, **arguments)
            except BaseException as exc:  # handed to the waiting thread below
                answer["error"] = exc

        asking = threading.Thread(target=ask, daemon=True)
        started = time.monotonic()
        asking.start()
        with tqdm(
            total=round(seconds), unit="s", desc=f"  {command} load", leave=False, file=sys.stderr, disable=None
        ) as bar:
            while asking.is_alive():
                asking.join(0.5)
                bar.n = min(round(time.monotonic() - started), bar.total)
                bar.refresh()
        if "error" in answer:
            raise answer["error"]
        result: dict[str, Any] = answer["result"]
        return result

    def batch_accepted(self, email: bool = False) -> None:
        """SendSmsBatch (or SendEmailBatch) to the research-mode service, ingest alone."""
        s, d = self.sizes, self.ctx.demo
        rpc, template_id = (
            ("SendEmailBatch", d.research_email_template_id) if email else ("SendSmsBatch", d.research_sms_template_id)
        )
        self._say(f"goal 2: {rpc}, {s.batch_size:,}-item calls from {s.batch_callers} callers, ingest alone")
        self._ask("batch", 1.0, api_key=d.research_key, template_id=template_id, callers=1, size=s.batch_size,
                  email=email)  # fmt: skip
        before = self.stack.cpu()
        r = self._ask(
            "batch",
            s.batch_seconds,
            api_key=d.research_key,
            template_id=template_id,
            callers=s.batch_callers,
            size=s.batch_size,
            email=email,
        )
        after = self.stack.cpu()
        accepted = int(r["accepted"])
        queue = DB_QUEUE[NotificationType.EMAIL if email else NotificationType.SMS]
        held = queue_depths(BROKER_URL)[queue][0]
        self.figures.append(
            Figure(
                "goal.email_batch_accepted" if email else "goal.batch_accepted",
                f"{rpc} accepted, {s.batch_size:,}-item calls, {s.batch_callers} callers",
                rate(accepted, r["ended"] - r["begun"]),
                "msg/s",
                accepted,
                compare=("raw.grpc_email_batch" if email else "raw.grpc_batch", "raw.publish", "raw.pg_copy"),
                note=f"{r['calls']:,} calls, p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms per call; "
                f"{held:,} broker messages held on {queue} (no dispatcher ran); {_failures(r)}"
                + cpu_note(before, after, accepted),
                goal=f"2. {rpc}, messages accepted per second",
                target=30_000.0,
            )
        )

    def unary_alone(self) -> None:
        """Goal 1's load with no dispatcher running: ingest's own ceiling, not shared with the pipeline."""
        s, d = self.sizes, self.ctx.demo
        seconds = s.unary_seconds / 2
        self._say(f"goal 1: unary SendSms from {s.unary_callers} callers for {seconds:.0f} s, ingest alone")
        before = self.stack.cpu()
        r = self._ask(
            "unary", seconds, api_key=d.research_key, template_id=d.research_sms_template_id, callers=s.unary_callers
        )
        after = self.stack.cpu()
        accepted = int(r["accepted"])
        self.figures.append(
            Figure(
                "goal.unary_alone",
                f"SendSms accepted, {s.unary_callers} callers, ingest alone (no dispatcher running)",
                rate(accepted, r["ended"] - r["begun"]),
                "calls/s",
                accepted,
                compare=("raw.grpc_unary", "raw.grpc_unary_requests", "raw.grpc_unary_confirmed"),
                note=f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; "
                + _failures(r)
                + cpu_note(before, after, accepted),
                goal="1. Unary SendSms accepted, ingest alone (for comparison)",
            )
        )

    def unary(self) -> None:
        s, d = self.sizes, self.ctx.demo
        self._say(f"goal 1: unary SendSms from {s.unary_callers} callers for {s.unary_seconds:.0f} s, research mode")
        warm = self._ask("unary", 1.0, api_key=d.research_key, template_id=d.research_sms_template_id, callers=8)
        wait_final(self.ctx.engine, int(warm["accepted"]), 60.0)
        truncate_notifications(self.ctx.engine)
        before = self.stack.cpu()
        r = self._ask(
            "unary",
            s.unary_seconds,
            api_key=d.research_key,
            template_id=d.research_sms_template_id,
            callers=s.unary_callers,
        )
        accepted = int(r["accepted"])
        final_at = wait_final(self.ctx.engine, accepted, 120.0 + s.unary_seconds)
        after = self.stack.cpu()
        self.figures += [
            Figure(
                "goal.unary_accepted",
                f"SendSms accepted, {s.unary_callers} callers, a fresh token per call",
                rate(accepted, r["ended"] - r["begun"]),
                "calls/s",
                accepted,
                compare=("raw.grpc_unary", "raw.grpc_unary_requests", "raw.grpc_unary_confirmed"),
                note=f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; the dispatchers ran behind it; "
                + _failures(r)
                + cpu_note(before, after, accepted),
                goal="1. Unary SendSms accepted, share of the gRPC echo",
                target=0.75,
                target_is_ratio=True,
            ),
            Figure(
                "goal.unary_vs_confirmed",
                "SendSms accepted, read against the echo that answers after a broker confirm",
                rate(accepted, r["ended"] - r["begun"]),
                "calls/s",
                accepted,
                compare=("raw.grpc_unary_confirmed",),
                note="goal 1's figure again: how much of the durable hand-off's own ceiling ingest keeps",
                goal="1. Unary SendSms accepted, share of the confirmed echo (for comparison)",
            ),
            Figure(
                "goal.e2e_unary",
                "end to end fed by unary SendSms, research mode",
                rate(accepted, final_at - r["begun"]),
                "msg/s",
                accepted,
                compare=("raw.grpc_unary",),
                note=f"from the first call until all {accepted:,} were final; the same calls as goal 1",
                goal="3. End to end, research mode, fed by unary calls (for comparison)",
            ),
        ]

    def end_to_end(self, mode: str, api_key: str, template_id: str, goal: float) -> None:
        s = self.sizes
        backlog = int(goal * s.backlog_seconds)
        self._say(
            f"goal 3: end to end, {mode}, {s.batch_size:,}-item SendSmsBatch calls for {s.e2e_seconds:.0f} s "
            f"(at most {backlog:,} accepted and not final)"
        )
        truncate_notifications(self.ctx.engine)
        self.stack.sim_reset()
        before = self.stack.cpu()
        r = self._ask(
            "batch",
            s.e2e_seconds,
            api_key=api_key,
            template_id=template_id,
            callers=2,
            size=s.batch_size,
            max_outstanding=backlog,
        )
        accepted = int(r["accepted"])
        behind = accepted - count(self.ctx.engine, FINAL)
        final_at = wait_final(self.ctx.engine, accepted, 300.0)
        after = self.stack.cpu()
        delivered = count(self.ctx.engine, ["delivered"])
        self.stack.check_alive()
        key = mode.split()[0]
        self.figures.append(
            Figure(
                f"goal.e2e_{key}",
                f"end to end, {mode}, fed by SendSmsBatch",
                rate(accepted, final_at - r["begun"]),
                "msg/s",
                accepted,
                compare=("raw.pg_multirow", "raw.consume"),
                note=f"from the first call until all {accepted:,} were final ({delivered:,} delivered), fed for "
                f"{r['ended'] - r['begun']:.0f} s; {behind:,} not final when the feeding stopped; "
                + _failures(r)
                + cpu_note(before, after, accepted),
                goal=f"3. End to end, {mode}, fed by SendSmsBatch (≥ {s.e2e_seconds:.0f} s)",
                target=goal,
            )
        )

    def half_load(self, mode: str, api_key: str, template_id: str, per_second: float) -> None:
        s = self.sizes
        self._say(f"goals 3 and 5: {mode} at half load, {per_second:,.0f} messages/s for {s.half_seconds:.0f} s")
        truncate_notifications(self.ctx.engine)
        self.stack.sim_reset()
        r = self._ask(
            "batch",
            s.half_seconds,
            api_key=api_key,
            template_id=template_id,
            callers=4,
            size=s.half_batch,
            per_second=per_second,
            samples=s.window_samples // 2,  # two ids per sampled call
        )
        accepted = int(r["accepted"])
        wait_final(self.ctx.engine, accepted, 300.0)
        handed = handoffs(self.ctx.engine)
        key = mode.split()[0]
        offered = rate(accepted, r["ended"] - r["begun"])
        self.figures.append(
            Figure(
                f"goal.handoff_{key}",
                f"handed to the provider within 1 s of acceptance, {mode}, {offered:,.0f} msg/s offered",
                handed["share"] * 100,
                "%",
                accepted,
                note=f"acceptance (created_at) to hand-off (sent_at): p50 {handed['p50_ms']:.0f} ms, "
                f"p99 {handed['p99_ms']:.0f} ms; {s.half_batch}-item calls paced; {_failures(r)}".rstrip("; "),
                goal=f"3. At half load ({per_second:,.0f}/s), {mode}: share handed off within 1 s",
                target=99.0,
            )
        )
        windows: list[float] = r["windows"]
        if key == "research":
            self.figures.append(
                Figure(
                    "goal.window_p99",
                    f"accepted -> stored window p99, {mode}, {offered:,.0f} msg/s",
                    percentile(windows, 99) * 1000,
                    "ms",
                    len(windows),
                    note=f"p50 {percentile(windows, 50) * 1000:.0f} ms, max {max(windows, default=0) * 1000:.0f} "
                    "ms; from a SendSmsBatch answer to its first and last ids' rows seen in PostgreSQL (polled "
                    "every 5 ms by the load process)",
                    goal="5. Accepted-to-stored window p99 at half load",
                    target=100.0,
                    at_most=True,
                )
            )

    def scaling(self) -> None:
        d = self.ctx.demo
        self.stack.sim_control(latency=PROVIDER_LATENCY)
        try:
            sized = {"HERALD_SEND_CONCURRENCY": str(SEND_CONCURRENCY)}
            self.stack.stop("send dispatcher")
            self.stack.start_dispatcher("send dispatcher", "send-sms,send-email", **sized)
            self._say(f"goal 4: one send-sms dispatcher, the provider answering in {PROVIDER_LATENCY * 1000:.0f} ms")
            before, one_cpu = self._delivered_rate(d.live_key, d.sms_template_id)
            self._say("goal 4: two send-sms dispatcher processes")
            self.stack.start_dispatcher("send dispatcher 2", "send-sms", **sized)
            two, two_cpu = self._delivered_rate(d.live_key, d.sms_template_id)
            # One again after two: the machine and the shared broker change under a run, so the single
            # dispatcher's figure is the mean of one run before and one after the pair's.
            self.stack.stop("send dispatcher 2")
            self._say("goal 4: one send-sms dispatcher again")
            after, _ = self._delivered_rate(d.live_key, d.sms_template_id)
        finally:
            self.stack.sim_control(latency=0)
            if "send dispatcher 2" in self.stack.services:
                self.stack.stop("send dispatcher 2")
            # The later phases run on the default-sized dispatcher.
            self.stack.stop("send dispatcher")
            self.stack.start_dispatcher("send dispatcher", "send-sms,send-email")
        one = (before + after) / 2
        bound = SEND_CONCURRENCY / PROVIDER_LATENCY
        self.figures += [
            Figure(
                "goal.scale_one",
                "delivered per second, one send-sms dispatcher, provider answering in 50 ms",
                one,
                "msg/s",
                note=f"mean of a run before ({before:,.0f}) and one after ({after:,.0f}) the two dispatchers' run; "
                f"bound: {SEND_CONCURRENCY} hand-offs in flight / {PROVIDER_LATENCY} s = {bound:,.0f} msg/s; "
                + one_cpu,
            ),
            Figure(
                "goal.scale_two",
                "delivered per second, two send-sms dispatcher processes",
                two,
                "msg/s",
                note=f"bound: {2 * bound:,.0f} msg/s; " + two_cpu,
            ),
            Figure(
                "goal.scale_ratio",
                "second send-sms dispatcher: delivered per second, two / one",
                two / one if one else 0.0,
                "×",
                note=f"{one:,.0f} -> {two:,.0f} msg/s; steady window of each run, live, fed by SendSmsBatch",
                goal="4. A second send-sms dispatcher (provider answering in 50 ms): two / one",
                target=1.8,
            ),
        ]

    def _delivered_rate(self, api_key: str, template_id: str) -> tuple[float, str]:
        """Delivered per second over the steady part of a live run (after the first quarter), and what
        that window cost in CPU: with every process's CPU per message, the machine's own ceiling."""
        s = self.sizes
        truncate_notifications(self.ctx.engine)
        self.stack.sim_reset()
        self.stack.sim_control(latency=PROVIDER_LATENCY)
        outcome: dict[str, Any] = {}

        def feed() -> None:
            outcome.update(
                self._ask(
                    "batch",
                    s.scale_seconds,
                    api_key=api_key,
                    template_id=template_id,
                    callers=4,
                    size=100,
                    # Enough to keep two dispatchers' 32 hand-offs busy for 1.5 s: the figure is the send
                    # stage's, not the size of a backlog to drain afterwards.
                    max_outstanding=int(2 * SEND_CONCURRENCY / PROVIDER_LATENCY * 1.5),
                )
            )

        feeding = threading.Thread(target=feed, daemon=True)
        feeding.start()
        time.sleep(s.scale_seconds / 4)
        first, first_at, cpu_before = count(self.ctx.engine, ["delivered"]), time.monotonic(), self.stack.cpu()
        time.sleep(s.scale_seconds * 3 / 4 - 0.5)
        last, last_at, cpu_after = count(self.ctx.engine, ["delivered"]), time.monotonic(), self.stack.cpu()
        feeding.join(s.scale_seconds + 300.0)
        if "accepted" not in outcome:
            raise BenchError("the scaling feeder did not answer")
        wait_final(self.ctx.engine, int(outcome["accepted"]), 300.0)
        delivered = last - first
        per_message = sum(cpu_after[k] - cpu_before.get(k, cpu_after[k]) for k in cpu_after) / max(delivered, 1)
        cores = len(os.sched_getaffinity(0))
        ceiling = (
            f"; {per_message * 1000:.1f} ms of CPU per delivered message in all, so {cores} cores carry at most "
            f"{cores / per_message:,.0f} msg/s"
            if per_message
            else ""
        )
        return rate(delivered, last_at - first_at), cpu_note(cpu_before, cpu_after, delivered) + ceiling

    def memory(self) -> None:
        for name, peak in sorted(self.stack.record_peaks().items()):
            # The simulator stands in for MMG, Firetext and SES: not deployed, so not held to the goal.
            double = name == "provider-sim"
            self.figures.append(
                Figure(
                    f"goal.rss.{name.replace(' ', '_')}",
                    f"peak RSS (VmHWM), {name}",
                    peak,
                    "MB",
                    goal=f"6. Peak RSS, {name}" + (" (test double, not deployed)" if double else ""),
                    target=None if double else RSS_LIMIT_MB,
                    at_most=True,
                )
            )


def _failures(r: dict[str, Any]) -> str:
    if not r["failed_items"] and not r["failed_calls"]:
        return ""
    return f"{r['failed_calls']:,} calls and {r['failed_items']:,} items refused ({r['errors']}); "


def measure(ctx: Context, sizes: Sizes, say: Say, failures: list[str]) -> list[Figure]:
    """Every goal's figures; a phase that failed is added to `failures` and the others still run."""
    goals = Goals(ctx, sizes, say)
    figures = goals.run()
    failures += goals.failures
    return figures
