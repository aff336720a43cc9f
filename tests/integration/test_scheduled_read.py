"""A scheduled message read back: gRPC's GetNotification and Reads, and REST through Notify's own client,
answer the time asked for (REST in Notify's timestamp format), before and after delivery; an unscheduled
message answers none. The gateway in front of real ingest, dispatchers and the provider simulator; no
scheduler runs, so the test sweeps the held message on itself once due."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient
from sqlalchemy import Engine

from herald.clients import IngestClient
from herald.domain.apikeys import create_token, split_key
from herald.queues import ConfirmingPublisher
from herald.scheduling import tasks
from herald.service_layer.delivery import Republisher
from herald.v1 import reads_pb2, reads_pb2_grpc
from herald.v1.notifications_pb2 import Notification
from tests.gateway import conftest as gateway
from tests.gateway.conftest import Stack
from tests.support import final_status, wait_for

stack = gateway.stack  # the gateway tests' fixture, shared rather than built again

PERSONALISATION = {"name": "Ada", "code": "1"}
NOTIFY_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _metadata(stack: Stack) -> list[tuple[str, str]]:
    key = split_key(stack.demo.live_key)
    return [("authorization", f"Bearer {create_token(key.secret, key.service_id)}")]


def _post_scheduled_sms(stack: Stack, when: datetime, reference: str) -> str:
    """Notify's client cannot send scheduled_for, so the one scheduled send is plain HTTP."""
    answer = httpx.post(
        f"{stack.base_url}/v2/notifications/sms",
        json={
            "phone_number": "07700900123",
            "template_id": stack.demo.sms_template_id,
            "personalisation": PERSONALISATION,
            "reference": reference,
            "scheduled_for": when.isoformat(),
        },
        headers={"Authorization": _metadata(stack)[0][1]},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    notification_id: str = answer.json()["id"]
    return notification_id


def _over_rest(client: Any, notification_id: str) -> dict[str, Any] | None:
    """The notification once the db dispatcher has stored it (Notify's 404 until then)."""
    try:
        found: dict[str, Any] = client.get_notification_by_id(notification_id)
    except HTTPError as exc:
        if exc.status_code == 404:
            return None
        raise
    return found


def _scheduled_for(n: Notification) -> datetime | None:
    return n.scheduled_for.ToDatetime(tzinfo=UTC) if n.HasField("scheduled_for") else None


def _reads_answer(stack: Stack, notification_id: str, reference: str) -> tuple[datetime | None, datetime | None]:
    """What Reads answers for the notification: by GetNotification, and in ListNotifications' page."""
    with grpc.insecure_channel(stack.settings.ingest_address) as channel:
        stub = reads_pb2_grpc.ReadsStub(channel)
        one = stub.GetNotification(reads_pb2.ReadNotificationRequest(id=notification_id), metadata=_metadata(stack))
        page = stub.ListNotifications(
            reads_pb2.ListNotificationsRequest(reference=reference), metadata=_metadata(stack)
        )
    [listed] = page.notifications
    assert listed.notification.id == notification_id
    return _scheduled_for(one.notification), _scheduled_for(listed.notification)


def _listed_over_rest(client: Any, reference: str) -> dict[str, Any]:
    [listed] = client.get_all_notifications(reference=reference)["notifications"]
    found: dict[str, Any] = listed
    return found


def test_a_scheduled_message_answers_its_time_before_and_after_delivery(stack: Stack, engine: Engine) -> None:
    client: Any = NotificationsAPIClient(stack.demo.live_key, base_url=stack.base_url)  # type: ignore[no-untyped-call]
    ingest = IngestClient(stack.settings.ingest_address, stack.demo.live_key)
    publisher = ConfirmingPublisher(stack.settings.broker_url)
    reference = f"scheduled-read-{time.time_ns()}"
    # A few seconds ahead, with microseconds, which every read must keep.
    when = datetime.now(UTC) + timedelta(seconds=5)
    try:
        notification_id = _post_scheduled_sms(stack, when, reference)
        held = wait_for(lambda: _over_rest(client, notification_id))
        assert held["scheduled_for"] == when.strftime(NOTIFY_FORMAT)
        assert _listed_over_rest(client, reference)["scheduled_for"] == when.strftime(NOTIFY_FORMAT)
        assert _scheduled_for(ingest.get_notification(notification_id)) == when
        assert _reads_answer(stack, notification_id, reference) == (when, when)

        time.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.1)
        republish = Republisher(publisher, stack.settings.email_domain)
        tasks.redrive_due_notifications(engine, datetime.now(UTC), republish=republish)
        assert final_status(ingest, notification_id) == "delivered"

        # Delivered: next_attempt_at is gone, the time asked for is not.
        delivered = ingest.get_notification(notification_id)
        assert (delivered.HasField("next_attempt_at"), _scheduled_for(delivered)) == (False, when)
        assert client.get_notification_by_id(notification_id)["scheduled_for"] == when.strftime(NOTIFY_FORMAT)
        assert _listed_over_rest(client, reference)["scheduled_for"] == when.strftime(NOTIFY_FORMAT)
        assert _reads_answer(stack, notification_id, reference) == (when, when)
    finally:
        publisher.close()
        ingest.close()


def test_an_unscheduled_message_answers_null(stack: Stack) -> None:
    client: Any = NotificationsAPIClient(stack.demo.live_key, base_url=stack.base_url)  # type: ignore[no-untyped-call]
    ingest = IngestClient(stack.settings.ingest_address, stack.demo.live_key)
    reference = f"unscheduled-read-{time.time_ns()}"
    try:
        sent = client.send_sms_notification("07700900123", stack.demo.sms_template_id, PERSONALISATION, reference)
        stored = wait_for(lambda: _over_rest(client, sent["id"]))
        assert "scheduled_for" in stored and stored["scheduled_for"] is None
        assert _listed_over_rest(client, reference)["scheduled_for"] is None
        assert _scheduled_for(ingest.get_notification(sent["id"])) is None
        assert _reads_answer(stack, sent["id"], reference) == (None, None)
    finally:
        ingest.close()
