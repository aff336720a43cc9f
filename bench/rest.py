"""Issue 10's measure: SendSms accepted per second through the REST gateway (Notify's
`POST /v2/notifications/sms`) beside the same calls over gRPC straight to ingest, in the same run.

As deployed: ingest and the gateway (`herald gateway`, uvicorn) each a process of their own, no
dispatcher (as goal 1's "ingest alone": what is accepted is purged after each round). The load is 64
callers from a process of their own, a fresh token per call, for each protocol: gRPC through a blocking
stub (bench.load.sender), HTTP/1.1 through one keep-alive connection per caller with the JSON body
Notify's clients send. Rounds alternate (gRPC then REST, then REST then gRPC, ...) so that the machine's
drift falls on both; figures are the medians of the rounds. Goal: REST keeps at least 60% of the gRPC
figure, and adds at most 5 ms to the p50 latency of an accepted call. That latency is measured with the
64 callers offering half of REST's rate, and with one caller: as fast as answered, both protocols
saturate the machine and their p50s are queueing (Little's law), which the share already shows.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import httpx
import orjson

from bench import BROKER_URL, BenchError, Figure, LoadProcess, purge_queues, rate, serve_commands, wait_until
from bench.herald_paths import Context
from bench.load import SMS_TO, Pacer, Tally, _for_duration, sender
from bench.stack import LOGS, Stack, free_port
from herald.domain.apikeys import create_token, split_key

GOAL_SHARE = 60.0  # REST at least 60% of gRPC's accepted calls a second
GOAL_ADDED_P50_MS = 5.0

Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Sizes:
    seconds: float = 15.0
    callers: int = 64
    rounds: int = 2
    # One caller, one call at a time: the latency the gateway adds with no queue in front of anything.
    alone_seconds: float = 5.0


QUICK = Sizes(seconds=4.0, rounds=2, alone_seconds=2.0)


def rest_sender(pipe: Pipe, address: str) -> None:
    """A load process for the gateway: `unary` POSTs /v2/notifications/sms from `callers` threads."""

    def unary(api_key: str, template_id: str, seconds: float, callers: int, per_second: float = 0.0) -> dict[str, Any]:
        key = split_key(api_key)
        host, _, port = address.rpartition(":")
        tally = Tally()
        pacer = Pacer(per_second, 1)
        local = threading.local()
        body = orjson.dumps(
            {"phone_number": SMS_TO, "template_id": template_id, "personalisation": {"name": "Ada", "code": "1234"}}
        )

        def one() -> None:
            pacer.wait()
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(host, int(port), timeout=30.0)
            headers = {
                "Authorization": f"Bearer {create_token(key.secret, key.service_id)}",
                "Content-Type": "application/json",
            }
            started, error = time.monotonic(), ""
            try:
                connection.request("POST", "/v2/notifications/sms", body, headers)
                answer = connection.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                local.connection = None
                status, error = 0, type(exc).__name__
            ended = time.monotonic()
            with tally.lock:
                tally.calls += 1
                if status == 201:
                    tally.accepted += 1
                    tally.latencies.append(ended - started)
                else:
                    tally.failed_calls += 1
            if status != 201:
                tally.failure(error if status == 0 else f"HTTP {status}")

        begun, ended = _for_duration(callers, seconds, one)
        return tally.summary(begun, ended, [])

    serve_commands(pipe, {"unary": unary})


def measure(ctx: Context, sizes: Sizes, say: Say) -> list[Figure]:
    stack = Stack(ctx.settings.secret_key)
    demo = ctx.demo
    gateway = f"127.0.0.1:{free_port()}"
    loads: dict[str, LoadProcess] = {}
    runs: dict[str, list[dict[str, Any]]] = {"gRPC": [], "REST": []}
    alone: dict[str, dict[str, Any]] = {}
    paced: dict[str, dict[str, Any]] = {}
    try:
        stack.start("ingest", "ingest", health=stack.ingest)
        stack.start("gateway", "gateway", HERALD_GATEWAY_ADDRESS=gateway)
        if not wait_until(lambda: _serving(gateway), 60.0, 0.1):
            raise BenchError(f"the gateway is not serving on {gateway} after 60 s (see {LOGS / 'gateway.log'})")
        loads = {"gRPC": LoadProcess(sender, stack.ingest), "REST": LoadProcess(rest_sender, gateway)}

        def unary(
            protocol: str, seconds: float, callers: int = sizes.callers, per_second: float = 0.0
        ) -> dict[str, Any]:
            answer: dict[str, Any] = loads[protocol].ask(
                "unary",
                seconds + 300.0,
                api_key=demo.research_key,
                template_id=demo.research_sms_template_id,
                seconds=seconds,
                callers=callers,
                per_second=per_second,
            )
            return answer

        for protocol in runs:  # connections and caches warmed outside the figures
            unary(protocol, 1.0)
        purge_queues(BROKER_URL)
        for round_ in range(sizes.rounds):
            for protocol in ("gRPC", "REST") if round_ % 2 == 0 else ("REST", "gRPC"):
                say(f"  rest: round {round_ + 1} of {sizes.rounds}, {protocol}, {sizes.seconds:.0f} s")
                cpu = {name: stack.services[name].cpu() for name in ("ingest", "gateway")}
                r = unary(protocol, sizes.seconds)
                r["cpu"] = {name: stack.services[name].cpu() - before for name, before in cpu.items()}
                purge_queues(BROKER_URL)  # no dispatcher: what was accepted is thrown away
                if r["failed_calls"]:
                    raise BenchError(f"{protocol}: {r['failed_calls']:,} calls not accepted: {r['errors']}")
                runs[protocol].append(r)
        for protocol in runs:
            say(f"  rest: one caller, {protocol}, {sizes.alone_seconds:.0f} s")
            alone[protocol] = unary(protocol, sizes.alone_seconds, callers=1)
            purge_queues(BROKER_URL)
        # Half of what REST sustained, offered to both: the latency each adds when nothing queues for CPU.
        offered = statistics.median(rate(r["accepted"], r["ended"] - r["begun"]) for r in runs["REST"]) / 2
        for protocol in runs:
            say(f"  rest: {offered:,.0f} calls/s offered, {protocol}, {sizes.seconds:.0f} s")
            paced[protocol] = unary(protocol, sizes.seconds, per_second=offered)
            purge_queues(BROKER_URL)
        stack.check_alive()
    finally:
        for load in loads.values():
            load.close()
        stack.stop_all()
        purge_queues(BROKER_URL)
    return _figures(runs, alone, paced, sizes)


def _serving(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/_status", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _figures(
    runs: dict[str, list[dict[str, Any]]],
    alone: dict[str, dict[str, Any]],
    paced: dict[str, dict[str, Any]],
    sizes: Sizes,
) -> list[Figure]:
    def median(protocol: str, what: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(what(r) for r in runs[protocol])

    per_second = {p: median(p, lambda r: rate(r["accepted"], r["ended"] - r["begun"])) for p in runs}
    p50 = {p: median(p, lambda r: r["p50_ms"]) for p in runs}
    p99 = {p: median(p, lambda r: r["p99_ms"]) for p in runs}
    accepted = {p: sum(int(r["accepted"]) for r in runs[p]) for p in runs}

    def cpu_ms(protocol: str, process: str) -> float:
        return float(sum(r["cpu"][process] for r in runs[protocol])) / max(accepted[protocol], 1) * 1000

    share = per_second["REST"] / per_second["gRPC"] * 100 if per_second["gRPC"] else 0.0
    rounds = f"median of {sizes.rounds} round(s) of {sizes.seconds:.0f} s"
    figures = [
        Figure(
            f"goal.rest_{protocol.lower()}_accepted",
            f"SendSms accepted, {sizes.callers} callers, {how}",
            per_second[protocol],
            "calls/s",
            accepted[protocol],
            note=f"p50 {p50[protocol]:.1f} ms, p99 {p99[protocol]:.1f} ms; {rounds}; CPU per call: ingest "
            f"{cpu_ms(protocol, 'ingest'):.2f} ms" + (f", gateway {cpu_ms(protocol, 'gateway'):.2f} ms" if gw else ""),
            runs=[rate(r["accepted"], r["ended"] - r["begun"]) for r in runs[protocol]],
        )
        for protocol, how, gw in (
            ("gRPC", "gRPC straight to ingest (issue 10's comparison)", False),
            ("REST", "POST /v2/notifications/sms through the gateway", True),
        )
    ]
    figures += [
        Figure(
            "goal.rest_share",
            "REST accepted per second, share of gRPC's in the same run",
            share,
            "%",
            note=f"{per_second['REST']:,.0f} / {per_second['gRPC']:,.0f} calls/s",
            goal="10. REST through the gateway: accepted per second, share of gRPC's",
            target=GOAL_SHARE,
        ),
        Figure(
            "goal.rest_added_p50",
            "p50 latency the gateway adds to an accepted call",
            p50["REST"] - p50["gRPC"],
            "ms",
            note=f"p50 {p50['REST']:.1f} ms through the gateway, {p50['gRPC']:.1f} ms over gRPC, "
            f"{sizes.callers} callers each as fast as answered: both saturate the 2 cores, so each p50 is mostly "
            f"queueing (callers / calls a second), and the difference follows from the share above",
        ),
        Figure(
            "goal.rest_added_p50_paced",
            "p50 latency the gateway adds to an accepted call, half load",
            paced["REST"]["p50_ms"] - paced["gRPC"]["p50_ms"],
            "ms",
            paced["REST"]["accepted"],
            note=f"p50 {paced['REST']['p50_ms']:.2f} ms through the gateway, {paced['gRPC']['p50_ms']:.2f} ms over "
            f"gRPC (p99 {paced['REST']['p99_ms']:.1f} / {paced['gRPC']['p99_ms']:.1f} ms), "
            f"{sizes.callers} callers offering half of REST's rate above, for {sizes.seconds:.0f} s each",
            goal=f"10. REST through the gateway: p50 latency added, {sizes.callers} callers at half load",
            target=GOAL_ADDED_P50_MS,
            at_most=True,
        ),
        Figure(
            "goal.rest_added_p50_alone",
            "p50 latency the gateway adds to an accepted call, one caller",
            alone["REST"]["p50_ms"] - alone["gRPC"]["p50_ms"],
            "ms",
            alone["REST"]["accepted"],
            note=f"p50 {alone['REST']['p50_ms']:.2f} ms through the gateway, {alone['gRPC']['p50_ms']:.2f} ms over "
            f"gRPC, one call at a time for {sizes.alone_seconds:.0f} s each: the gateway's own cost, where at "
            f"{sizes.callers} callers the p50 is mostly queueing (callers / calls a second)",
            goal="10. REST through the gateway: p50 latency added, one caller",
            target=GOAL_ADDED_P50_MS,
            at_most=True,
        ),
    ]
    return figures
