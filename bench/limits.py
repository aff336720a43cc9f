"""Issue 9's cost of the service rules: the rate-limit and daily-limit checks with Redis.

(a) `ServiceRules.check` called in this process, one caller and then 64 threads (concurrent checks share
a Redis round trip), beside a Redis script call that does nothing: the raw limit. (b) SendSms accepted per
second by ingest from 64 callers with the limits on (Redis) beside the same ingest with them off
(HERALD_LIMITS_ENABLED=false) and with them counted in the process, in alternating rounds of the same run:
issue 9's goal is at most 10% lower with them on.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from bench import BROKER_URL, BenchError, Figure, LoadProcess, percentile, purge_queues, rate, run_callers
from bench.herald_paths import SECRET_KEY, Context
from bench.load import sender
from bench.stack import Stack, cpu_of, free_port, pids_named
from herald.crypto import SecretBox
from herald.domain import limits, recipients
from herald.domain.apikeys import create_token, split_key
from herald.limits.lease import MAX_CHUNK
from herald.limits.local_counter import LocalSendCounter
from herald.limits.redis_counter import RedisSendCounter
from herald.service_layer.auth import Authenticator, Caller
from herald.service_layer.rules import ServiceRules
from herald.v1.notifications_pb2 import NotificationType

# A database index of the benchmark's own, emptied by every run: the tests use index 0.
REDIS_URL = os.environ.get("HERALD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SMS_TO = recipients.validate_phone_number("07700 900123")  # as the load's SendSms carries it, validated
GOAL_SHARE = 90.0  # limits on: at most 10% fewer calls accepted than off

READING = """\
In the process, `ServiceRules.check` is called directly with `RedisSendCounter` on the benchmark's own
Redis database: with the research-mode demo service's normal key it takes a rate-limit token and adds to
the day's SMS count, with the live demo service's test key it takes a token only (test keys are never
daily-limited). Tokens and daily units are leased to the process in chunks (up to 64), so most checks
are served in the process and only one in a chunk makes a Lua script call; 64 threads show what a check
costs the process when checks run together (leader/follower shares the remaining round trips), i.e.
what ingest pays under load. Takes per round trip are from Redis's EVALSHA count
(server-wide, so anything else using this Redis meanwhile lowers it). The raw limit is a script call
that does nothing, from one caller.

