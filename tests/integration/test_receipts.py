"""Receipts applied to the real database (Notify's mapping, notify-v2.md section 3, forward only), early
receipts kept and applied later, and the receipts dispatcher on RabbitMQ."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald import bootstrap
from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.db.engine import make_engine
from herald.db.errors import is_transient
from herald.domain import statuses as st
from herald.queues import ConfirmingPublisher, Delivery
from herald.queues.codec import pack
from herald.queues.deadletter import browse
from herald.queues.topology import DEAD_LETTER, RECEIPT_QUEUES, queue
from herald.scheduling.tasks import apply_early_receipts
from herald.service_layer.admin import Admin
from herald.service_layer.receipts import PENDING_KEPT, ReceiptApplier, apply, apply_pending
from herald.settings import Settings
from herald.v1.queue_pb2 import Receipt
from services.dispatcher import app as dispatcher_app
from tests.support import free_port, wait_for

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(minutes=5)  # when the rows in flight were handed off
RECEIVED = NOW - timedelta(seconds=1)  # when callbacks took the receipts
Setup = dict[str, str]


@pytest.fixture(scope="module")
def setup(engine: Engine, settings: Settings) -> Setup:
    """One service for the module: every test works on notifications of its own, so no truncation
    between tests (which would cost more than all the receipts together)."""
    admin = Admin(engine, SecretBox(settings.secret_key))
    service = admin.create_service(f"Receipts test {uuid.uuid4()}")
    return {
        "service": service,
        "sms": admin.create_template(service, "sms", "sms", "Hi"),
        "email": admin.create_template(service, "email", "email", "Dear you", "Hello"),
    }


@pytest.fixture
def no_pending(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE receipts_pending"))
    return engine


def _insert(
    engine: Engine, setup: Setup, status: str = st.SENDING, kind: str = "sms", notification_id: str = ""
) -> str:
    """A notification row as the db dispatcher stores it; one in flight was handed off at EARLIER."""
    notification_id = notification_id or str(uuid.uuid4())
    in_flight = status != st.CREATED
    row = {
        "id": notification_id,
        "service_id": setup["service"],
        "template_id": setup[kind],
        "template_version": 1,
        "key_type": "normal",
        "notification_type": kind,
        "to": "447700900123" if kind == "sms" else "someone@example.com",
        "body": "Hi" if kind == "sms" else "Dear you",
        "subject": None if kind == "sms" else "Hello",
        "reference": None,
        "status": status,
        "billable_units": 1,
        "sent_by": ("mmg" if kind == "sms" else "ses") if in_flight else None,
        "created_at": EARLIER - timedelta(minutes=1),
        "sent_at": EARLIER if in_flight else None,
        "updated_at": EARLIER if in_flight else None,
    }
    with engine.begin() as conn:
        assert notifications_db.insert_batch(conn, [row]) == {notification_id}
    return notification_id


def _stored(engine: Engine, notification_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, sent_by, sent_at, updated_at FROM notifications WHERE id = :id"),
            {"id": notification_id},
        ).one()
    return dict(row._mapping)


def _statuses(engine: Engine, ids: Sequence[str]) -> list[str]:
    return [_stored(engine, i)["status"] for i in ids]


def _pending(engine: Engine) -> list[tuple[str, str, str, str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT notification_id, provider, status, code, received_at FROM receipts_pending ORDER BY id")
        )
        return [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


def _receipt(provider: str, reference: str, status: str, code: str = "", received_at: datetime = RECEIVED) -> Receipt:
    receipt = Receipt(provider=provider, reference=reference, status=status, code=code)
    receipt.received_at.FromDatetime(received_at)
    return receipt


def _apply(engine: Engine, receipts: Sequence[Receipt], now: datetime = NOW) -> list[Receipt]:
    with engine.begin() as conn:
        return apply(conn, receipts, now)


def _body(receipts: Sequence[Receipt]) -> bytes:
    return pack(r.SerializeToString() for r in receipts)


class _Message:
    """What ReceiptApplier uses of a kombu message, for handing it batches without a broker."""

    def __init__(self) -> None:
        self.state = ""

    @property
    def acknowledged(self) -> bool:
        return bool(self.state)

    def ack(self) -> None:
        assert not self.state, self.state
        self.state = "ACK"

    def reject(self, requeue: bool = False) -> None:
        assert not self.state, self.state
        self.state = "REJECTED"


def _delivery(receipts: Sequence[Receipt], name: str = "sms-callbacks") -> Delivery:
    return Delivery(name, _body(receipts), False, _Message(), {})


@pytest.fixture
def applier(settings: Settings, no_pending: Engine) -> Iterator[ReceiptApplier]:
    publisher = ConfirmingPublisher(settings.broker_url)  # for dead letters only; connects when first used
    yield ReceiptApplier(no_pending, publisher)
    publisher.close()


# --- Notify's mapping, given the current status --------------------------------------------------

S, P, D = st.SENDING, st.PENDING, st.DELIVERED
TEMP, PERM, TECH = st.TEMPORARY_FAILURE, st.PERMANENT_FAILURE, st.TECHNICAL_FAILURE
FIRETEXT_TEMPORARY_CODES = ("000", "102", "103", "104", "302", "900")
FIRETEXT_PERMANENT_CODES = ("101", "201", "301", "401")


@pytest.mark.parametrize(
    ("provider", "status", "code", "current", "expected"),
    [
        ("mmg", "2", "", S, PERM), ("mmg", "3", "", S, D), ("mmg", "4", "", S, TEMP), ("mmg", "5", "", S, PERM),
        ("mmg", "7", "", S, TECH),  # an unknown status is technical-failure
        ("mmg", "3", "", st.CREATED, D), ("mmg", "3", "", st.SENT, D), ("mmg", "4", "", P, TEMP),
        ("firetext", "0", "", S, D), ("firetext", "1", "", S, PERM), ("firetext", "2", "", S, P),
        ("firetext", "9", "", S, TECH), ("firetext", "2", "", st.SENT, P), ("firetext", "0", "", P, D),
        *[("firetext", "1", code, S, TEMP) for code in FIRETEXT_TEMPORARY_CODES],
        *[("firetext", "1", code, S, PERM) for code in FIRETEXT_PERMANENT_CODES],
        ("firetext", "1", "999", S, PERM),  # an unknown code: the status alone decides
        ("firetext", "1", "", P, TEMP),  # "1" with no code after pending is temporary (Notify)
        ("firetext", "1", "999", P, TEMP),
        ("firetext", "1", "101", P, PERM),  # a permanent code wins over the pending rule
        ("firetext", "1", "", st.SENT, PERM),
        ("ses", "Delivery", "", S, D), ("ses", "Bounce", "Permanent", S, PERM),
        ("ses", "Bounce", "Transient", S, TEMP), ("ses", "Bounce", "Undetermined", S, TEMP),
        ("ses", "Complaint", "", S, S),  # a complaint leaves the status alone
        ("ses", "Something", "", S, TECH),
    ],
)  # fmt: skip
def test_receipt_maps_as_notify_does(
    setup: Setup, engine: Engine, provider: str, status: str, code: str, current: str, expected: str
) -> None:
    notification_id = _insert(engine, setup, current, "email" if provider == "ses" else "sms")
    before = _stored(engine, notification_id)
    assert _apply(engine, [_receipt(provider, notification_id, status, code)]) == []
    stored = _stored(engine, notification_id)
    assert stored["status"] == expected
    if expected == current:
        assert stored == before
    else:
        assert stored["updated_at"] == NOW
    if current != st.CREATED:  # handed off earlier: who sent it, and when, stay as they were
        assert (stored["sent_by"], stored["sent_at"]) == (before["sent_by"], before["sent_at"])


def test_receipt_for_a_row_not_handed_off_yet_records_who_sent_it(setup: Setup, engine: Engine) -> None:
    """A receipt can overtake the dispatcher's record of the hand-off: the row says who sent it, and when."""
    notification_id = _insert(engine, setup, st.CREATED)
    _apply(engine, [_receipt("firetext", notification_id, "0")])
    assert _stored(engine, notification_id) == {"status": D, "sent_by": "firetext", "sent_at": NOW, "updated_at": NOW}


