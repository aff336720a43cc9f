"""Outages of PostgreSQL and RabbitMQ, on the machine's real servers: the services under test reach them
through a TcpProxy, which the test cuts (connections reset, new ones refused, as a stopped server) and
restores. Nothing accepted may be lost, dead-lettered or sent twice; no answer may be INTERNAL or untrue.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from herald.clients import IngestClient
from herald.db.engine import make_engine
from herald.queues.topology import DEAD_LETTER
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.sending import notification_id
from herald.settings import Settings
from tests.conftest import MQ_HOST, MQ_PORT, PG_HOST, PG_PORT
from tests.support import TcpProxy, final_status, held_messages, queue_depth, running_stack, wait_for

SMS_PERSONALISATION = {"name": "Ada", "code": "1"}


@pytest.fixture
def outage_settings(settings: Settings) -> Settings:
    return replace(settings, retry_delays="0.2,0.2,0.2,0.2,0.2", sweep_seconds=1, send_lease_seconds=2)


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(PG_HOST, PG_PORT)
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_engine(database_url: str, pg_proxy: TcpProxy) -> Iterator[Engine]:
    engine = make_engine(make_url(database_url).set(port=pg_proxy.port).render_as_string(hide_password=False))
    yield engine
    engine.dispose()


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("outages")


def statuses(engine: Engine, ids: list[str]) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id::text, status FROM notifications WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}
        )
        return {r[0]: r[1] for r in rows}


def all_delivered(engine: Engine, ids: list[str], timeout: float) -> None:
    def delivered() -> bool:
        found = statuses(engine, ids)
        return len(found) == len(ids) and set(found.values()) == {"delivered"}

    try:
        wait_for(delivered, timeout=timeout, interval=0.2)
    except AssertionError:
        found = statuses(engine, ids)
        missing = len(ids) - len(found)
        raise AssertionError(f"not all delivered: {missing} not stored, others {sorted(found.values())}") from None


class SteadyLoad:
    """Sends an SMS every `interval` seconds from a thread of its own, keeping what each answer said."""

    def __init__(self, client: IngestClient, template_id: str, interval: float) -> None:
        self.accepted: list[str] = []
        self.refused: list[grpc.StatusCode] = []
        self._client = client
        self._template_id = template_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.accepted.append(self._client.send_sms("07700900123", self._template_id, SMS_PERSONALISATION).id)
            except grpc.RpcError as exc:
                self.refused.append(exc.code())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_database_outage_under_load_loses_nothing_the_dispatchers_had_accepted(
    outage_settings: Settings,
    clean_db: Engine,
    clean_broker: str,
    demo: DemoSetup,
    pg_proxy: TcpProxy,
    proxied_engine: Engine,
) -> None:
    """The dispatchers and the scheduler lose PostgreSQL for 5 s while ingest (on its own connection) keeps
    accepting: every message is stored and delivered afterwards, once, and nothing is dead-lettered."""
    with running_stack(outage_settings, proxied_engine, ingest_engine=clean_db, scheduler=True) as stack:
        client = IngestClient(stack.settings.ingest_address, demo.live_key)
        load = SteadyLoad(client, demo.sms_template_id, interval=0.1)
        time.sleep(1.5)
        pg_proxy.cut()
        accepted_before_cut = len(load.accepted)
        time.sleep(5)
        accepted_during_cut = len(load.accepted) - accepted_before_cut
        pg_proxy.restore()
        time.sleep(1)
        load.stop()
        client.close()
        assert load.refused == []
        assert accepted_during_cut >= 20
        all_delivered(clean_db, load.accepted, timeout=30)
        stats = stack.stats()
        assert stats["sends"] == dict.fromkeys(load.accepted, 1)
        assert queue_depth(clean_broker, DEAD_LETTER) == 0


def test_receipts_that_arrive_while_the_database_is_away_are_applied_afterwards(
    outage_settings: Settings,
    clean_db: Engine,
    clean_broker: str,
    demo: DemoSetup,
    pg_proxy: TcpProxy,
    proxied_engine: Engine,
) -> None:
    with running_stack(outage_settings, proxied_engine, ingest_engine=clean_db, receipt_delay=1.0) as stack:
        client = IngestClient(stack.settings.ingest_address, demo.live_key)
        ids = [client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION).id for _ in range(5)]
        client.close()
        wait_for(lambda: set(statuses(clean_db, ids).values()) == {"sending"}, timeout=10)
        pg_proxy.cut()
        # Callbacks took every receipt (the simulator gave up on none) while nothing could be applied.
        wait_for(lambda: stack.stats()["receipts_posted"] == len(ids), timeout=10)
        assert set(statuses(clean_db, ids).values()) == {"sending"}
        # The broker's queue statistics lag by up to its collection interval (5 s): wait for them.
        wait_for(lambda: held_messages(clean_broker, "sms-callbacks") > 0, timeout=15, interval=0.5)
        pg_proxy.restore()
        all_delivered(clean_db, ids, timeout=15)
        stats = stack.stats()
        assert (stats["receipts_posted"], stats["receipts_dropped"]) == (len(ids), 0)
        assert queue_depth(clean_broker, DEAD_LETTER) == 0


def test_ingest_keeps_accepting_known_callers_while_its_database_is_away(
    outage_settings: Settings,
    clean_db: Engine,
    clean_broker: str,
    admin: Admin,
    demo: DemoSetup,
    pg_proxy: TcpProxy,
    proxied_engine: Engine,
) -> None:
    """Ingest serves the last good copy of a service, its keys and its template (cache_seconds has run out)
    while the database is away; what it cannot decide, it answers UNAVAILABLE, never INTERNAL."""
    stranger = admin.demo("never seen")
    settings = replace(outage_settings, cache_seconds=0.1)
    with running_stack(settings, clean_db, ingest_engine=proxied_engine) as stack:
        client = IngestClient(stack.settings.ingest_address, demo.live_key)
        first = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, first.id) == "delivered"
        time.sleep(0.2)  # past cache_seconds: the next reads go to the database, and find it away
        pg_proxy.cut()
        during = [client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION).id for _ in range(3)]
        with pytest.raises(grpc.RpcError) as lookup:
            client.get_notification(first.id)
        assert lookup.value.code() == grpc.StatusCode.UNAVAILABLE
        unknown = IngestClient(stack.settings.ingest_address, stranger.live_key)
        with pytest.raises(grpc.RpcError) as unseen:
            unknown.send_sms("07700900123", stranger.sms_template_id, SMS_PERSONALISATION)
        assert unseen.value.code() == grpc.StatusCode.UNAVAILABLE
        unknown.close()
        # The dispatchers have their own connection: what ingest accepted is delivered meanwhile.
        all_delivered(clean_db, during, timeout=15)
        pg_proxy.restore()
        assert client.get_notification(during[0]).status == "delivered"
        client.close()


@pytest.mark.parametrize("deadline", [10.0, 4.0])
def test_a_send_refused_while_the_broker_is_away_is_never_delivered(
    outage_settings: Settings, clean_db: Engine, clean_broker: str, demo: DemoSetup, deadline: float
) -> None:
    """An answer is the truth: ingest answers UNAVAILABLE within the caller's deadline (the client's
    default, and a shorter one), and the message it refused never turns up, even though the broker comes
    back at once; a retry under the same idempotency key then sends it, once."""
    mq_proxy = TcpProxy(MQ_HOST, MQ_PORT)
    proxied_broker = make_url(clean_broker).set(port=mq_proxy.port).render_as_string(hide_password=False)
    with running_stack(outage_settings, clean_db, ingest_broker_url=proxied_broker) as stack:
        client = IngestClient(stack.settings.ingest_address, demo.live_key, timeout=deadline)
        warm = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, warm.id) == "delivered"
        mq_proxy.cut()
        key = f"outage-{uuid.uuid4()}"
        refused_id = notification_id(demo.service_id, key)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION, idempotency_key=key)
        answered_after = time.monotonic() - started
        mq_proxy.restore()
        # Until ingest's publisher has given the message up (PublisherThread's retry_for, 10 s), the broker's
        # return could still let it out.
        time.sleep(max(0.0, 11.0 - answered_after))
        # A message sent after it has gone all the way through: had the refused one been published, it
        # would have been stored by now.
        after = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, after.id) == "delivered"
        stored = statuses(clean_db, [refused_id])
        assert (refused.value.code(), answered_after < deadline, stored) == (grpc.StatusCode.UNAVAILABLE, True, {})
        retried = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION, idempotency_key=key)
        assert retried.id == refused_id
        assert final_status(client, retried.id) == "delivered"
        assert stack.stats()["sends"][refused_id] == 1
        client.close()
    mq_proxy.close()


def test_the_same_idempotency_key_twice_is_one_notification_sent_once(
    outage_settings: Settings, clean_db: Engine, clean_broker: str, demo: DemoSetup
) -> None:
    with running_stack(outage_settings, clean_db) as stack:
        client = IngestClient(stack.settings.ingest_address, demo.live_key)

        def send(key: str) -> str:
            return client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION, idempotency_key=key).id

        first, again, other = send("order-1"), send("order-1"), send("order-2")
        assert first == again != other
        # A client retrying while its first call is still in flight: the repeats travel together.
        with ThreadPoolExecutor(max_workers=8) as pool:
            racing = set(pool.map(send, ["order-3"] * 8))
        assert len(racing) == 1
        ids = [first, other, *racing]
        all_delivered(clean_db, ids, timeout=15)
        time.sleep(0.5)  # the repeats' messages, behind the first in the queues, have been handled too
        client.close()
        stats = stack.stats()
        assert stats["sends"] == dict.fromkeys(ids, 1)
        assert stats["requests"] == dict.fromkeys(ids, 1)
        with clean_db.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM notifications")) == 3