As deployed, three ingest processes run side by side on the same database and vhost, with no
dispatcher (as goal 1's "ingest alone"): one with `HERALD_REDIS_URL` and the limits on, one with
`HERALD_LIMITS_ENABLED=false`, and one with the limits on but counted in the process (no Redis, as
`make run`), which shows how much of the cost is the rules and how much the wait for Redis. On beside
off is the same binary, service, key and calls, differing only by the counting (trial mode's check
runs in both; a test key would not be a comparison, as it still takes from the rate-limit bucket). The
load is 64 callers of SendSms from a process of its own, a fresh token per call, in short rounds whose
order alternates (off, on, in the process; then the reverse) so that the machine's drift falls on all
three; figures are the medians of the rounds, and ingest's CPU per call (from /proc, over all rounds)
is beside them: on a shared machine it is the steadier of the two. The service's rate limit is lifted
and its daily limits are Notify's defaults, so nothing is refused but every check runs: the run fails
if Redis's daily count did not move by at least the calls accepted with the limits on, or moved
otherwise.
"""


@dataclass(frozen=True, slots=True)
class Sizes:
    checks: int = 20_000  # per in-process case
    threads: int = 64
    callers: int = 64
    # Short rounds, many of them: the machine is shared, and its drift falls on both settings alike.
    seconds: float = 6.0  # per round and setting
    rounds: int = 5


QUICK = Sizes(checks=2_000, seconds=3.0, rounds=2)
Say = Callable[[str], None]


def _redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__})") from None
    return client


def _script_calls(client: redis.Redis) -> int:
    """Script calls Redis has run so far (every client, every database)."""
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def _daily_count(client: redis.Redis, service_id: str) -> int:
    value = client.get(limits.daily_count_key(service_id, "sms", datetime.now(UTC)))
    return int(value or 0)


def _redis_cpu() -> float:
    return cpu_of(pids_named(["redis-server"]))


def _caller(ctx: Context, api_key: str) -> Caller:
    key = split_key(api_key)
    auth = Authenticator(ctx.engine, SecretBox(SECRET_KEY))
    return auth.authenticate(f"Bearer {create_token(key.secret, key.service_id)}")


# --- (a) in the process ----------------------------------------------------------------------------


def raw_script(client: redis.Redis, n: int) -> Figure:
    nothing = client.register_script("return 0")
    nothing(keys=["bench-nothing"])  # loaded outside the timing
    started = time.perf_counter()
    for _ in range(n):
        nothing(keys=["bench-nothing"])
    per_call = (time.perf_counter() - started) / n * 1e6
    return Figure(
        "raw.redis_script",
        "Redis script call (EVALSHA of `return 0`, redis-py), one caller",
        per_call,
        "µs",
        n,
        runs=[per_call],
        note="a round trip with no work in Redis: the raw limit of a check",
    )


def _one_caller(check: Callable[[], None], n: int) -> tuple[float, float]:
    """Wall and this thread's CPU per check, in µs, after a warm-up (the connection, the script's load)."""
    check()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(n):
        check()
    return (time.perf_counter() - wall) / n * 1e6, (time.thread_time() - cpu) / n * 1e6


def _threads(check: Callable[[], None], n: int, threads: int) -> dict[str, float]:
    def one(_: int) -> str:
        check()
        return ""

    cpu = time.process_time()
    records, begun, ended = run_callers(threads, n // threads, one, timeout=300.0)
    cpu = time.process_time() - cpu
    failed = [r.answer for r in records if not r.ok]
    if failed:
        raise BenchError(f"{len(failed)} of {len(records)} checks failed under {threads} threads: {failed[:3]}")
    latencies = [r.ended - r.started for r in records]
    return {
        "wall_us": (ended - begun) / len(records) * 1e6,
        "cpu_us": cpu / len(records) * 1e6,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "checks": float(len(records)),
    }


def check_costs(ctx: Context, client: redis.Redis, sizes: Sizes) -> list[Figure]:
    counter = RedisSendCounter(REDIS_URL)
    rules = ServiceRules(ctx.engine, counter)
    local = ServiceRules(ctx.engine, LocalSendCounter())
    normal = _caller(ctx, ctx.demo.research_key)
    test = _caller(ctx, ctx.demo.test_key)
    figures = [raw_script(client, sizes.checks)]
    try:
        cases = [
            ("normal", "normal key: rate limit + daily count", normal),
            ("test", "test key: rate limit only", test),
        ]
        for key, what, caller in cases:

            def check(caller: Caller = caller) -> None:
                rules.check(caller, NotificationType.SMS, SMS_TO)

            counted = _daily_count(client, caller.service.id)
            wall, cpu = _one_caller(check, sizes.checks)
            figures.append(
                Figure(
                    f"limits.check_{key}",
                    f"ServiceRules.check with Redis, {what}, one caller",
                    wall,
                    "µs",
                    sizes.checks,
                    compare=("raw.redis_script",),
                    note=f"{cpu:.1f} µs of this thread's CPU per check; the rest is waiting for Redis",
                )
            )
            calls = _script_calls(client)
            redis_cpu = _redis_cpu()
            shared = _threads(check, sizes.checks, sizes.threads)
            trips = _script_calls(client) - calls
            redis_cpu = _redis_cpu() - redis_cpu
            checks = int(shared["checks"])
            figures.append(
                Figure(
                    f"limits.check_{key}_threads",
                    f"ServiceRules.check with Redis, {what}, {sizes.threads} threads: wall time per check",
                    shared["wall_us"],
                    "µs",
                    checks,
                    compare=("raw.redis_script",),
                    note=f"{shared['cpu_us']:.1f} µs of this process's CPU per check, Redis's "
                    f"{redis_cpu / checks * 1e6:.1f} µs; {checks / max(trips, 1):.1f} checks per round trip; "
                    f"a check's latency p50 {shared['p50_ms']:.2f} ms, p99 {shared['p99_ms']:.2f} ms",
                )
            )
            moved = _daily_count(client, caller.service.id) - counted
            expected = 1 + sizes.checks + checks if key == "normal" else 0
            # Leased ahead: the counter may hold up to a chunk of units counted but not yet used.
            if not 0 <= moved - expected <= (MAX_CHUNK if key == "normal" else 0):
                raise BenchError(f"the daily count moved by {moved:,}, not {expected:,}: the checks did not count")
        if not client.exists(limits.bucket_key(test.service.id, "test")):
            raise BenchError("no rate-limit bucket in Redis for the test key: the checks did not take tokens")
        wall, cpu = _one_caller(lambda: local.check(normal, NotificationType.SMS, SMS_TO), sizes.checks)
        figures.append(
            Figure(
                "limits.check_local",
                "ServiceRules.check counted in the process (no HERALD_REDIS_URL), normal key, one caller",
                wall,
                "µs",
                sizes.checks,
                note=f"{cpu:.1f} µs of CPU: what a check costs without the round trip (one replica only)",
            )
        )
    finally:
        counter.close()
    return figures


# --- (b) ingest as deployed: limits on beside limits off ----------------------------------------------


def accepted_on_off(ctx: Context, client: redis.Redis, sizes: Sizes, say: Say) -> list[Figure]:
    stack = Stack(ctx.settings.secret_key)
    demo = ctx.demo
    service_id = demo.research_service_id
    env = {
        "off": {"HERALD_REDIS_URL": "", "HERALD_LIMITS_ENABLED": "false"},
        "on": {"HERALD_REDIS_URL": REDIS_URL, "HERALD_LIMITS_ENABLED": "true"},
        # On, counted in the process: the rules' own cost, without Redis's round trip.
        "local": {"HERALD_REDIS_URL": "", "HERALD_LIMITS_ENABLED": "true"},
    }
    addresses = {mode: f"127.0.0.1:{free_port()}" for mode in env}
    loads: dict[str, LoadProcess] = {}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in env}
    try:
        for mode, address in addresses.items():
            stack.start(f"ingest-limits-{mode}", "ingest", health=address, HERALD_INGEST_ADDRESS=address, **env[mode])
            loads[mode] = LoadProcess(sender, address)

        def unary(mode: str, seconds: float) -> dict[str, Any]:
            answer: dict[str, Any] = loads[mode].ask(
                "unary",
                seconds + 300.0,
                api_key=demo.research_key,
                template_id=demo.research_sms_template_id,
                seconds=seconds,
                callers=sizes.callers,
            )
            return answer

        for mode in addresses:  # connections, caches and the script's load outside the figures
            unary(mode, 1.0)
        purge_queues(BROKER_URL)
        for round_ in range(sizes.rounds):
            for mode in list(env) if round_ % 2 == 0 else reversed(env):
                say(f"  limits: round {round_ + 1} of {sizes.rounds}, limits {mode}, {sizes.seconds:.0f} s")
                process = stack.services[f"ingest-limits-{mode}"]
                counted, calls, cpu, redis_cpu = (
                    _daily_count(client, service_id),
                    _script_calls(client),
                    process.cpu(),
                    _redis_cpu(),
                )
                r = unary(mode, sizes.seconds)
                r["cpu"] = process.cpu() - cpu
                r["redis_cpu"] = _redis_cpu() - redis_cpu
                r["trips"] = _script_calls(client) - calls
                r["moved"] = _daily_count(client, service_id) - counted
                purge_queues(BROKER_URL)  # no dispatcher: what was accepted is thrown away
                _check_counted(mode, r)
                runs[mode].append(r)
        stack.check_alive()
    finally:
        for load in loads.values():
            load.close()
        stack.stop_all()
        purge_queues(BROKER_URL)
    return _accepted_figures(runs, sizes)


def _check_counted(mode: str, r: dict[str, Any]) -> None:
    """Every check really ran with the limits on (and none with them off), and nothing was refused."""
    if r["failed_calls"]:
        raise BenchError(f"limits {mode}: {r['failed_calls']:,} calls refused ({r['errors']})")
    # A round may use up to a chunk of daily units leased (and counted) in the round before.
    if mode == "on" and r["moved"] < r["accepted"] - MAX_CHUNK:
        raise BenchError(f"limits on: Redis counted {r['moved']:,} sends of {r['accepted']:,} accepted")
    if mode != "on" and r["moved"]:
        raise BenchError(f"limits {mode}: Redis counted {r['moved']:,} sends")


def _accepted_figures(runs: dict[str, list[dict[str, Any]]], sizes: Sizes) -> list[Figure]:
    rates = {mode: [rate(int(r["accepted"]), r["ended"] - r["begun"]) for r in rs] for mode, rs in runs.items()}
    medians = {mode: statistics.median(values) for mode, values in rates.items()}
    accepted = {mode: sum(int(r["accepted"]) for r in rs) for mode, rs in runs.items()}
    cpu_us = {mode: sum(r["cpu"] for r in rs) / max(accepted[mode], 1) * 1e6 for mode, rs in runs.items()}
    p50 = {mode: statistics.median(r["p50_ms"] for r in rs) for mode, rs in runs.items()}
    p99 = {mode: statistics.median(r["p99_ms"] for r in rs) for mode, rs in runs.items()}
    redis_us = sum(r["redis_cpu"] for r in runs["on"]) / max(accepted["on"], 1) * 1e6
    trips = sum(r["trips"] for r in runs["on"])
    moved = sum(r["moved"] for r in runs["on"])
    label = f"SendSms accepted, {sizes.callers} callers, ingest alone"
    share = medians["on"] / medians["off"] * 100 if medians["off"] else 0.0
    local_share = medians["local"] / medians["off"] * 100 if medians["off"] else 0.0
    extra = cpu_us["on"] - cpu_us["off"]
    figures = [
        Figure(
            "limits.sendsms_off",
            f"{label}, limits off (HERALD_LIMITS_ENABLED=false)",
            medians["off"],
            "calls/s",
            accepted["off"],
            compare=("raw.grpc_unary",),
            runs=rates["off"],
            note=f"median of {len(rates['off'])} rounds of {sizes.seconds:.0f} s "
            f"({' / '.join(f'{v:,.0f}' for v in rates['off'])}); p50 {p50['off']:.1f} ms, p99 {p99['off']:.1f} ms; "
            f"ingest CPU {cpu_us['off']:,.0f} µs per call; Redis's daily count did not move",
        ),
        Figure(
            "limits.sendsms_on",
            f"{label}, limits on (Redis)",
            medians["on"],
            "calls/s",
            accepted["on"],
            compare=("raw.grpc_unary",),
            runs=rates["on"],
            note=f"median of {len(rates['on'])} rounds ({' / '.join(f'{v:,.0f}' for v in rates['on'])}); "
            f"p50 {p50['on']:.1f} ms, p99 {p99['on']:.1f} ms; ingest CPU {cpu_us['on']:,.0f} µs per call, "
            f"Redis's {redis_us:.1f} µs; {accepted['on'] / max(trips, 1):.1f} checks per round trip; Redis's "
            f"daily count moved by {moved:,} for {accepted['on']:,} accepted",
        ),
        Figure(
            "limits.sendsms_local",
            f"{label}, limits on, counted in the process (no HERALD_REDIS_URL: one replica only)",
            medians["local"],
            "calls/s",
            accepted["local"],
            compare=("raw.grpc_unary",),
            runs=rates["local"],
            note=f"{local_share:.0f}% of off: the rules without Redis's round trip; median of "
            f"{len(rates['local'])} rounds ({' / '.join(f'{v:,.0f}' for v in rates['local'])}); p50 "
            f"{p50['local']:.1f} ms, p99 {p99['local']:.1f} ms; ingest CPU {cpu_us['local']:,.0f} µs per call",
        ),
        Figure(
            "limits.sendsms_share",
            "SendSms accepted with the limits on, as a share of off",
            share,
            "%",
            accepted["on"] + accepted["off"],
            target=GOAL_SHARE,
            note=f"ingest CPU per call: on {cpu_us['on']:,.0f} µs, off {cpu_us['off']:,.0f} µs "
            f"({extra:+,.0f} µs, {extra / cpu_us['off'] * 100 if cpu_us['off'] else 0.0:+.0f}%)",
        ),
    ]
    return figures


def measure(ctx: Context, sizes: Sizes, say: Say) -> list[Figure]:
    client = _redis()
    client.flushdb()  # the benchmark's own database: last run's buckets and counts
    try:
        return check_costs(ctx, client, sizes) + accepted_on_off(ctx, client, sizes, say)
    finally:
        client.close()