# --- Forward only --------------------------------------------------------------------------------

EVERY_RECEIPT = [
    ("mmg", "2", ""), ("mmg", "3", ""), ("mmg", "4", ""), ("mmg", "5", ""), ("mmg", "7", ""),
    ("firetext", "0", ""), ("firetext", "1", ""), ("firetext", "1", "102"), ("firetext", "2", ""),
    ("ses", "Delivery", ""), ("ses", "Bounce", "Permanent"), ("ses", "Bounce", "Transient"), ("ses", "Complaint", ""),
]  # fmt: skip


@pytest.mark.parametrize("final", [D, TEMP, PERM, TECH])
def test_a_final_status_never_changes(setup: Setup, engine: Engine, final: str) -> None:
    notification_id = _insert(engine, setup, final)
    before = _stored(engine, notification_id)
    for provider, status, code in EVERY_RECEIPT:
        _apply(engine, [_receipt(provider, notification_id, status, code)], NOW + timedelta(minutes=1))
        assert _stored(engine, notification_id) == before, (provider, status, code)


@pytest.mark.parametrize(("provider", "status"), [("mmg", "3"), ("firetext", "2"), ("ses", "Delivery")])
def test_a_duplicate_receipt_changes_nothing(setup: Setup, engine: Engine, provider: str, status: str) -> None:
    notification_id = _insert(engine, setup, kind="email" if provider == "ses" else "sms")
    _apply(engine, [_receipt(provider, notification_id, status)])
    first = _stored(engine, notification_id)
    assert first["updated_at"] == NOW
    _apply(engine, [_receipt(provider, notification_id, status)], NOW + timedelta(minutes=1))
    assert _stored(engine, notification_id) == first


