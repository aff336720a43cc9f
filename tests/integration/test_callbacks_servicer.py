"""The callbacks servicer on pytest-grpc's real server, with a real PublisherThread on the test vhost.

ReportDelivery only checks a receipt's shape and makes it durable on sms-callbacks / ses-callbacks
(notify-v2.md section 3: Notify's receipts queues); applying it is the dispatcher's work (test_receipts.py).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import Server, ServiceBinding
from herald.queues import PublisherThread
from herald.queues.topology import RECEIPT_QUEUES
from herald.service_layer.inbound import InboundIntake
from herald.service_layer.receipts import ReceiptIntake
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc
from herald.v1.queue_pb2 import Receipt, ReceiptBatch
from services.callbacks.servicer import CallbacksServicer
from tests.support import take_items

# pytest-grpc reads this: several server threads, so that concurrent receipts share a publish round.
grpc_max_workers = 8

DeliveryReceipt = callbacks_pb2.DeliveryReceipt
CLOSED_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return callbacks_pb2_grpc.add_CallbacksServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(publisher_thread: PublisherThread) -> CallbacksServicer:
    return CallbacksServicer(ReceiptIntake(publisher_thread.publish), InboundIntake(publisher_thread.publish))


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return callbacks_pb2_grpc.CallbacksStub


def _queued(broker_url: str, name: str) -> list[Receipt]:
    return take_items(broker_url, name, lambda body: ReceiptBatch.FromString(body).receipts)


def _all_queued(broker_url: str) -> dict[str, list[Receipt]]:
    return {name: _queued(broker_url, name) for name in RECEIPT_QUEUES}


@pytest.mark.parametrize(
    ("provider", "status", "code", "on_queue"),
    [
        ("mmg", "3", "", "sms-callbacks"),
        ("firetext", "1", "101", "sms-callbacks"),
        ("ses", "Bounce", "Permanent", "ses-callbacks"),
    ],
)
def test_receipt_is_on_its_queue_when_answered(
    grpc_stub: Any, clean_broker: str, provider: str, status: str, code: str, on_queue: str
) -> None:
    reference = str(uuid.uuid4())
    before = datetime.now(UTC)
    answer = grpc_stub.ReportDelivery(DeliveryReceipt(provider=provider, reference=reference, status=status, code=code))
    assert answer.notification_id == reference
    # Read straight after the answer: the publish was confirmed before it, so the receipt is there already.
    queued = _all_queued(clean_broker)
    [receipt] = queued.pop(on_queue)
    assert (receipt.provider, receipt.reference, receipt.status, receipt.code) == (provider, reference, status, code)
    received_at = receipt.received_at.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= received_at <= datetime.now(UTC)
    assert queued == {name: [] for name in queued}


def test_reference_is_queued_in_canonical_lowercase(grpc_stub: Any, clean_broker: str) -> None:
    reference = str(uuid.uuid4())
    answer = grpc_stub.ReportDelivery(DeliveryReceipt(provider="mmg", reference=reference.upper(), status="3"))
    assert answer.notification_id == reference
    [receipt] = _queued(clean_broker, "sms-callbacks")
    assert receipt.reference == reference


def test_concurrent_receipts_are_all_queued(grpc_stub: Any, clean_broker: str) -> None:
    receipts = [
        DeliveryReceipt(provider=provider, reference=str(uuid.uuid4()), status=status)
        for provider, status in [("mmg", "3"), ("firetext", "0"), ("ses", "Delivery")] * 8
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: grpc_stub.ReportDelivery(r, timeout=20), receipts))
    assert [a.notification_id for a in answers] == [r.reference for r in receipts]
    queued = _all_queued(clean_broker)
    by_queue = {name: sorted(r.reference for r in found) for name, found in queued.items()}
    assert by_queue == {
        "sms-callbacks": sorted(r.reference for r in receipts if r.provider != "ses"),
        "ses-callbacks": sorted(r.reference for r in receipts if r.provider == "ses"),
    }


REFERENCE_MESSAGE = "reference is not a valid UUID"
VALID = str(uuid.UUID(int=1))


@pytest.mark.parametrize(
    ("provider", "reference", "status", "code", "field", "message"),
    [
        ("twilio", VALID, "3", "", "provider", "provider twilio is not one of firetext, mmg, ses"),
        ("MMG", VALID, "3", "", "provider", "provider MMG is not one of firetext, mmg, ses"),
        ("", VALID, "3", "", "provider", "provider  is not one of firetext, mmg, ses"),
        ("mmg", f"urn:uuid:{VALID}", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", f"{{{VALID}}}", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", VALID.replace("-", ""), "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", f" {VALID}", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", f"{VALID}\n", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", "not-a-uuid", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", "", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", "1234", "3", "", "reference", REFERENCE_MESSAGE),
        ("mmg", VALID, "3\x00", "", "status", "status contains a character that is not allowed (NUL)"),
        ("firetext", VALID, "1", "1\x0001", "code", "code contains a character that is not allowed (NUL)"),
        ("mmg", VALID, "", "", "status", "status is required"),
        ("mmg", VALID, "3" * 65, "", "status", "status 33333333333333333333... is too long"),
        ("ses", VALID, "Bounce", "P" * 65, "code", "code PPPPPPPPPPPPPPPPPPPP... is too long"),
    ],
)  # fmt: skip
def test_bad_receipt_is_invalid_argument_and_queues_nothing(
    grpc_stub: Any, clean_broker: str, provider: str, reference: str, status: str, code: str, field: str, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.ReportDelivery(DeliveryReceipt(provider=provider, reference=reference, status=status, code=code))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert field_violations(err.value) == [(field, message)]
    assert _all_queued(clean_broker) == {name: [] for name in RECEIPT_QUEUES}


def test_longest_status_and_code_are_accepted(grpc_stub: Any, clean_broker: str) -> None:
    receipt = DeliveryReceipt(provider="ses", reference=VALID, status="S" * 64, code="C" * 64)
    grpc_stub.ReportDelivery(receipt)
    [queued] = _queued(clean_broker, "ses-callbacks")
    assert (queued.status, queued.code) == (receipt.status, receipt.code)


def test_broker_down_is_unavailable_for_every_caller(clean_broker: str) -> None:
    """Nothing was kept, so the provider must post again: UNAVAILABLE (never INTERNAL), to each caller of
    the failed publish round."""
    down = PublisherThread(CLOSED_BROKER, retry_for=0.2, confirm_timeout=1.0)
    server = Server(
        "127.0.0.1:0",
        [
            ServiceBinding(
                CallbacksServicer(ReceiptIntake(down.publish), InboundIntake(down.publish)),
                callbacks_pb2_grpc.add_CallbacksServicer_to_server,
                "x",
            )
        ],
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = callbacks_pb2_grpc.CallbacksStub(channel)
            receipts = [DeliveryReceipt(provider="mmg", reference=str(uuid.uuid4()), status="3") for _ in range(3)]

            def report(receipt: callbacks_pb2.DeliveryReceipt) -> grpc.RpcError:
                with pytest.raises(grpc.RpcError) as err:
                    stub.ReportDelivery(receipt, timeout=60)
                return err.value

            with ThreadPoolExecutor(len(receipts)) as pool:
                errors = list(pool.map(report, receipts))
    finally:
        server.stop(0)
        down.close()
    for error in errors:
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "Message not accepted: the queue is unavailable, try again",
        )
    assert _all_queued(clean_broker) == {name: [] for name in RECEIPT_QUEUES}
