"""herald.v1.Reads on ingest: pages by keyset, ties on created_at broken by id, Notify's status groups."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import Engine, text

from herald.domain.apikeys import create_token, split_key
from herald.v1 import reads_pb2, reads_pb2_grpc
from tests.gateway.conftest import Stack

Reads = tuple[reads_pb2_grpc.ReadsStub, list[tuple[str, str]]]


@pytest.fixture
def reads(stack: Stack) -> Iterator[Reads]:
    """The stub, and metadata signed with the live key."""
    key = split_key(stack.demo.live_key)
    metadata = [("authorization", f"Bearer {create_token(key.secret, key.service_id)}")]
    with grpc.insecure_channel(stack.settings.ingest_address) as channel:
        yield reads_pb2_grpc.ReadsStub(channel), metadata


def test_pages_follow_the_keyset_through_equal_timestamps(stack: Stack, engine: Engine, reads: Reads) -> None:
    reference = "same-instant"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at, reference)'
                " SELECT gen_random_uuid(), :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi',"
                " CASE WHEN n % 2 = 0 THEN 'temporary-failure' ELSE 'delivered' END, 1, :at, :ref"
                " FROM generate_series(1, 300) AS n"
            ),
            {"s": stack.demo.service_id, "t": stack.demo.sms_template_id, "at": at, "ref": reference},
        )
    stub, metadata = reads
    seen: list[str] = []
    older_than = ""
    while True:
        page = stub.ListNotifications(
            reads_pb2.ListNotificationsRequest(reference=reference, older_than=older_than), metadata=metadata
        )
        if not page.notifications:
            break
        assert len(page.notifications) <= 250
        seen += [n.notification.id for n in page.notifications]
        older_than = seen[-1]
    assert len(seen) == len(set(seen)) == 300
    assert seen == sorted(seen, reverse=True)  # one instant: newest first falls back on the id

    failed = stub.ListNotifications(
        reads_pb2.ListNotificationsRequest(reference=reference, status=["failed"]), metadata=metadata
    )
    assert {n.notification.status for n in failed.notifications} == {"temporary-failure"}
    assert len(failed.notifications) == 150


def test_a_status_notify_does_not_know_is_invalid(reads: Reads) -> None:
    stub, metadata = reads
    with pytest.raises(grpc.RpcError) as bad:
        stub.ListNotifications(reads_pb2.ListNotificationsRequest(status=["elephant"]), metadata=metadata)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details() == (
        "status elephant is not one of [cancelled, created, sending, sent, delivered, pending, failed, "
        "technical-failure, temporary-failure, permanent-failure, pending-virus-check, validation-failed, "
        "virus-scan-failed, returned-letter, accepted, received]"
    )
    with pytest.raises(grpc.RpcError) as unauthenticated:
        stub.ListNotifications(reads_pb2.ListNotificationsRequest())
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
