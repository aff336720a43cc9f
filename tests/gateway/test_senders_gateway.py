"""Sender ids, reply-to addresses, one-click unsubscribe links and scheduled_for through the REST gateway:
Notify's own client where it has the argument, plain HTTP for scheduled_for (which the client does not
send), in front of real ingest, dispatchers and the provider simulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient
from sqlalchemy import Engine

from herald.domain.apikeys import create_token, split_key
from herald.service_layer.senders import Senders
from tests.gateway.conftest import Stack
from tests.support import wait_for

PERSONALISATION = {"name": "Ada", "code": "1"}
UNSUBSCRIBE = "https://unsubscribelink.com/unsubscribe"


def client(stack: Stack) -> Any:
    return NotificationsAPIClient(stack.demo.live_key, base_url=stack.base_url)  # type: ignore[no-untyped-call]


def errors_of(call: Callable[[], Any]) -> tuple[int, Any]:
    try:
        call()
    except HTTPError as exc:
        return exc.status_code, exc.message
    raise AssertionError("no error")


def test_an_sms_from_one_of_the_services_senders(stack: Stack, engine: Engine) -> None:
    parking = Senders(engine).add_sms_sender(stack.demo.service_id, "Parking", is_default=False)
    sent = client(stack).send_sms_notification(
        "07700900123", stack.demo.sms_template_id, PERSONALISATION, sms_sender_id=parking.id
    )
    assert sent["content"]["from_number"] == "Parking"


def test_an_email_with_a_reply_to_and_an_unsubscribe_link_reaches_ses_with_them(stack: Stack, engine: Engine) -> None:
    reply_to = Senders(engine).add_reply_to(stack.demo.service_id, "replies@example.gov.uk", False)
    sent = client(stack).send_email_notification(
        "someone@example.com",
        stack.demo.email_template_id,
        PERSONALISATION,
        email_reply_to_id=reply_to.id,
        one_click_unsubscribe_url=UNSUBSCRIBE,
    )
    assert sent["content"]["one_click_unsubscribe_url"] == UNSUBSCRIBE

    def received() -> dict[str, Any] | None:
        emails = httpx.get(f"{stack.simulator.url}/_emails", timeout=5).json()["emails"]
        found: dict[str, Any] | None = emails.get(sent["id"])
        return found

    assert wait_for(received, timeout=20) == {
        "reply_to": ["replies@example.gov.uk"],
        "headers": {"List-Unsubscribe": f"<{UNSUBSCRIBE}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }
    assert client(stack).get_notification_by_id(sent["id"])["one_click_unsubscribe_url"] == UNSUBSCRIBE


def test_a_reply_to_of_another_service_is_notifys_bad_request(stack: Stack, engine: Engine) -> None:
    other = stack.admin.create_service(f"Other {uuid.uuid4()}")
    theirs = Senders(engine).add_reply_to(other, "them@example.gov.uk", is_default=True)
    assert errors_of(
        lambda: client(stack).send_email_notification(
            "someone@example.com", stack.demo.email_template_id, PERSONALISATION, email_reply_to_id=theirs.id
        )
    ) == (
        400,
        [
            {
                "error": "BadRequestError",
                "message": f"email_reply_to_id {theirs.id} does not exist in database for service id "
                f"{stack.demo.service_id}",
            }
        ],
    )


def _post(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response:
    key = split_key(stack.demo.live_key)
    headers = {"Authorization": f"Bearer {create_token(key.secret, key.service_id)}"}
    return httpx.post(f"{stack.base_url}{path}", json=body, headers=headers, timeout=10)


def test_scheduled_for_is_taken_and_answered(stack: Stack) -> None:
    when = datetime.now(UTC) + timedelta(hours=2)
    answer = _post(
        stack,
        "/v2/notifications/sms",
        {
            "phone_number": "07700900123",
            "template_id": stack.demo.sms_template_id,
            "personalisation": PERSONALISATION,
            "scheduled_for": when.isoformat(),
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["scheduled_for"] == when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_scheduled_for_in_the_past_is_notifys_validation_error(stack: Stack) -> None:
    answer = _post(
        stack,
        "/v2/notifications/email",
        {
            "email_address": "someone@example.com",
            "template_id": stack.demo.email_template_id,
            "personalisation": PERSONALISATION,
            "scheduled_for": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        },
    )
    assert (answer.status_code, answer.json()) == (
        400,
        {
            "status_code": 400,
            "errors": [{"error": "ValidationError", "message": "scheduled_for datetime can not be in the past"}],
        },
    )


def test_an_unsubscribe_url_that_is_not_https_is_notifys_validation_error(stack: Stack) -> None:
    assert errors_of(
        lambda: client(stack).send_email_notification(
            "someone@example.com",
            stack.demo.email_template_id,
            PERSONALISATION,
            one_click_unsubscribe_url="http://unsubscribelink.com/unsubscribe",
        )
    ) == (400, [{"error": "ValidationError", "message": "one_click_unsubscribe_url is not a valid https url"}])