# --- Several receipts for one notification in one batch: applied in their order -----------------


@pytest.mark.parametrize(
    ("receipts", "expected"),
    [
        ([("firetext", "2", ""), ("firetext", "1", "")], TEMP),
        ([("firetext", "2", ""), ("firetext", "0", "")], D),
        ([("firetext", "0", ""), ("firetext", "2", "")], D),
        ([("firetext", "2", ""), ("firetext", "2", ""), ("firetext", "1", "101")], PERM),
        ([("mmg", "3", ""), ("mmg", "4", "")], D),
        ([("mmg", "4", ""), ("mmg", "3", "")], TEMP),
    ],
)
def test_receipts_of_one_batch_apply_in_order(
    setup: Setup, engine: Engine, receipts: list[tuple[str, str, str]], expected: str
) -> None:
    notification_id = _insert(engine, setup)
    other = _insert(engine, setup)  # a neighbour in the same batch is not disturbed
    batch = [_receipt(provider, notification_id, status, code) for provider, status, code in receipts]
    assert _apply(engine, [*batch, _receipt("mmg", other, "2")]) == []
    assert _statuses(engine, [notification_id, other]) == [expected, PERM]


# --- Early receipts: kept until the notification is stored ---------------------------------------


def test_early_receipts_wait_then_apply_in_order(setup: Setup, engine: Engine, applier: ReceiptApplier) -> None:
    early_id, stored_id = str(uuid.uuid4()), _insert(engine, setup)
    receipts = [
        _receipt("firetext", early_id, "2"),
        _receipt("mmg", stored_id, "3"),
        _receipt("firetext", early_id, "1"),
    ]
    delivery = _delivery(receipts)
    applier([delivery])
    assert delivery.message.state == "ACK"
    assert _statuses(engine, [stored_id]) == [D]
    assert _pending(engine) == [
        (early_id, "firetext", "2", "", RECEIVED),
        (early_id, "firetext", "1", "", RECEIVED),
    ]
    assert apply_pending(engine, NOW, 100) == (0, 0)  # its notification is still not stored
    assert len(_pending(engine)) == 2
    _insert(engine, setup, notification_id=early_id)
    # One receipt per round: the order holds across rounds too ("1" after pending is temporary).
    assert apply_pending(engine, NOW, 1) == (2, 0)
    assert _stored(engine, early_id)["status"] == TEMP
    assert _pending(engine) == []


def test_early_receipt_is_applied_by_the_scheduler_task(setup: Setup, engine: Engine, applier: ReceiptApplier) -> None:
    notification_id = str(uuid.uuid4())
    applier([_delivery([_receipt("ses", notification_id, "Bounce", "Permanent")], "ses-callbacks")])
    _insert(engine, setup, kind="email", notification_id=notification_id)
    assert apply_early_receipts(engine, NOW) == "applied 1, dropped 0"
    assert _stored(engine, notification_id)["status"] == PERM


def test_early_receipts_are_dropped_after_seven_days(setup: Setup, engine: Engine, applier: ReceiptApplier) -> None:
    old, young = str(uuid.uuid4()), str(uuid.uuid4())
    applier(
        [
            _delivery(
                [
                    _receipt("mmg", old, "3"),
                    _receipt("mmg", young, "3", received_at=RECEIVED + timedelta(days=1)),
                ]
            )
        ]
    )
    kept_until = RECEIVED + PENDING_KEPT
    assert apply_pending(engine, kept_until, 100) == (0, 0)
    assert [p[0] for p in _pending(engine)] == [old, young]
    assert apply_pending(engine, kept_until + timedelta(microseconds=1), 100) == (0, 1)
    assert [p[0] for p in _pending(engine)] == [young]
    assert apply_early_receipts(engine, kept_until + timedelta(days=1, seconds=1)) == "applied 0, dropped 1"
    assert _pending(engine) == []


