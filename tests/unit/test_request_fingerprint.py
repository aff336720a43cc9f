"""A keyed send's request fingerprint: the same request gives the same hash, any other a different one."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from herald.service_layer.sending import SendCommand, fingerprint
from herald.v1.notifications_pb2 import NotificationType

TEMPLATE = "6f1b1b2a-7c11-4a36-9a53-5b0e6b0e8d8f"
SENDER = "0b7cbf2e-1a8e-4a0c-8f57-3c7a2f1d9e11"
TO = "447700900123"
PERSONALISATION = {"name": "Ada", "code": 1234, "items": ["a", "b"], "nested": {"x": 1, "y": 2}}


def _command(**changes: Any) -> SendCommand:
    command = SendCommand(
        NotificationType.SMS,
        "07700 900 123",
        TEMPLATE,
        reference="order-1",
        idempotency_key="k",
        sms_sender_id=SENDER,
        scheduled_for=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    )
    return dataclasses.replace(command, **changes)


def _hash(command: SendCommand | None = None, to: str = TO, personalisation: dict[str, Any] | None = None) -> str:
    return fingerprint(
        command or _command(), to, TEMPLATE, PERSONALISATION if personalisation is None else personalisation
    )


def test_the_same_request_gives_the_same_short_hash() -> None:
    first = _hash()
    assert first == _hash()
    assert len(first) == 32
    int(first, 16)  # hex


def test_personalisation_key_order_and_id_case_do_not_matter() -> None:
    reordered = {"nested": {"y": 2, "x": 1}, "items": ["a", "b"], "code": 1234, "name": "Ada"}
    assert _hash(personalisation=reordered) == _hash()
    assert _hash(_command(sms_sender_id=SENDER.upper())) == _hash()
    # The key itself and the caller's spelling of the recipient are not the request: `to` is normalised.
    assert _hash(_command(idempotency_key="other", to="+447700900123")) == _hash()


@pytest.mark.parametrize(
    "changes",
    [
        {"type": NotificationType.EMAIL},
        {"reference": "order-2"},
        {"reference": ""},
        {"sms_sender_id": ""},
        {"email_reply_to_id": SENDER},
        {"unsubscribe_url": "https://example.org/unsubscribe"},
        {"scheduled_for": None},
        {"scheduled_for": datetime(2026, 12, 1, 9, 0, 1, tzinfo=UTC)},
        {"sanitise_content_for": ["name"]},
    ],
)
def test_any_field_different_gives_a_different_hash(changes: dict[str, Any]) -> None:
    assert _hash(_command(**changes)) != _hash()


def test_recipient_template_and_personalisation_count() -> None:
    base = _hash()
    assert _hash(to="447700900124") != base
    assert fingerprint(_command(), TO, "7f1b1b2a-7c11-4a36-9a53-5b0e6b0e8d8f", PERSONALISATION) != base
    assert _hash(personalisation={**PERSONALISATION, "name": "Bob"}) != base
    assert _hash(personalisation={**PERSONALISATION, "extra": ""}) != base
    assert _hash(personalisation={**PERSONALISATION, "items": ["b", "a"]}) != base  # a list's order is content
    assert _hash(personalisation={**PERSONALISATION, "code": "1234"}) != base
