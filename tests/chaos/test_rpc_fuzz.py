"""A few thousand fuzzed requests to every RPC: no INTERNAL or UNKNOWN, every service still healthy, and
every send answered OK then stored. `make chaos` sends 20,000."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine

from chaos.cluster import ADMIN_SECRET, Cluster
from chaos.fuzz import run_fuzz, seeds_for

pytestmark = pytest.mark.e2e
SEED = 20261129
REQUESTS = 2000


def test_no_rpc_answers_internal_and_every_accepted_send_is_stored(cluster: Cluster, engine: Engine) -> None:
    demo = cluster.demo(f"fuzz-test-{os.getpid()}")
    report = run_fuzz(cluster, engine, seeds_for(cluster, demo, ADMIN_SECRET), SEED, REQUESTS, progress=False)

    assert report.requests == REQUESTS
    assert {"/herald.v1.Ingest/SendSms", "/herald.v1.Admin/CreateService", "/herald.v1.Scheduler/RunTask"} <= set(
        report.methods
    )
    assert report.unserved == [], "every contract service is served by some process"
    assert report.accepted, "some fuzzed sends are valid and accepted"
    assert report.bad_answers == 0, report.summary()
    assert report.not_stored == [], report.summary()
    assert report.unhealthy == {}, report.summary()
