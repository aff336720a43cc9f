"""One Herald cluster (every service its own process) on the machine's PostgreSQL and RabbitMQ, shared by
the fast chaos tests; the outage scenarios, which stop PostgreSQL or RabbitMQ, run only in `make chaos`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.cluster import Cluster
from chaos.scenarios import CLUSTER_SETTINGS


@pytest.fixture(scope="package")
def cluster(database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs: Path = tmp_path_factory.mktemp("chaos-logs")
    c = Cluster(database_url, broker_url, logs, settings=CLUSTER_SETTINGS)
    try:
        c.start()
        yield c
    finally:
        c.stop(grace=5)
