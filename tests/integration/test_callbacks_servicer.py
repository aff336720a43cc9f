"""The callbacks servicer on pytest-grpc's real server, with the real database.

Receipts (notify-v2.md section 3) and research mode's simulated delivery (section 5 and the seed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald.crypto import SecretBox
from herald.db import notifications as notifications_db
from herald.domain import statuses as st
from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import ObservingInterceptor
from herald.service_layer.admin import Admin
from herald.service_layer.receipts import ReceiptProcessor
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc
from services.callbacks.servicer import CallbacksServicer
from tests.support import wait_for

# pytest-grpc reads this: more than one server thread, so that two receipts can race.
grpc_max_workers = 4

EARLIER = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
Receipt = callbacks_pb2.DeliveryReceipt
Setup = dict[str, str]


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return callbacks_pb2_grpc.add_CallbacksServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(engine: Engine) -> CallbacksServicer:
    return CallbacksServicer(ReceiptProcessor(engine))


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[grpc.ServerInterceptor]:
    return [ObservingInterceptor()]


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return callbacks_pb2_grpc.CallbacksStub


@pytest.fixture(scope="module")
def setup(engine: Engine) -> Setup:
    """One research-mode service for the module: every test works on its own new notifications, so no
    truncation between tests. (conftest's `admin` would also need RabbitMQ, which receipts never touch.)"""
    admin = Admin(engine, SecretBox("test-secret"))
    service = admin.create_service(f"Callbacks servicer test {uuid.uuid4()}", research_mode=True)
    return {
        "service": service,
        "sms": admin.create_template(service, "sms", "sms", "Hi"),
        "email": admin.create_template(service, "email", "email", "Dear you", "Hello"),
    }


def _insert(
    engine: Engine,
    setup: Setup,
    *,
    status: str = st.SENDING,
    kind: str = "sms",
    to: str = "",
) -> str:
    """A notification row as the db dispatcher stores it; one in flight was handed off at EARLIER."""
    notification_id = str(uuid.uuid4())
    in_flight = status != st.CREATED
    row = {
        "id": notification_id,
        "service_id": setup["service"],
        "template_id": setup[kind],
        "template_version": 1,
        "key_type": "normal",
        "notification_type": kind,
        "to": to or ("447700900123" if kind == "sms" else "someone@example.com"),
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
        assert notifications_db.insert_batch(conn, [row]) == 1
    return notification_id


def _stored(engine: Engine, notification_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, sent_by, sent_at, updated_at FROM notifications WHERE id = :id"),
            {"id": notification_id},
        ).one()
    return dict(row._mapping)


def _answer(response: callbacks_pb2.ReportDeliveryResponse) -> tuple[str, str, bool]:
    return response.notification_id, response.status, response.applied


# --- ReportDelivery -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "status", "code", "kind", "expected"),
    [
        ("mmg", "3", "", "sms", st.DELIVERED),
        ("mmg", "4", "", "sms", st.TEMPORARY_FAILURE),
        ("mmg", "2", "", "sms", st.PERMANENT_FAILURE),
        ("mmg", "5", "", "sms", st.PERMANENT_FAILURE),
        ("mmg", "9", "", "sms", st.TECHNICAL_FAILURE),
        ("firetext", "0", "", "sms", st.DELIVERED),
        ("firetext", "1", "", "sms", st.PERMANENT_FAILURE),
        ("firetext", "1", "101", "sms", st.PERMANENT_FAILURE),
        ("firetext", "1", "102", "sms", st.TEMPORARY_FAILURE),
        ("firetext", "2", "", "sms", st.PENDING),
        ("ses", "Delivery", "", "email", st.DELIVERED),
        ("ses", "Bounce", "Permanent", "email", st.PERMANENT_FAILURE),
        ("ses", "Bounce", "Transient", "email", st.TEMPORARY_FAILURE),
    ],
)  # fmt: skip
def test_receipt_moves_sending(
    grpc_stub: Any,
    setup: Setup,
    engine: Engine,
    provider: str,
    status: str,
    code: str,
    kind: str,
    expected: str,
) -> None:
    notification_id = _insert(engine, setup, kind=kind)
    receipt = Receipt(provider=provider, reference=notification_id, status=status, code=code)
    answer = grpc_stub.ReportDelivery(receipt)
    assert _answer(answer) == (notification_id, expected, True)
    stored = _stored(engine, notification_id)
    assert stored["status"] == expected
    assert stored["updated_at"] > EARLIER
    assert stored["sent_at"] == EARLIER  # a receipt does not touch the hand-off time


def test_duplicate_receipt_changes_nothing(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup)
    receipt = Receipt(provider="mmg", reference=notification_id, status="3")
    assert _answer(grpc_stub.ReportDelivery(receipt)) == (notification_id, st.DELIVERED, True)
    after_first = _stored(engine, notification_id)
    assert _answer(grpc_stub.ReportDelivery(receipt)) == (notification_id, st.DELIVERED, False)
    assert _stored(engine, notification_id) == after_first


@pytest.mark.parametrize(
    ("provider", "status", "code"),
    [("mmg", "4", ""), ("mmg", "2", ""), ("firetext", "2", ""), ("firetext", "1", ""), ("mmg", "9", "")],
)
def test_stale_receipt_after_delivered_changes_nothing(
    grpc_stub: Any, setup: Setup, engine: Engine, provider: str, status: str, code: str
) -> None:
    notification_id = _insert(engine, setup, status=st.DELIVERED)
    before = _stored(engine, notification_id)
    receipt = Receipt(provider=provider, reference=notification_id, status=status, code=code)
    answer = grpc_stub.ReportDelivery(receipt)
    assert _answer(answer) == (notification_id, st.DELIVERED, False)
    assert _stored(engine, notification_id) == before
    assert before["updated_at"] == EARLIER


def test_firetext_pending_then_delivered(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup)
    pending = grpc_stub.ReportDelivery(Receipt(provider="firetext", reference=notification_id, status="2"))
    assert _answer(pending) == (notification_id, st.PENDING, True)
    pending_at = _stored(engine, notification_id)["updated_at"]
    assert pending_at > EARLIER
    delivered = grpc_stub.ReportDelivery(Receipt(provider="firetext", reference=notification_id, status="0"))
    assert _answer(delivered) == (notification_id, st.DELIVERED, True)
    stored = _stored(engine, notification_id)
    assert stored["status"] == st.DELIVERED
    assert stored["updated_at"] > pending_at


def test_firetext_decline_after_pending_is_temporary(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup)
    grpc_stub.ReportDelivery(Receipt(provider="firetext", reference=notification_id, status="2"))
    declined = grpc_stub.ReportDelivery(Receipt(provider="firetext", reference=notification_id, status="1"))
    assert _answer(declined) == (notification_id, st.TEMPORARY_FAILURE, True)
    assert _stored(engine, notification_id)["status"] == st.TEMPORARY_FAILURE


def test_a_second_pending_is_a_duplicate(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup)
    receipt = Receipt(provider="firetext", reference=notification_id, status="2")
    grpc_stub.ReportDelivery(receipt)
    before = _stored(engine, notification_id)
    assert _answer(grpc_stub.ReportDelivery(receipt)) == (notification_id, st.PENDING, False)
    assert _stored(engine, notification_id) == before


def test_ses_complaint_does_not_change_the_status(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup, kind="email")
    answer = grpc_stub.ReportDelivery(Receipt(provider="ses", reference=notification_id, status="Complaint"))
    assert _stored(engine, notification_id)["status"] == st.SENDING
    assert not answer.applied


def test_unknown_reference_is_not_found(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    other = _insert(engine, setup)
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.ReportDelivery(Receipt(provider="mmg", reference=str(uuid.uuid4()), status="3"))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "No result found")
    assert _stored(engine, other)["status"] == st.SENDING


@pytest.mark.parametrize("reference", ["not-a-uuid", "", "1234"])
def test_bad_reference_is_invalid_argument(grpc_stub: Any, setup: Setup, reference: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.ReportDelivery(Receipt(provider="mmg", reference=reference, status="3"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "reference is not a valid UUID"
    assert field_violations(err.value) == [("reference", "reference is not a valid UUID")]


@pytest.mark.parametrize("provider", ["twilio", "", "MMG"])
def test_unknown_provider_is_invalid_argument(
    grpc_stub: Any,
    setup: Setup,
    engine: Engine,
    provider: str,
) -> None:
    notification_id = _insert(engine, setup)
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.ReportDelivery(Receipt(provider=provider, reference=notification_id, status="3"))
    message = f"provider {provider} is not one of mmg, firetext, ses"
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert field_violations(err.value) == [("provider", message)]
    assert _stored(engine, notification_id)["updated_at"] == EARLIER


def test_updated_at_moves_on_real_change_only(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup)
    moves = [("2", True), ("2", False), ("0", True), ("1", False), ("0", False)]
    seen = [_stored(engine, notification_id)["updated_at"]]
    for status, applied in moves:
        receipt = Receipt(provider="firetext", reference=notification_id, status=status)
        answer = grpc_stub.ReportDelivery(receipt)
        assert answer.applied is applied, status
        updated_at = _stored(engine, notification_id)["updated_at"]
        assert (updated_at > seen[-1]) if applied else (updated_at == seen[-1]), status
        seen.append(updated_at)
    assert _stored(engine, notification_id)["status"] == st.DELIVERED


# --- SimulateDelivery -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "to", "provider", "expected"),
    [
        ("sms", "447833333333", "mmg", st.TEMPORARY_FAILURE),  # 07833333333
        ("sms", "447822222222", "mmg", st.PERMANENT_FAILURE),  # 07822222222
        ("sms", "447811111111", "mmg", st.DELIVERED),  # 07811111111
        ("sms", "447700900123", "mmg", st.DELIVERED),
        ("email", "temp-fail@simulator.notify", "ses", st.TEMPORARY_FAILURE),
        ("email", "perm-fail@simulator.notify", "ses", st.PERMANENT_FAILURE),
        ("email", "delivered@simulator.notify", "ses", st.DELIVERED),
        ("email", "someone@example.com", "ses", st.DELIVERED),
    ],
)
def test_simulate_delivery_gives_the_seed_outcomes(
    grpc_stub: Any, setup: Setup, engine: Engine, kind: str, to: str, provider: str, expected: str
) -> None:
    notification_id = _insert(engine, setup, status=st.CREATED, kind=kind, to=to)
    started = datetime.now(UTC)
    request = callbacks_pb2.SimulateDeliveryRequest(notification_id=notification_id)
    answer = grpc_stub.SimulateDelivery(request)
    assert _answer(answer) == (notification_id, expected, True)
    stored = _stored(engine, notification_id)
    assert stored["status"] == expected
    assert stored["sent_by"] == provider
    assert stored["sent_at"] is not None
    assert stored["sent_at"] >= started - timedelta(seconds=5)
    assert stored["updated_at"] >= stored["sent_at"]


def test_simulate_delivery_twice_is_idempotent(grpc_stub: Any, setup: Setup, engine: Engine) -> None:
    notification_id = _insert(engine, setup, status=st.CREATED, to="447822222222")
    request = callbacks_pb2.SimulateDeliveryRequest(notification_id=notification_id)
    assert _answer(grpc_stub.SimulateDelivery(request)) == (notification_id, st.PERMANENT_FAILURE, True)
    first = _stored(engine, notification_id)
    assert _answer(grpc_stub.SimulateDelivery(request)) == (notification_id, st.PERMANENT_FAILURE, False)
    assert _stored(engine, notification_id) == first


def test_simulate_delivery_unknown_id(grpc_stub: Any, setup: Setup) -> None:
    request = callbacks_pb2.SimulateDeliveryRequest(notification_id=str(uuid.uuid4()))
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.SimulateDelivery(request)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "No result found")


def test_simulate_delivery_bad_id(grpc_stub: Any, setup: Setup) -> None:
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.SimulateDelivery(callbacks_pb2.SimulateDeliveryRequest(notification_id="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == [("notification_id", "notification_id is not a valid UUID")]


# --- receipts racing for one notification ---------------------------------------------------------


def _waiting_on_locks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        )


def _race(
    engine: Engine, stub: Any, notification_id: str, receipts: Sequence[callbacks_pb2.DeliveryReceipt]
) -> list[callbacks_pb2.ReportDeliveryResponse]:
    """Holds the row's lock until every receipt, in order, is queued behind it, then lets them all go."""
    with ThreadPoolExecutor(len(receipts)) as pool, engine.connect() as locker:
        locker.execute(text("SELECT 1 FROM notifications WHERE id = :id FOR UPDATE"), {"id": notification_id})
        calls = []
        for queued, receipt in enumerate(receipts, start=1):
            calls.append(pool.submit(stub.ReportDelivery, receipt, timeout=20))

            def all_queued(n: int = queued) -> bool:
                return _waiting_on_locks(engine) >= n

            wait_for(all_queued, timeout=10)
        locker.rollback()
        return [call.result() for call in calls]


@pytest.mark.parametrize(("first", "second"), [("3", "4"), ("3", "3"), ("5", "3")])
def test_concurrent_receipts_apply_exactly_one_move(
    grpc_stub: Any, setup: Setup, engine: Engine, first: str, second: str
) -> None:
    notification_id = _insert(engine, setup)
    answers = _race(
        engine,
        grpc_stub,
        notification_id,
        [Receipt(provider="mmg", reference=notification_id, status=s) for s in (first, second)],
    )
    applied = [a for a in answers if a.applied]
    assert len(applied) == 1
    final = _stored(engine, notification_id)["status"]
    assert applied[0].status == final
    assert final in st.FINAL


def test_the_receipt_that_loses_a_race_reports_the_status_after_it(
    grpc_stub: Any, setup: Setup, engine: Engine
) -> None:
    notification_id = _insert(engine, setup)
    receipts = [Receipt(provider="mmg", reference=notification_id, status=s) for s in ("3", "4")]
    winner, loser = _race(engine, grpc_stub, notification_id, receipts)
    assert _answer(winner) == (notification_id, st.DELIVERED, True)
    assert _answer(loser) == (notification_id, st.DELIVERED, False)


def test_firetext_decline_racing_behind_pending_is_temporary(
    grpc_stub: Any,
    setup: Setup,
    engine: Engine,
) -> None:
    notification_id = _insert(engine, setup)
    receipts = [Receipt(provider="firetext", reference=notification_id, status=s) for s in ("2", "1")]
    pending, declined = _race(engine, grpc_stub, notification_id, receipts)
    assert _answer(pending) == (notification_id, st.PENDING, True)
    assert _stored(engine, notification_id)["status"] == st.TEMPORARY_FAILURE
    assert _answer(declined) == (notification_id, st.TEMPORARY_FAILURE, True)
