"""The scenarios: each runs a fault under steady load, lets the system settle, then checks the outcome.

kills      20 SIGKILLs of random dispatchers, each restarted at once
broker     the RabbitMQ node stopped and started again
postgres   PostgreSQL stopped for 30 seconds
provider   every provider hand-off fails for a minute (20 s each: HTTP 503, connection closed, no
           answer), then succeeds again; with the compressed retry schedule every message must end
           `delivered`
handoff    the send dispatcher SIGKILLed while its hand-offs hang at the provider (between claim and
           answer); the scheduler's lease sweep must re-drive them, and the provider must see each once
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from tqdm import tqdm

from chaos.cluster import Cluster, Simulator
from chaos.infra import OwnPostgres, OwnRabbitMQ
from chaos.load import Load
from chaos.verdict import Row, judge, settle

# Settings every process of the chaos cluster gets. The retry schedule is compressed but still spans
# the provider outage (77 s against 60 s), so every message can end `delivered`; the lease is short so
# the hand-off scenario's re-drives happen within the run.
RETRY_DELAYS = "2,5,10,20,40"
LEASE_SECONDS = 5
CLUSTER_SETTINGS = {
    "HERALD_RETRY_DELAYS": RETRY_DELAYS,
    "HERALD_SEND_LEASE_SECONDS": str(LEASE_SECONDS),
    "HERALD_SWEEP_SECONDS": "1",
    "HERALD_PREFETCH": "200",
}


@dataclass
class Context:
    postgres: OwnPostgres | None  # None: the machine's own, which the harness must not stop
    rabbitmq: OwnRabbitMQ | None
    cluster: Cluster
    engine: Engine
    quick: bool
    rng: random.Random
    rate: float = 50.0
    warmup: float = 3.0  # seconds of load before the fault
    cooldown: float = 5.0  # and after it, before the load stops
    kill_count: int | None = None  # dispatcher kills; default 20 (5 with --quick)

    @property
    def simulator(self) -> Simulator:
        assert self.cluster.simulator is not None
        return self.cluster.simulator


def _pause(seconds: float, label: str) -> None:
    for _ in tqdm(range(int(seconds)), desc=label, unit="s", leave=False):
        time.sleep(1)
    time.sleep(seconds - int(seconds))


def dispatcher_kills(ctx: Context) -> None:
    kills = ctx.kill_count or (5 if ctx.quick else 20)
    for _ in tqdm(range(kills), desc="kills: SIGKILL + restart", unit="kill", leave=False):
        time.sleep(ctx.rng.uniform(0.5, 2.5))
        ctx.cluster.restart(ctx.rng.choice(ctx.cluster.dispatchers))


def broker_restart(ctx: Context) -> None:
    assert ctx.rabbitmq is not None, "the broker scenario needs a RabbitMQ node of its own"
    ctx.rabbitmq.stop()
    _pause(5 if ctx.quick else 20, "broker: RabbitMQ down")
    ctx.rabbitmq.start()


def postgres_stop(ctx: Context) -> None:
    assert ctx.postgres is not None, "the postgres scenario needs a PostgreSQL of its own"
    ctx.postgres.stop()
    _pause(10 if ctx.quick else 30, "postgres: PostgreSQL down")
    ctx.postgres.start()


def provider_outage(ctx: Context) -> None:
    # A third of the outage each: refused with 503, connections closed, requests left unanswered.
    try:
        for mode in ("status", "drop", "timeout"):
            applied = ctx.simulator.fail_all(mode)
            _pause(5 if ctx.quick else 20, f"provider: every hand-off fails ({applied})")
    finally:
        ctx.simulator.clear()


def handoff_kill(ctx: Context) -> None:
    kills = 2 if ctx.quick else 6
    for n in tqdm(range(kills), desc="handoff: kill mid hand-off", unit="kill", leave=False):
        # Alternately: the provider never took the message (refused after the hang), and the provider
        # took it but its answer never came back (the re-drive must then be de-duplicated by reference).
        hang: dict[str, object] = {"fail_next": 3, "delay": 30}
        if n % 2 == 0:
            hang["status"] = 503
        ctx.simulator.control(**hang)
        time.sleep(1.5)  # at 50 sends/s the next few hand-offs are hanging by now
        ctx.cluster.restart("send-dispatcher")
        ctx.simulator.clear()
        _pause(LEASE_SECONDS + 3, "handoff: lease runs out")


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Context], None]
    settle_seconds: float
    all_must_deliver: bool = False
    # The fault must make Herald send some reference again (a re-drive); none means it missed its moment.
    expects_redrive: bool = False


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("kills", dispatcher_kills, 90),
        Scenario("broker", broker_restart, 120),
        Scenario("postgres", postgres_stop, 120),
        Scenario("provider", provider_outage, 150, all_must_deliver=True),
        Scenario("handoff", handoff_kill, 90, expects_redrive=True),
    )
}


def run(ctx: Context, scenario: Scenario) -> Row:
    started = time.monotonic()
    demo = ctx.cluster.demo(f"{scenario.name}-{uuid.uuid4().hex[:8]}")
    ctx.simulator.clear()
    ctx.simulator.reset()
    load = Load(ctx.cluster.ingest, demo, scenario.name, ctx.rate)
    load.start()
    problems: list[str] = []
    try:
        _pause(ctx.warmup, f"{scenario.name}: load warming up")
        scenario.fault(ctx)
        _pause(ctx.cooldown, f"{scenario.name}: load after the fault")
    except Exception as exc:
        problems.append(f"the fault could not be applied: {type(exc).__name__}: {exc}")
    finally:
        answers = load.stop()
    died = ctx.cluster.unhealthy()
    problems += [f"{name} {state} after the fault (not killed by the harness)" for name, state in died.items()]
    ctx.cluster.ensure_running()
    found = settle(ctx.engine, list(answers.accepted), scenario.settle_seconds, scenario.name)
    row = judge(scenario.name, ctx.engine, answers, ctx.simulator.stats(), found)
    row.all_must_deliver = scenario.all_must_deliver
    if scenario.expects_redrive and row.rerequested == 0:
        problems.append("no reference was sent to the provider twice: the kills did not land mid hand-off")
    row.problems = problems
    row.seconds = time.monotonic() - started
    return row
