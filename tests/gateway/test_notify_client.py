"""Notify's own Python client (notifications-python-client), unchanged, against the gateway."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient

from herald.domain import recipients
from tests.gateway.conftest import Stack
from tests.support import wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
PERSONALISATION = {"name": "Ada", "code": "1"}


def client(stack: Stack, key: str) -> Any:
    """Notify's client, typed as Any: its methods carry no annotations."""
    return NotificationsAPIClient(key, base_url=stack.base_url)  # type: ignore[no-untyped-call]


def stored(api: Any, notification_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The notification once the db dispatcher has stored it and `done` holds (404 until it is stored)."""

    def check() -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = api.get_notification_by_id(notification_id)
        except HTTPError as exc:
            if exc.status_code != 404:
                raise
            return None
        return found if done(found) else None

    return wait_for(check, timeout=20)


def test_an_sms_is_sent_and_read_back_as_notify_shows_it(stack: Stack) -> None:
    api = client(stack, stack.demo.live_key)
    sent = api.send_sms_notification("07700 900123", stack.demo.sms_template_id, PERSONALISATION, reference="ref-1")
    assert sent["content"] == {"body": "Hello Ada, your code is 1.", "from_number": "Herald"}
    assert sent["uri"] == f"{stack.base_url}/v2/notifications/{sent['id']}"
    assert sent["reference"] == "ref-1"
    assert sent["scheduled_for"] is None
    assert sent["template"] == {
        "id": stack.demo.sms_template_id,
        "version": 1,
        "uri": f"{stack.base_url}/services/{stack.demo.service_id}/templates/{stack.demo.sms_template_id}",
    }

    found = stored(api, sent["id"], lambda n: n["status"] == "delivered")
    assert found["type"] == "sms"
    assert found["phone_number"] == "447700900123"
    assert found["email_address"] is None
    assert found["body"] == "Hello Ada, your code is 1."
    assert found["subject"] is None
    assert found["reference"] == "ref-1"
    assert TIMESTAMP.match(found["created_at"]) and TIMESTAMP.match(found["completed_at"])
    assert found["template"]["uri"] == f"{stack.base_url}/v2/template/{stack.demo.sms_template_id}/version/1"
    assert found["is_cost_data_ready"] is True
    assert found["cost_details"] == {
        "billable_sms_fragments": 1,
        "international_rate_multiplier": 1.0,
        "sms_rate": stack.settings.sms_rate,
    }
    assert found["cost_in_pounds"] == pytest.approx(stack.settings.sms_rate)
    assert {"line_1", "postcode", "created_by_name", "sent_at", "postage", "scheduled_for"} <= found.keys()


def test_an_email_with_sanitised_content(stack: Stack) -> None:
    api = client(stack, stack.demo.live_key)
    name = str(uuid.uuid4())
    sent = api.send_email_notification(
        "someone@example.com",
        stack.demo.email_template_id,
        {"name": name, "code": "2"},
        one_click_unsubscribe_url="https://unsubscribelink.com/unsubscribe",
        sanitise_content_for=["name"],
    )
    escaped = name.replace("-", "\\-")
    assert escaped in sent["content"]["body"]
    assert sent["content"]["subject"] == "Your reference"
    assert sent["content"]["from_email"] == f"herald@{stack.settings.email_domain}"
    assert sent["content"]["one_click_unsubscribe_url"] == "https://unsubscribelink.com/unsubscribe"
    assert sent["sanitised_content"] == {"name": {"unsanitised": name, "sanitised": escaped}}
    assert sent["reference"] is None

    found = stored(api, sent["id"], lambda n: n["status"] == "delivered")
    assert found["type"] == "email"
    assert found["email_address"] == "someone@example.com"
    assert found["subject"] == "Your reference"
    assert (found["cost_details"], found["cost_in_pounds"], found["is_cost_data_ready"]) == ({}, 0.0, True)


def test_listing_pages_newest_first_through_the_iterator(stack: Stack) -> None:
    """More than one page (250 each): the research-mode service, so nothing reaches a provider."""
    api = client(stack, stack.demo.research_key)
    reference = f"batch-{uuid.uuid4()}"
    ids = [
        api.send_sms_notification("07700900111", stack.demo.research_sms_template_id, PERSONALISATION, reference)["id"]
        for _ in range(260)
    ]
    wait_for(lambda: len(list(api.get_all_notifications_iterator(reference=reference))) == 260, timeout=30)

    first = api.get_all_notifications(reference=reference)
    assert len(first["notifications"]) == 250
    assert first["links"]["current"] == f"{stack.base_url}/v2/notifications?reference={reference}"
    assert first["links"]["next"] == (
        f"{stack.base_url}/v2/notifications?older_than={first['notifications'][-1]['id']}&reference={reference}"
    )
    listed = [n["id"] for n in api.get_all_notifications_iterator(reference=reference)]
    assert sorted(listed) == sorted(ids)
    assert len(set(listed)) == 260
    created = [n["created_at"] for n in api.get_all_notifications_iterator(reference=reference)]
    assert created == sorted(created, reverse=True)
    last = api.get_all_notifications(reference=reference, older_than=listed[-1])
    assert last["notifications"] == []
    assert "next" not in last["links"]


def test_list_filters(stack: Stack) -> None:
    live = client(stack, stack.demo.live_key)
    test = client(stack, stack.demo.test_key)
    reference = f"filters-{uuid.uuid4()}"
    sms = live.send_sms_notification("07700900123", stack.demo.sms_template_id, PERSONALISATION, reference)
    email = live.send_email_notification("a@example.com", stack.demo.email_template_id, PERSONALISATION, reference)
    by_test_key = test.send_sms_notification("07700900123", stack.demo.sms_template_id, PERSONALISATION, reference)
    stored(live, sms["id"], lambda n: n["status"] == "delivered")
    stored(live, email["id"], lambda n: n["status"] == "delivered")
    stored(test, by_test_key["id"], lambda n: n["status"] == "delivered")

    def ids(api: Any, **filters: Any) -> set[str]:
        return {n["id"] for n in api.get_all_notifications(reference=reference, **filters)["notifications"]}

    # As in Notify, each key type lists only what keys of its type sent.
    assert ids(live) == {sms["id"], email["id"]}
    assert ids(test) == {by_test_key["id"]}
    assert ids(live, template_type="email") == {email["id"]}
    assert ids(live, status="delivered", template_type="sms") == {sms["id"]}
    assert ids(live, status="failed") == set()
    assert ids(live, status=["created", "sending", "delivered"]) == {sms["id"], email["id"]}
    assert ids(live, include_jobs=True) == {sms["id"], email["id"]}
    assert ids(live, older_than=str(uuid.uuid4())) == set()


def test_templates(stack: Stack) -> None:
    api = client(stack, stack.demo.live_key)
    template_id = stack.demo.sms_template_id
    stack.admin.update_template(template_id, "Hi ((name)), code ((code)), ((extra))")
    try:
        current = api.get_template(template_id)
        assert current["version"] == 2
        assert current["body"] == "Hi ((name)), code ((code)), ((extra))"
        assert current["personalisation"] == {
            "name": {"required": True},
            "code": {"required": True},
            "extra": {"required": True},
        }
        assert current["subject"] is None
        assert TIMESTAMP.match(current["updated_at"])
        first = api.get_template_version(template_id, 1)
        assert first["version"] == 1
        assert first["body"] == "Hello ((name)), your code is ((code))."
        assert first["updated_at"] is None

        every = api.get_all_templates()["templates"]
        assert [(t["name"], t["type"]) for t in every] == [("Code", "sms"), ("Reference", "email")]
        assert [t["id"] for t in api.get_all_templates("email")["templates"]] == [stack.demo.email_template_id]
        assert api.get_all_templates("letter")["templates"] == []

        preview = api.post_template_preview(template_id, {"name": "Ada", "code": "3", "extra": "x"})
        assert preview == {
            "id": template_id,
            "type": "sms",
            "version": 2,
            "body": "Hi Ada, code 3, x",
            "html": None,
            "subject": None,
            "postage": None,
        }
        email = api.post_template_preview(stack.demo.email_template_id, PERSONALISATION)
        assert email["subject"] == "Your reference" and "<p" in email["html"]
    finally:
        stack.admin.update_template(template_id, "Hello ((name)), your code is ((code)).")


def errors_of(call: Callable[[], object]) -> tuple[int, Any]:
    """The status and Notify's `errors` list (the client's HTTPError.message when the body has no message)."""
    with pytest.raises(HTTPError) as raised:
        call()
    return raised.value.status_code, raised.value.message


def test_errors_as_notify_gives_them(stack: Stack) -> None:
    api = client(stack, stack.demo.live_key)
    sms_template = stack.demo.sms_template_id
    bad_key = client(stack, stack.demo.live_key[:-5] + "00000")
    assert errors_of(lambda: bad_key.send_sms_notification("07700900123", sms_template, PERSONALISATION)) == (
        403,
        [{"error": "AuthError", "message": "Invalid token: API key not found"}],
    )
    assert errors_of(lambda: bad_key.get_all_templates()) == (
        403,
        [{"error": "AuthError", "message": "Invalid token: API key not found"}],
    )
    other = stack.demo.research_sms_template_id
    assert errors_of(lambda: api.send_sms_notification("07700900123", other, PERSONALISATION)) == (
        400,
        [{"error": "BadRequestError", "message": "Template not found"}],
    )
    with pytest.raises(recipients.RecipientError) as bad_number:
        recipients.validate_phone_number("0770090012")
    assert errors_of(lambda: api.send_sms_notification("0770090012", sms_template, PERSONALISATION)) == (
        400,
        [{"error": "ValidationError", "message": f"phone_number {bad_number.value.message}"}],
    )
    assert errors_of(lambda: api.send_sms_notification("07700900123", sms_template, {})) == (
        400,
        [{"error": "BadRequestError", "message": "Missing personalisation: name, code"}],
    )
    assert errors_of(lambda: api.post_template_preview(sms_template, {"name": "x"})) == (
        400,
        [{"error": "BadRequestError", "message": "Missing personalisation: code"}],
    )
    assert errors_of(lambda: api.send_email_notification("a@example.com", sms_template, PERSONALISATION)) == (
        400,
        [{"error": "BadRequestError", "message": "sms template is not suitable for email notification"}],
    )
    assert errors_of(lambda: api.get_template(other)) == (
        404,
        [{"error": "NoResultFound", "message": "No result found"}],
    )
    assert errors_of(lambda: api.get_template_version(sms_template, 99))[0] == 404
    assert errors_of(lambda: api.get_notification_by_id(str(uuid.uuid4())))[0] == 404
    assert errors_of(lambda: api.get_notification_by_id("nope")) == (
        400,
        [{"error": "ValidationError", "message": "notification_id is not a valid UUID"}],
    )
    assert errors_of(lambda: api.get_all_notifications(status="elephant"))[1][0]["message"].startswith(
        "status elephant is not one of [cancelled, created, sending, sent, delivered, pending, failed,"
    )
    assert errors_of(
        lambda: api.send_letter_notification(sms_template, {"address_line_1": "A", "postcode": "SW1 1AA"})
    ) == (
        400,
        [{"error": "BadRequestError", "message": "Service is not allowed to send letters"}],
    )
    sender_id = str(uuid.UUID(int=1))
    assert errors_of(
        lambda: api.send_sms_notification("07700900123", sms_template, PERSONALISATION, sms_sender_id=sender_id)
    ) == (
        400,
        [
            {
                "error": "BadRequestError",
                "message": f"sms_sender_id {sender_id} does not exist in database for service id "
                f"{stack.demo.service_id}",
            }
        ],
    )
