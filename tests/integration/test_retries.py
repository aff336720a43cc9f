"""The retry schedule, failover, leases and stale messages, on real PostgreSQL and RabbitMQ with the provider
simulator. The schedule is compressed (0.2 s waits, a 2 s lease); its shape is the seed's.

Most tests sweep with `redrive_due_notifications` themselves (every 0.1 s, started when the test is ready
to see the retry happen), so a row's waiting state can be looked at before it moves on; the lease test
runs the real scheduler.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from herald.clients import IngestClient
from herald.db import notifications as notifications_db
from herald.db.engine import make_engine
from herald.domain.retries import RetrySchedule
from herald.providers import MmgClient, SmsRequest
from herald.queues import ConfirmingPublisher
from herald.queues.codec import pack
from herald.queues.topology import DEAD_LETTER
from herald.scheduling import tasks
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.delivery import Republisher
from herald.settings import Settings
from herald.v1.notifications_pb2 import KeyType, NotificationType
from herald.v1.queue_pb2 import NotificationMessage
from tests.conftest import PG_HOST, PG_PORT
from tests.support import Stack, TcpProxy, final_status, queue_depth, running_stack, wait_for

SMS_PERSONALISATION = {"name": "Ada", "code": "1"}


@pytest.fixture
def retry_settings(settings: Settings) -> Settings:
    # MMG takes every first attempt (Firetext is the standby), so which provider a retry went to says
    # whether it failed over.
    return replace(
        settings,
        retry_delays="0.2,0.2,0.2,0.2,0.2",
        sweep_seconds=1,
        send_lease_seconds=2,
        sms_provider_weights="mmg=100,firetext=0",
    )


@pytest.fixture
def stack(retry_settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    with running_stack(retry_settings, clean_db) as running:
        yield running


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("retries")


@pytest.fixture
def client(stack: Stack, demo: DemoSetup) -> Iterator[IngestClient]:
    ingest = IngestClient(stack.settings.ingest_address, demo.live_key)
    yield ingest
    ingest.close()


@contextmanager
def sweeping(settings: Settings, engine: Engine, every: float = 0.1) -> Iterator[None]:
    """The scheduler's redrive-due-notifications, run every `every` seconds until the block ends."""
    publisher = ConfirmingPublisher(settings.broker_url)
    republish = Republisher(publisher, settings.email_domain)
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(every):
            tasks.redrive_due_notifications(engine, datetime.now(UTC), republish=republish)

    thread = threading.Thread(target=sweep, name="test-sweep", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        publisher.close()


def row(engine: Engine, notification_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT status, attempts, next_attempt_at, last_error, last_provider, sent_by"
                " FROM notifications WHERE id = :id"
            ),
            {"id": notification_id},
        ).one()


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(f"herald_{name}_total") or 0.0


def stored_sms(engine: Engine, demo: DemoSetup) -> str:
    """A live SMS stored as the db dispatcher stores it, never attempted; its id."""
    notification_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at)'
                " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi', 'created', 1, :at)"
            ),
            {"id": notification_id, "s": demo.service_id, "t": demo.sms_template_id, "at": datetime.now(UTC)},
        )
    return notification_id


def send_message(notification_id: str, demo: DemoSetup, attempt: int) -> NotificationMessage:
    """The send-sms message for a live SMS to 447700900123, as published for its `attempt`-th try."""
    message = NotificationMessage(
        id=notification_id,
        service_id=demo.service_id,
        template_id=demo.sms_template_id,
        template_version=1,
        type=NotificationType.SMS,
        to="447700900123",
        body="Hi",
        key_type=KeyType.NORMAL,
        sender="Herald",
        attempt=attempt,
    )
    message.created_at.GetCurrentTime()
    return message


