"""Shared fixtures: the machine's real PostgreSQL and RabbitMQ.

With CI=true a missing service fails the tests; on a developer's machine it skips them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald.crypto import SecretBox
from herald.db.engine import make_engine, upgrade
from herald.queues.topology import ALL_QUEUES, SERVICE_CALLBACK_RETRY_QUEUE, declare_all, queue
from herald.service_layer.admin import Admin
from herald.settings import Settings

PG_HOST, PG_PORT = "127.0.0.1", 5432
MQ_HOST, MQ_PORT = "127.0.0.1", 5672
TEST_DATABASE = f"herald_test_{os.getpid()}"
TEST_VHOST = f"herald_test_{os.getpid()}"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _require(host: str, port: int, what: str) -> None:
    if _reachable(host, port):
        return
    message = f"{what} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    _require(PG_HOST, PG_PORT, "PostgreSQL")
    url = f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{TEST_DATABASE}"
    upgrade(url)
    yield url
    admin = make_engine(f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/postgres")
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DATABASE}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE notifications, notification_history, templates_history, templates, api_keys, "
                "services, scheduled_task_runs, receipts_pending CASCADE"
            )
        )
    return engine


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    """A virtual host of the session's own, so that nothing else on the machine consumes its messages."""
    _require(MQ_HOST, MQ_PORT, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("rabbitmqctl is needed to give the tests a virtual host of their own")
        yield f"amqp://guest:guest@{MQ_HOST}:{MQ_PORT}//"
        return
    _rabbitmqctl("add_vhost", TEST_VHOST)
    _rabbitmqctl("set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@{MQ_HOST}:{MQ_PORT}/{TEST_VHOST}"
    _rabbitmqctl("delete_vhost", TEST_VHOST)


@pytest.fixture
def clean_broker(broker_url: str) -> str:
    with Connection(broker_url) as conn:
        declare_all(conn)
        channel = conn.default_channel
        for name in ALL_QUEUES:
            queue(name)(channel).purge()
        # The delay queue is declared by the callback dispatcher with the TTL its settings give (tests
        # compress it), and a queue's arguments cannot change once declared: each test starts without it.
        channel.queue_delete(SERVICE_CALLBACK_RETRY_QUEUE)
    return broker_url


@pytest.fixture(scope="session")
def settings(database_url: str, broker_url: str) -> Settings:
    return Settings.from_env(database_url=database_url, broker_url=broker_url, secret_key="test-secret")


@pytest.fixture
def admin(clean_db: Engine, settings: Settings) -> Admin:
    return Admin(clean_db, SecretBox(settings.secret_key))
