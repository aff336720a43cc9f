"""Dispatchers SIGKILLed and restarted under steady load: every accepted message ends final, none is lost,
none is handed to the provider twice, and no refused send is stored. `make chaos` kills 20 times, here 2."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine

from chaos.cluster import Cluster
from chaos.scenarios import SCENARIOS, Context, run

pytestmark = pytest.mark.e2e


def test_killed_dispatchers_lose_nothing_and_send_nothing_twice(cluster: Cluster, engine: Engine) -> None:
    ctx = Context(None, None, cluster, engine, quick=True, rng=random.Random(7), rate=30, warmup=1, cooldown=2,
                  kill_count=2)  # fmt: skip

    row = run(ctx, SCENARIOS["kills"])

    assert row.accepted > 100
    assert row.problems == []
    assert (row.lost, sum(row.stuck.values()), row.duplicated, sum(row.refused_stored.values())) == (0, 0, 0, 0), row
    assert row.delivered == row.accepted, row
