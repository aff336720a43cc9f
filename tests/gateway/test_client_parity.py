"""Notify's own client, unchanged, for what tests/gateway/test_notify_client.py leaves out: a team key
sends to the team only, and is refused with Notify's error otherwise. (The received text messages and
their iterator are tests/gateway/test_received_texts.py's.)"""

from __future__ import annotations

import uuid
from typing import Any

from notifications_python_client.notifications import NotificationsAPIClient

from tests.gateway.conftest import Stack
from tests.gateway.test_notify_client import PERSONALISATION, errors_of

TEAM_ONLY = [{"error": "BadRequestError", "message": "Can’t send to this recipient using a team-only API key"}]


def client(stack: Stack, key: str) -> Any:
    return NotificationsAPIClient(key, base_url=stack.base_url)  # type: ignore[no-untyped-call]


def test_a_team_key_sends_to_the_team_only(stack: Stack) -> None:
    service = stack.demo.service_id
    team_key = stack.admin.create_api_key(service, f"team {uuid.uuid4()}", "team")
    stack.admin.add_team_member(service, mobile_number="07700 900 456", email_address="member@example.com")
    api = client(stack, team_key)

    sent = api.send_sms_notification("+447700900456", stack.demo.sms_template_id, PERSONALISATION)
    assert sent["content"]["body"] == "Hello Ada, your code is 1."
    assert api.send_email_notification("Member@Example.com", stack.demo.email_template_id, PERSONALISATION)["id"]

    assert errors_of(lambda: api.send_sms_notification("07700900999", stack.demo.sms_template_id, PERSONALISATION)) == (
        400,
        TEAM_ONLY,
    )
    assert errors_of(
        lambda: api.send_email_notification("stranger@example.com", stack.demo.email_template_id, PERSONALISATION)
    ) == (400, TEAM_ONLY)