def waiting_after_failure(client: IngestClient, notification_id: str, attempts: int) -> Any:
    """GetNotification once the row has `attempts` failed attempts and waits for its retry."""

    def waiting() -> Any:
        try:
            notification = client.get_notification(notification_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return notification if notification.attempts == attempts and notification.last_error else None

    return wait_for(waiting, timeout=10)


def test_the_seed_schedule_waits_5h_6min_10s_over_6_attempts() -> None:
    seed = RetrySchedule()
    assert seed == RetrySchedule.parse(Settings().retry_delays)
    assert timedelta(seconds=sum(seed.delays)) == timedelta(hours=5, minutes=6, seconds=10)
    assert seed.max_attempts == 6
    assert [seed.delay_after(n) for n in range(1, 7)] == [10, 60, 300, 3600, 14400, None]


def test_a_provider_failing_with_503_then_recovering_delivers_on_the_third_attempt(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    stack.control(fail_next=2, status=503)
    sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
    before = datetime.now(UTC)

    # No sweep yet: the first failure waits on the row, visible to the caller.
    waiting = waiting_after_failure(client, sent.id, attempts=1)
    assert waiting.status == "created"
    assert waiting.last_error == "mmg: HTTP 503"
    assert waiting.HasField("next_attempt_at")
    due = waiting.next_attempt_at.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) < due < datetime.now(UTC) + timedelta(seconds=1)

    with sweeping(stack.settings, clean_db):
        assert final_status(client, sent.id) == "delivered"
    stored = row(clean_db, sent.id)
    # mmg refused, firetext refused, mmg took it: a retry after a refusal goes to the other provider.
    assert (stored.attempts, stored.sent_by, stored.last_error, stored.next_attempt_at) == (3, "mmg", None, None)
    stats = stack.stats()
    assert stats["sends"] == {sent.id: 1}
    assert stats["requests"] == {sent.id: 3}
    delivered = client.get_notification(sent.id)
    assert (delivered.attempts, delivered.last_error, delivered.HasField("next_attempt_at")) == (3, "", False)


def test_a_provider_failing_every_time_is_technical_failure_after_exactly_6_attempts(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    stack.control(fail_all="status", status=503)
    with sweeping(stack.settings, clean_db):
        sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, sent.id) == "technical-failure"
    stored = row(clean_db, sent.id)
    assert stored.attempts == 6
    assert stored.last_error == "firetext: HTTP 503"  # mmg, firetext, ... the sixth went to firetext
    assert stored.next_attempt_at is None
    stats = stack.stats()
    assert stats["requests"] == {sent.id: 6}
    assert stats["sends"] == {}
    failed = client.get_notification(sent.id)
    assert (failed.attempts, failed.last_error) == (6, "firetext: HTTP 503")


def test_a_400_from_the_provider_is_technical_failure_after_one_attempt(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    stack.control(fail_next=1, status=400)
    with sweeping(stack.settings, clean_db):
        sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, sent.id) == "technical-failure"
    stored = row(clean_db, sent.id)
    assert (stored.attempts, stored.last_error) == (1, "mmg: HTTP 400")
    assert stack.stats()["requests"] == {sent.id: 1}


def test_an_sms_retry_after_a_refusal_fails_over_to_the_other_provider(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    stack.control(fail_all="status", status=503, provider="mmg")
    with sweeping(stack.settings, clean_db):
        sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
        assert final_status(client, sent.id) == "delivered"
    stored = row(clean_db, sent.id)
    assert (stored.attempts, stored.sent_by, stored.last_provider) == (2, "firetext", "firetext")
    stats = stack.stats()
    assert stats["requests"] == {sent.id: 2}
    assert stats["sends"] == {sent.id: 1}


def test_an_email_is_retried_at_ses(stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine) -> None:
    stack.control(fail_next=1, status=503, provider="ses")
    sent = client.send_email("someone@example.com", demo.email_template_id, {"name": "Ada", "code": "2"})
    assert "503" in waiting_after_failure(client, sent.id, attempts=1).last_error
    with sweeping(stack.settings, clean_db):
        assert final_status(client, sent.id) == "delivered"
    stored = row(clean_db, sent.id)
    assert (stored.attempts, stored.sent_by) == (2, "ses")
    assert stack.stats()["sends"] == {sent.id: 1}


def test_a_hand_off_whose_answer_was_lost_is_retried_at_the_same_provider(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    """MMG drops the connection without an answer: it may hold the message, so the retry goes back to
    MMG (which would de-duplicate it by reference), not to Firetext, which would send it a second time."""
    stack.control(fail_all="drop", provider="mmg")
    sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
    waiting = waiting_after_failure(client, sent.id, attempts=1)
    assert waiting.last_error == "mmg: connection failed (ConnectionClosed)"
    stack.control(fail_all=False, provider="mmg")
    with sweeping(stack.settings, clean_db):
        assert final_status(client, sent.id) == "delivered"
    stored = row(clean_db, sent.id)
    assert (stored.attempts, stored.sent_by) == (2, "mmg")
    stats = stack.stats()
    assert stats["requests"] == {sent.id: 2}
    assert stats["sends"] == {sent.id: 1}


def test_a_claim_whose_dispatcher_died_is_redriven_after_its_lease_and_sent_once(
    retry_settings: Settings, clean_db: Engine, clean_broker: str, demo: DemoSetup
) -> None:
    """A send dispatcher claimed a row, its request reached MMG, and it died before recording anything.
    After the lease the scheduler's sweep re-publishes the row to MMG, which answers from its de-duplication:
    the row moves on, and the message went out once. (Receipts come late here, so that the first hand-off's
    receipt does not settle the row before the re-drive.)"""
    with running_stack(retry_settings, clean_db, scheduler=True, receipt_delay=6.0) as stack:
        notification_id = stored_sms(clean_db, demo)
        redrives = counter("send_redrives")
        claimed_at = datetime.now(UTC)
        lease = timedelta(seconds=retry_settings.send_lease_seconds)
        with clean_db.begin() as conn:
            assert notifications_db.claim(conn, [(notification_id, 0, "mmg")], claimed_at, claimed_at + lease) == {
                (notification_id, 0)
            }
        with MmgClient(stack.simulator.url) as mmg:
            mmg.send_sms(SmsRequest(reference=notification_id, to="447700900123", body="Hi", sender="Herald"))

        def handed_off_again() -> Any:
            stored = row(clean_db, notification_id)
            return stored if stored.status != "created" else None

        stored = wait_for(handed_off_again, timeout=8)
        assert datetime.now(UTC) - claimed_at >= lease
        assert (stored.status, stored.attempts, stored.sent_by) == ("sending", 2, "mmg")
        assert counter("send_redrives") == redrives + 1
        client = IngestClient(stack.settings.ingest_address, demo.live_key)
        assert final_status(client, notification_id) == "delivered"
        client.close()
        stats = stack.stats()
        assert stats["requests"] == {notification_id: 2}
        assert stats["sends"] == {notification_id: 1}


def test_hand_offs_whose_outcome_cannot_be_written_through_a_database_outage_are_sent_once(
    retry_settings: Settings, database_url: str, clean_db: Engine, clean_broker: str, demo: DemoSetup
) -> None:
    """The send dispatcher loses PostgreSQL while its hand-offs are at the provider, for longer than the
    lease: it cannot record that the provider took them. When the database is back the rows are settled
    (by their receipts, or re-driven to the same provider once their lease ran out), each sent once."""
    proxy = TcpProxy(PG_HOST, PG_PORT)
    proxied = make_engine(make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False))
    try:
        with running_stack(retry_settings, proxied, ingest_engine=clean_db, scheduler=True) as stack:
            stack.control(latency=1.0)
            client = IngestClient(stack.settings.ingest_address, demo.live_key)
            ids = [client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION).id for _ in range(5)]

            def in_flight() -> bool:
                with clean_db.connect() as conn:
                    count = conn.scalar(
                        text("SELECT count(*) FROM notifications WHERE attempts = 1 AND status = 'created'")
                    )
                return bool(count)

            wait_for(in_flight, timeout=10)
            proxy.cut()  # a hand-off is at the provider for up to another second
            time.sleep(retry_settings.send_lease_seconds + 2)
            proxy.restore()
            for notification_id in ids:
                assert final_status(client, notification_id) == "delivered"
            client.close()
            stats = stack.stats()
            assert stats["sends"] == dict.fromkeys(ids, 1)
            assert queue_depth(clean_broker, DEAD_LETTER) == 0
    finally:
        proxied.dispose()
        proxy.close()


def test_a_stale_send_message_with_an_old_attempt_number_does_nothing(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    """A duplicate send-sms message (a redelivery, a second re-publish) names the attempt count the row had
    when it was published; once the row has moved past it, the message claims nothing and sends nothing."""
    stack.control(fail_next=1, status=503)
    sent = client.send_sms("07700900123", demo.sms_template_id, SMS_PERSONALISATION)
    waiting_after_failure(client, sent.id, attempts=1)

    stale = send_message(sent.id, demo, attempt=0)
    publisher = ConfirmingPublisher(stack.settings.broker_url)

    def publish_and_wait_until_skipped() -> None:
        skipped = counter("dispatcher_duplicate_skipped")
        publisher.publish_batch([("send-sms", pack([stale.SerializeToString()]))])
        wait_for(lambda: counter("dispatcher_duplicate_skipped") > skipped, timeout=10)

    # While the row waits for its retry (1 attempt made), the message for attempt 0 is stale.
    publish_and_wait_until_skipped()
    assert row(clean_db, sent.id).attempts == 1
    assert stack.stats()["requests"] == {sent.id: 1}

    with sweeping(stack.settings, clean_db):
        assert final_status(client, sent.id) == "delivered"
    # Once delivered, even the message of the attempt that succeeded is stale.
    stale.attempt = 1
    publish_and_wait_until_skipped()
    publisher.close()
    stored = row(clean_db, sent.id)
    assert (stored.status, stored.attempts) == ("delivered", 2)
    stats = stack.stats()
    assert stats["requests"] == {sent.id: 2}
    assert stats["sends"] == {sent.id: 1}


def test_a_batch_naming_one_notification_twice_hands_it_off_once(
    stack: Stack, client: IngestClient, demo: DemoSetup, clean_db: Engine
) -> None:
    """Two copies of one send message in a batch (an idempotency-key repeat persisted in the same db-sms
    batch as the first is published on with it): one claim, so one hand-off."""
    notification_id = stored_sms(clean_db, demo)
    copy = send_message(notification_id, demo, attempt=0).SerializeToString()
    publisher = ConfirmingPublisher(stack.settings.broker_url)
    publisher.publish_batch([("send-sms", pack([copy, copy]))])
    publisher.close()
    assert final_status(client, notification_id) == "delivered"
    assert row(clean_db, notification_id).attempts == 1
    assert stack.stats()["requests"] == {notification_id: 1}
