"""SendSmsBatch against the same items sent one by one, with the service's rules on: every kind of bad item
interleaved, threads racing for a daily limit and for the rate limit, a database read failing mid-batch,
and the one-batch-at-a-time gate (Sender._one_batch_at_a_time) around a slow database read. The real
database, broker and Redis; the counter's clock frozen where an answer must not depend on timing."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from herald.crypto import SecretBox
from herald.db.engine import make_engine
from herald.db.errors import is_transient
from herald.domain import limits
from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import Server, ServiceBinding
from herald.limits.local_counter import LocalSendCounter
from herald.limits.redis_counter import RedisSendCounter
from herald.queues import PublisherThread
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator, Caller
from herald.service_layer.errors import InvalidRequest
from herald.service_layer.rules import ServiceRules
from herald.service_layer.senders import Senders
from herald.service_layer.sending import (
    KEY_REUSED,
    Accepted,
    ItemRefused,
    SendCommand,
    Sender,
    notification_id,
)
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.app import SERVICE_NAME
from services.ingest.servicer import IngestServicer
from tests.conftest import PG_HOST, PG_PORT
from tests.integration.test_service_rules import EMAIL, REDIS_URL, SMS, Setup, _redis_or_skip
from tests.support import TcpProxy, bearer, take_queued, wait_for

Outcome = tuple[str, ...]  # ("accepted", body, sender, reference) or (code, field, message)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"herald_{name}_total", labels) or 0.0


def _outcome(result: Accepted | ItemRefused) -> Outcome:
    if isinstance(result, Accepted):
        return ("accepted", result.body, result.from_number, result.reference)
    return (result.code, result.field, result.message)


def _send_alone(sender: Sender, caller: Caller, command: SendCommand) -> Outcome:
    try:
        return _outcome(sender.send(caller, command))
    except (InvalidRequest, limits.LimitExceeded) as exc:
        return _outcome(ItemRefused.of(exc))


def _caller(engine: Engine, settings: Settings, api_key: str) -> Caller:
    return Authenticator(engine, SecretBox(settings.secret_key)).authenticate(bearer(api_key)[0][1])


# The 1,000-item batch against 1,000 single sends, through the gRPC servicer.

GUESTS = ["07700900001", "07700900002", "07700900003", "+33 6 12 34 56 78"]
UNKNOWN_TEMPLATE = str(uuid.uuid4())
UNKNOWN_SENDER = str(uuid.uuid4())
# How often each kind of item comes, in a batch of 1,000: about 600 pass their own checks and trial mode,
# enough to pass the daily limits (400 texts, 12 international) and then empty the bucket (501 tokens).
KINDS = {
    "guest": 30,
    "guest spelled otherwise": 5,
    "international guest": 6,
    "known sender": 5,
    "keyed": 8,
    "the same keyed request again": 6,
    "stranger": 5,
    "international stranger": 2,
    "too few digits": 3,
    "letters": 3,
    "NUL in personalisation": 3,
    "NUL in reference": 2,
    "reference too long": 3,
    "personalisation missing": 4,
    "email template": 3,
    "unknown template": 3,
    "malformed template id": 2,
    "unknown sms sender": 3,
    "malformed sms sender": 2,
}


class Twin:
    """One of two services made alike: trial mode with a guest list, daily limits, a second SMS sender."""

    def __init__(self, admin: Admin, engine: Engine) -> None:
        self.service_id = admin.create_service(f"Twin {uuid.uuid4()}", restricted=True, can_send_international_sms=True)
        admin.set_guest_list(self.service_id, GUESTS)
        admin.update_service(
            self.service_id,
            limit_values={"rate_limit": 1500, "sms_message_limit": 400, "international_sms_message_limit": 12},
        )
        self.key = admin.create_api_key(self.service_id, "live", "normal")
        self.sms = admin.create_template(self.service_id, "sms", "sms", "Hi ((name))")
        self.email = admin.create_template(self.service_id, "email", "email", "Dear ((name))", "Hello")
        self.sender_id = Senders(engine).add_sms_sender(self.service_id, "Twin", False).id

    def request(self, kind: str, index: int) -> ingest_pb2.SendSmsRequest:
        to, template, name = GUESTS[index % 3], self.sms, "Ada"
        request = ingest_pb2.SendSmsRequest(reference=f"r{index}")
        if kind == "guest spelled otherwise":
            to = "+44 7700 900 00" + str(1 + index % 3)
        elif kind == "international guest":
            to = GUESTS[3]
        elif kind == "known sender":
            request.sms_sender_id = self.sender_id
        elif kind == "keyed":
            request.idempotency_key = f"key-{index}"
        elif kind == "the same keyed request again":
            to, request.reference, request.idempotency_key = GUESTS[0], "again", "again"
        elif kind == "stranger":
            to = "07700900999"
        elif kind == "international stranger":
            to = "+1 202 555 0143"
        elif kind == "too few digits":
            to = "123"
        elif kind == "letters":
            to = "not a number"
        elif kind == "NUL in personalisation":
            name = "A\x00da"
        elif kind == "NUL in reference":
            request.reference = "r\x00"
        elif kind == "reference too long":
            request.reference = "r" * 1001
        elif kind == "email template":
            template = self.email
        elif kind == "unknown template":
            template = UNKNOWN_TEMPLATE
        elif kind == "malformed template id":
            template = "not-a-uuid"
        elif kind == "unknown sms sender":
            request.sms_sender_id = UNKNOWN_SENDER
        elif kind == "malformed sms sender":
            request.sms_sender_id = "sender"
        request.phone_number, request.template_id = to, template
        if kind != "personalisation missing":
            request.personalisation.update({"name": name})
        return request

    def same_for_both(self, outcome: Outcome) -> Outcome:
        """Outcomes of either twin made comparable: refusals may name the service."""
        return tuple(part.replace(self.service_id, "<service>") for part in outcome)


@pytest.fixture
def ruled_ingest(
    clean_db: Engine, clean_broker: str, settings: Settings, publisher_thread: PublisherThread
) -> Iterator[ingest_pb2_grpc.IngestStub]:
    """Ingest's servicer as its process builds it, rules included, on a counter whose clock stands still:
    a bucket never refills, so which item empties it does not depend on how fast the test runs."""
    sender = Sender(
        clean_db,
        publisher_thread.publish,
        settings.email_domain,
        rules=ServiceRules(clean_db, LocalSendCounter(lambda: 1_000.0)),
        publish_many=publisher_thread.publish_many,
    )
    servicer = IngestServicer(Authenticator(clean_db, SecretBox(settings.secret_key)), sender, clean_db)
    server = Server(
        "127.0.0.1:0", [ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, SERVICE_NAME)]
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield ingest_pb2_grpc.IngestStub(channel)
    finally:
        server.stop(0)


def _counted() -> dict[str, float]:
    return {
        "accepted": _metric("api_accepted", type="sms", key_type="normal"),
        "rate limited": _metric("rate_limit_refused", key_type="normal"),
        "sms limit": _metric("daily_limit_refused", kind="sms"),
        "international limit": _metric("daily_limit_refused", kind="international_sms"),
    }


def _change(before: dict[str, float]) -> dict[str, float]:
    return {name: value - before[name] for name, value in _counted().items()}


def test_a_1000_item_batch_answers_each_item_as_a_single_send_would(
    ruled_ingest: ingest_pb2_grpc.IngestStub, admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    plan = random.Random(7).choices(list(KINDS), weights=list(KINDS.values()), k=1000)
    alone, together = Twin(admin, clean_db), Twin(admin, clean_db)

    before = _counted()
    one_by_one: list[Outcome] = []
    for index, kind in enumerate(plan):
        try:
            sent = ruled_ingest.SendSms(alone.request(kind, index), metadata=bearer(alone.key))
        except grpc.RpcError as err:
            violation = field_violations(err) or [("", err.details())]
            one_by_one.append(alone.same_for_both((err.code().name, *violation[0])))
            continue
        one_by_one.append(("accepted", sent.body, sent.from_number, sent.reference))
    counted_alone = _change(before)
    queued_alone = take_queued(settings.broker_url, "db-sms")

    before = _counted()
    answer = ruled_ingest.SendSmsBatch(
        ingest_pb2.SendSmsBatchRequest(items=[together.request(kind, index) for index, kind in enumerate(plan)]),
        metadata=bearer(together.key),
    )
    counted_together = _change(before)
    queued_together = take_queued(settings.broker_url, "db-sms")
    batch: list[Outcome] = []
    for result in answer.results:
        if result.HasField("accepted"):
            item = result.accepted
            batch.append(("accepted", item.body, item.from_number, item.reference))
        else:
            batch.append(together.same_for_both((result.error.code, result.error.field, result.error.message)))

    for index, (kind, single, batched) in enumerate(zip(plan, one_by_one, batch, strict=True)):
        assert batched == single, f"item {index} ({kind})"
    assert counted_together == counted_alone
    assert all(counted_alone.values())  # each limit was reached, and refusals were counted
    assert counted_alone["accepted"] == sum(1 for o in one_by_one if o[0] == "accepted")
    assert [(m.to, m.body, m.sender) for m in queued_together] == [(m.to, m.body, m.sender) for m in queued_alone]
    assert len(queued_together) == counted_alone["accepted"]
    # Every way a single send refuses something turned up, and each came back for the batch's items.
    assert {o[0] for o in one_by_one} == {"accepted", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    assert {o[2] for o in one_by_one if o[0] == "RESOURCE_EXHAUSTED"} == {
        "Exceeded send limits (sms: 400) for today",
        "Exceeded send limits (international_sms: 12) for today",
        "Exceeded rate limit for key type LIVE of 1500 requests per 60 seconds",
    }
    # Ids: a keyed item's comes from its key (the repeats share one), the others' are fresh version 4 UUIDs.
    ids = [(kind, r.accepted.id) for kind, r in zip(plan, answer.results, strict=True) if r.HasField("accepted")]
    for kind, id_ in ids:
        if kind == "the same keyed request again":
            assert id_ == notification_id(together.service_id, "again")
        elif kind != "keyed":
            assert uuid.UUID(id_).version == 4
    unkeyed = [id_ for kind, id_ in ids if kind not in ("keyed", "the same keyed request again")]
    assert len(set(unkeyed)) == len(unkeyed)


# Threads racing: batches and single sends of one service, against its daily limit and its rate limit.


def _race(setup: Setup, batches: int, size: int, singles: int, threads: int) -> tuple[list[Outcome], float]:
    """`threads` threads each sending `batches` batches of `size` texts and `singles` single texts, their
    sends interleaved; every outcome, and how long the race took."""
    caller = setup.caller("normal")
    outcomes: list[Outcome] = []
    start = threading.Barrier(threads)

    def run(thread: int) -> None:
        mine: list[Outcome] = []
        start.wait()
        for round_ in range(max(batches, singles)):
            if round_ < batches:
                commands = [SendCommand(SMS, f"07700900{thread:01d}{i % 100:02d}", setup.sms) for i in range(size)]
                mine += [_outcome(r) for r in setup.sender.send_batch(caller, commands)]
            if round_ < singles:
                mine.append(_send_alone(setup.sender, caller, SendCommand(SMS, "07700900555", setup.sms)))
        outcomes.extend(mine)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes, time.monotonic() - began


@pytest.mark.parametrize("counter", ["local", "redis"])
def test_batches_and_single_sends_from_threads_never_pass_the_daily_limit(
    admin: Admin, clean_db: Engine, settings: Settings, counter: str
) -> None:
    if counter == "redis":
        _redis_or_skip()
    # The local clock stands still, so the bucket's 1,000 tokens are all there is: the race's 960 sends fit,
    # and only the daily limit refuses (a send it refuses still takes its token).
    counting: Any = RedisSendCounter(REDIS_URL) if counter == "redis" else LocalSendCounter(lambda: 1_000.0)
    setup = Setup(admin, clean_db, settings, counting)
    admin.update_service(setup.service_id, limit_values={"rate_limit": 1_000_000, "sms_message_limit": 777})
    before = _counted()
    outcomes, _ = _race(setup, batches=2, size=70, singles=20, threads=6)
    counted = _change(before)
    counting.close()  # a Redis counter gives back the units it leased but did not use
    accepted = sum(1 for o in outcomes if o[0] == "accepted")
    assert accepted == len(setup.published) == counted["accepted"] == 777
    assert (
        outcomes.count(("RESOURCE_EXHAUSTED", "", "Exceeded send limits (sms: 777) for today")) == len(outcomes) - 777
    )
    assert counted["sms limit"] == len(outcomes) - 777 and counted["rate limited"] == 0
    if counter == "redis":
        key = limits.daily_count_key(setup.service_id, "sms", datetime.now(UTC))
        assert redis.Redis.from_url(REDIS_URL).get(key) == b"777"


def test_the_rate_limit_counts_each_send_of_batches_and_single_sends_from_threads_once(
    admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    setup = Setup(admin, clean_db, settings, LocalSendCounter())
    admin.update_service(setup.service_id, limit_values={"rate_limit": 60})  # a bucket of 21, 1 more a second
    before = _counted()
    outcomes, took = _race(setup, batches=5, size=8, singles=20, threads=4)
    counted = _change(before)
    accepted = sum(1 for o in outcomes if o[0] == "accepted")
    refused = outcomes.count(
        ("RESOURCE_EXHAUSTED", "", "Exceeded rate limit for key type LIVE of 60 requests per 60 seconds")
    )
    assert accepted + refused == len(outcomes) == 4 * (5 * 8 + 20)
    assert 21 <= accepted <= 21 + took * 1.0 + 1
    assert accepted == len(setup.published) == counted["accepted"]
    assert refused == counted["rate limited"]


# A batch cut short by a failure, and the gate around each batch's preparation.


def test_a_batch_failing_on_a_database_read_counts_nothing_and_frees_the_gate(
    admin: Admin, clean_db: Engine, settings: Settings, database_url: str
) -> None:
    """Its items that were ready are not counted against the daily limit (the limits are taken only once
    every item is prepared), the error is the database's (the servicer answers UNAVAILABLE), and the next
    batch is prepared at once."""
    setup = Setup(admin, clean_db, settings, None)
    admin.update_service(setup.service_id, limit_values={"sms_message_limit": 5})
    uncached = admin.create_template(setup.service_id, "other", "sms", "Other")
    caller = setup.caller("normal")
    proxy = TcpProxy(PG_HOST, PG_PORT)
    engine = make_engine(make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False))
    published: list[str] = []
    sender = Sender(
        engine,
        lambda routing_key, item, timeout=0.0: published.append(routing_key),
        settings.email_domain,
        cache_seconds=60.0,
        rules=ServiceRules(engine, LocalSendCounter()),
    )
    try:
        sender.template(caller, setup.sms)  # cached: the batch's first items need no database
        proxy.cut()
        with pytest.raises(OperationalError) as failed:
            sender.send_batch(
                caller, [SendCommand(SMS, "07700900123", setup.sms)] * 5 + [SendCommand(SMS, "07700900123", uncached)]
            )
        assert is_transient(failed.value)
        assert published == []
        results = sender.send_batch(caller, [SendCommand(SMS, "07700900123", setup.sms)] * 6)
        assert [_outcome(r)[0] for r in results] == ["accepted"] * 5 + ["RESOURCE_EXHAUSTED"]
        assert len(published) == 5
    finally:
        proxy.close()
        engine.dispose()


def _lock_waiters(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'templates'::regclass"))
            or 0
        )


def test_a_batch_on_a_cached_template_is_not_held_up_by_another_services_database_read(
    admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    waiting, ready = Setup(admin, clean_db, settings, None), Setup(admin, clean_db, settings, None)
    sender = Sender(clean_db, lambda *_: None, settings.email_domain, cache_seconds=60.0)
    waiting_caller, ready_caller = waiting.caller("normal"), ready.caller("normal")
    sender.template(ready_caller, ready.sms)  # cached: its batch needs no database at all
    answers: dict[str, list[Accepted | ItemRefused]] = {}

    def send(name: str, caller: Caller, template: str) -> None:
        answers[name] = sender.send_batch(caller, [SendCommand(SMS, "07700900123", template)])

    first = threading.Thread(target=send, args=("waiting", waiting_caller, waiting.sms))
    second = threading.Thread(target=send, args=("ready", ready_caller, ready.sms))
    with clean_db.connect() as locker:
        locker.execute(text("LOCK TABLE templates IN ACCESS EXCLUSIVE MODE"))  # as a migration's ALTER would
        try:
            first.start()
            wait_for(lambda: _lock_waiters(clean_db), timeout=5)
            second.start()
            second.join(timeout=2)
            held_up = second.is_alive()
        finally:
            locker.rollback()
            first.join()
            second.join()
    assert [_outcome(r)[0] for r in answers["waiting"] + answers["ready"]] == ["accepted", "accepted"]
    assert not held_up


# What a batch answers that its items, sent one by one, would not.


def test_a_batch_mixing_texts_and_emails_meets_the_shared_rate_limit_in_item_order(
    admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    def service() -> Setup:
        made = Setup(admin, clean_db, settings, LocalSendCounter(lambda: 1_000.0))
        admin.update_service(made.service_id, limit_values={"rate_limit": 3})  # a bucket of 2
        return made

    def commands(setup: Setup) -> list[SendCommand]:
        email, sms = SendCommand(EMAIL, "someone@example.com", setup.email), SendCommand(SMS, "07700900123", setup.sms)
        return [email, sms, email, sms]

    alone, together = service(), service()
    alone_caller = alone.caller("normal")
    one_by_one = [_send_alone(alone.sender, alone_caller, c)[0] for c in commands(alone)]
    assert one_by_one == ["accepted", "accepted", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
    batch = [_outcome(r)[0] for r in together.sender.send_batch(together.caller("normal"), commands(together))]
    assert batch == one_by_one


def test_a_key_whose_item_the_rules_refused_serves_another_request_later_in_the_batch(
    admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    def service() -> Setup:
        made = Setup(admin, clean_db, settings, LocalSendCounter(), restricted=True)
        admin.set_guest_list(made.service_id, ["07700900001"])
        return made

    def commands(setup: Setup) -> list[SendCommand]:
        return [
            SendCommand(SMS, "07700900999", setup.sms, idempotency_key="order-1"),  # not a guest: trial mode
            SendCommand(SMS, "07700900001", setup.sms, idempotency_key="order-1"),
        ]

    alone, together = service(), service()
    alone_caller = alone.caller("normal")
    one_by_one = [_send_alone(alone.sender, alone_caller, c) for c in commands(alone)]
    assert one_by_one[0] == ("INVALID_ARGUMENT", "phone_number", limits.TRIAL_MODE_MESSAGE)
    assert one_by_one[1][0] == "accepted"
    batch = [_outcome(r) for r in together.sender.send_batch(together.caller("normal"), commands(together))]
    assert batch[1] != ("INVALID_ARGUMENT", "idempotency-key", KEY_REUSED)
    assert batch == one_by_one


def test_a_key_reused_for_another_request_in_a_batch_is_refused_before_the_limits(
    admin: Admin, clean_db: Engine, settings: Settings
) -> None:
    """The first request to take a key keeps it for the rest of the batch; the other request is refused as
    reused and counts nothing, so a daily limit of two still admits the first request's repeat."""
    setup = Setup(admin, clean_db, settings, LocalSendCounter())
    admin.update_service(setup.service_id, limit_values={"sms_message_limit": 2})
    caller = setup.caller("normal")
    batch = [
        SendCommand(SMS, "07700900001", setup.sms, idempotency_key="order-1"),
        SendCommand(SMS, "07700900002", setup.sms, idempotency_key="order-1"),  # another request
        SendCommand(SMS, "07700900001", setup.sms, idempotency_key="order-1"),  # the first one's repeat
    ]
    results = setup.sender.send_batch(caller, batch)
    assert [_outcome(r)[0] for r in results] == ["accepted", "INVALID_ARGUMENT", "accepted"]
    assert _outcome(results[1])[1:] == ("idempotency-key", KEY_REUSED)
    first, repeat = results[0], results[2]
    assert isinstance(first, Accepted) and isinstance(repeat, Accepted) and first.id == repeat.id
    with pytest.raises(limits.DailyLimitExceeded):
        setup.sender.send(caller, SendCommand(SMS, "07700900003", setup.sms))