# --- Two appliers racing on the same notifications -----------------------------------------------


def _race(appliers: Sequence[ReceiptApplier], batches: Sequence[Sequence[Receipt]]) -> list[Delivery]:
    """Each applier takes its batch in a thread of its own, all released at once."""
    deliveries = [_delivery(batch) for batch in batches]
    barrier = threading.Barrier(len(deliveries))
    errors: list[BaseException] = []

    def run(applier: ReceiptApplier, delivery: Delivery) -> None:
        barrier.wait()
        try:
            applier([delivery])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(appliers, deliveries, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    return deliveries


@pytest.mark.parametrize(
    ("first", "second", "outcomes"),
    [
        (("mmg", "3"), ("mmg", "4"), [{D}, {TEMP}]),  # one applier wins every row: it locked them all first
        (("firetext", "2"), ("firetext", "0"), [{D}]),  # pending then delivered, or delivered alone
        (("mmg", "3"), ("mmg", "3"), [{D}]),
    ],
)
def test_racing_appliers_give_one_consistent_status(
    setup: Setup,
    engine: Engine,
    settings: Settings,
    first: tuple[str, str],
    second: tuple[str, str],
    outcomes: list[set[str]],
) -> None:
    publishers = [ConfirmingPublisher(settings.broker_url) for _ in range(2)]  # one per thread, as in dispatchers
    appliers = [ReceiptApplier(engine, publisher) for publisher in publishers]
    for _ in range(5):
        ids = [_insert(engine, setup) for _ in range(20)]
        # Opposite orders in the two batches: locks are still taken in id order, so no deadlock.
        batches = [
            [_receipt(first[0], i, first[1]) for i in ids],
            [_receipt(second[0], i, second[1]) for i in reversed(ids)],
        ]
        deliveries = _race(appliers, batches)
        assert [d.message.state for d in deliveries] == ["ACK", "ACK"]
        assert set(_statuses(engine, ids)) in outcomes
    for publisher in publishers:
        publisher.close()


# --- The receipts dispatcher on RabbitMQ ---------------------------------------------------------


@pytest.fixture
def dispatcher(settings: Settings, no_pending: Engine, clean_broker: str) -> Iterator[Callable[[], None]]:
    """`herald dispatcher --queues sms-callbacks,ses-callbacks`; yields its stop (safe to call early)."""
    s = replace(settings, dispatcher_address=f"127.0.0.1:{free_port()}")
    stop = bootstrap.start_dispatcher(s, no_pending, list(RECEIPT_QUEUES))
    stopped = threading.Event()

    def stop_once() -> None:
        if not stopped.is_set():
            stopped.set()
            stop()

    yield stop_once
    stop_once()


def _publish(broker_url: str, messages: Sequence[tuple[str, bytes]]) -> None:
    publisher = ConfirmingPublisher(broker_url)
    try:
        publisher.publish_batch(messages)
    finally:
        publisher.close()


def _left_on(broker_url: str, name: str) -> int:
    """Messages ready on `name` (not counting those a consumer holds unacked)."""
    with Connection(broker_url) as conn:
        return int(queue(name)(conn.default_channel).queue_declare(passive=True).message_count)


def test_dispatcher_applies_receipts_from_both_queues(
    setup: Setup, engine: Engine, dispatcher: Callable[[], None], clean_broker: str
) -> None:
    delivered, declined, bounced = (
        _insert(engine, setup),
        _insert(engine, setup),
        _insert(engine, setup, kind="email"),
    )
    early = str(uuid.uuid4())
    sms = [_receipt("mmg", delivered, "3"), _receipt("firetext", declined, "2"), _receipt("firetext", declined, "1")]
    _publish(
        clean_broker,
        [
            ("sms-callbacks", _body(sms)),
            ("ses-callbacks", _body([_receipt("ses", bounced, "Bounce", "Permanent")])),
            ("sms-callbacks", _body([_receipt("mmg", early, "3")])),
        ],
    )
    wait_for(lambda: _statuses(engine, [delivered, declined, bounced]) == [D, TEMP, PERM], timeout=10)
    wait_for(lambda: [p[0] for p in _pending(engine)] == [early], timeout=10)
    dispatcher()  # anything not acked would be back on its queue now
    assert {name: _left_on(clean_broker, name) for name in RECEIPT_QUEUES} == {name: 0 for name in RECEIPT_QUEUES}


def test_receipts_gather_in_a_lane_of_their_own(settings: Settings, engine: Engine) -> None:
    """Receipt batches linger longer, so each transaction applies many; a received text or a send consumed
    by the same process is not held back by that."""
    s = replace(settings, dispatcher_address=f"127.0.0.1:{free_port()}")
    built = dispatcher_app.build(s, engine, [*RECEIPT_QUEUES, "db-sms", "inbound-sms"])
    try:
        lingers = {tuple(consumer.queue_names): consumer.linger for consumer in built.consumers}
    finally:
        built.server.stop(0)
    assert lingers == {RECEIPT_QUEUES: dispatcher_app.RECEIPT_LINGER, ("db-sms", "inbound-sms"): s.db_batch_linger}
    assert s.db_batch_linger < dispatcher_app.RECEIPT_LINGER


def test_bad_messages_are_dead_lettered_without_blocking_neighbours(
    setup: Setup, engine: Engine, dispatcher: Callable[[], None], clean_broker: str
) -> None:
    beside_bad, after_bad = _insert(engine, setup), _insert(engine, setup)
    malformed = _receipt("mmg", "not-a-uuid", "3")
    _publish(
        clean_broker,
        [
            ("sms-callbacks", b"\xff\xff\xff"),  # not a ReceiptBatch at all
            ("sms-callbacks", _body([malformed, _receipt("mmg", beside_bad, "3")])),
            ("sms-callbacks", _body([_receipt("firetext", after_bad, "0")])),
        ],
    )
    wait_for(lambda: _statuses(engine, [beside_bad, after_bad]) == [D, D], timeout=10)
    wait_for(lambda: _left_on(clean_broker, DEAD_LETTER) == 2, timeout=10)
    dispatcher()
    with browse(clean_broker) as letters:
        found = sorted((letter.queue, letter.reason, letter.ids, letter.body) for letter in letters)
    assert found == [
        ("sms-callbacks", "malformed", ("not-a-uuid",), _body([malformed])),
        ("sms-callbacks", "rejected", (), b"\xff\xff\xff"),
    ]
    assert _left_on(clean_broker, "sms-callbacks") == 0
    assert _pending(engine) == []


# --- A database that is away: the consumer keeps the batch and hands the same one over again ------


@pytest.fixture
def away(settings: Settings, clean_broker: str) -> Iterator[tuple[ReceiptApplier, Any]]:
    """An applier whose database is away, and a channel to take real sms-callbacks messages on."""
    unreachable = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/herald")
    publisher = ConfirmingPublisher(settings.broker_url)
    with Connection(clean_broker) as conn:
        channel = conn.channel()
        yield ReceiptApplier(unreachable, publisher), channel
        channel.close()  # what was not acked goes back to its queue
    publisher.close()
    unreachable.dispose()


def _taken(broker_url: str, channel: Any, bodies: Sequence[bytes]) -> list[Delivery]:
    """Real kombu messages of sms-callbacks, unacknowledged, as BatchConsumer hands them to a handler."""
    _publish(broker_url, [("sms-callbacks", body) for body in bodies])
    bound = queue("sms-callbacks")(channel)
    messages = [wait_for(lambda: bound.get(no_ack=False), timeout=5) for _ in bodies]
    return [Delivery("sms-callbacks", m.body, False, m, m.headers or {}) for m in messages]


def _fails_transiently(applier: ReceiptApplier, batch: Sequence[Delivery]) -> None:
    with pytest.raises(Exception) as err:
        applier(batch)
    assert is_transient(err.value), repr(err.value)


def test_batch_with_an_undecodable_message_fails_the_same_way_when_retried(
    away: tuple[ReceiptApplier, Any], clean_broker: str
) -> None:
    """BatchConsumer hands the very same batch over again while the database is away (retry in place):
    the second attempt must still be the outage, not a fault that requeues the batch."""
    applier, channel = away
    batch = _taken(clean_broker, channel, [b"\xff\xff\xff", _body([_receipt("mmg", str(uuid.uuid4()), "3")])])
    _fails_transiently(applier, batch)
    _fails_transiently(applier, batch)
    assert not batch[1].message.acknowledged


def test_malformed_receipt_is_dead_lettered_once_however_often_its_batch_is_retried(
    away: tuple[ReceiptApplier, Any], clean_broker: str
) -> None:
    applier, channel = away
    batch = _taken(
        clean_broker, channel, [_body([_receipt("mmg", "not-a-uuid", "3"), _receipt("mmg", str(uuid.uuid4()), "3")])]
    )
    for _ in range(3):
        _fails_transiently(applier, batch)
    assert not batch[0].message.acknowledged
    # Nothing is settled until the batch's work commits: the malformed receipt is dead-lettered once,
    # when the database is back, not once per attempt.
    assert _left_on(clean_broker, DEAD_LETTER) == 0
