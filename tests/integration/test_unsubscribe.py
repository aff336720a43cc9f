"""One-click unsubscribe links, reply-to addresses and the rendered parts reach the provider: an email
sent through ingest, the dispatchers and SES's client arrives at the provider simulator with
`List-Unsubscribe`, `List-Unsubscribe-Post`, its reply-to address and its plain-text and HTML parts as
the template renders them, also when it is handed off again after a failure; and what a notification was
sent with is stored with it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import Engine, text

from herald.clients import IngestClient
from herald.domain import templates
from herald.domain.apikeys import create_token, split_key
from herald.service_layer.admin import Admin, DemoSetup
from herald.service_layer.senders import Senders
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from tests.support import Stack, final_status, running_stack, wait_for

UNSUBSCRIBE = "https://example.gov.uk/unsubscribe?token=abc123"


@pytest.fixture
def stack(settings: Settings, clean_db: Engine, clean_broker: str) -> Iterator[Stack]:
    # A compressed retry schedule and a real scheduler, so that a failed hand-off is re-driven from the row.
    quick = replace(settings, retry_delays="0.2,0.2,0.2,0.2,0.2", sweep_seconds=1, cache_seconds=0.0)
    with running_stack(quick, clean_db, scheduler=True) as running:
        yield running


@pytest.fixture
def demo(admin: Admin) -> DemoSetup:
    return admin.demo("unsubscribe")


@pytest.fixture
def client(stack: Stack, demo: DemoSetup) -> Iterator[IngestClient]:
    ingest = IngestClient(stack.settings.ingest_address, demo.live_key)
    yield ingest
    ingest.close()


@pytest.fixture
def stub(stack: Stack) -> Iterator[Any]:
    with grpc.insecure_channel(stack.settings.ingest_address) as channel:
        yield ingest_pb2_grpc.IngestStub(channel)


def _auth(demo: DemoSetup) -> list[tuple[str, str]]:
    key = split_key(demo.live_key)
    return [("authorization", f"Bearer {create_token(key.secret, key.service_id)}")]


def _emails(stack: Stack) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.simulator.url}/_emails", timeout=5).json()["emails"])


def _parts(stack: Stack) -> dict[str, dict[str, str]]:
    return dict(httpx.get(f"{stack.simulator.url}/_emails", timeout=5).json()["parts"])


def _email_request(demo: DemoSetup, **fields: Any) -> ingest_pb2.SendEmailRequest:
    request = ingest_pb2.SendEmailRequest(email_address="ada@example.com", template_id=demo.email_template_id, **fields)
    request.personalisation.update({"name": "Ada", "code": "1"})
    return request


def _stored(engine: Engine, notification_id: str) -> tuple[str | None, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT reply_to_text, unsubscribe_url FROM notifications WHERE id = :id"), {"id": notification_id}
        ).one()
    return row[0], row[1]


def test_the_unsubscribe_headers_and_reply_to_reach_ses(
    stack: Stack, demo: DemoSetup, client: IngestClient, stub: Any, clean_db: Engine
) -> None:
    Senders(clean_db).add_reply_to(demo.service_id, "replies@example.gov.uk", is_default=True)
    request = _email_request(demo, one_click_unsubscribe_url=UNSUBSCRIBE)
    notification_id = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, notification_id) == "delivered"
    assert _emails(stack)[notification_id] == {
        "reply_to": ["replies@example.gov.uk"],
        "headers": {"List-Unsubscribe": f"<{UNSUBSCRIBE}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    }
    assert _stored(clean_db, notification_id) == ("replies@example.gov.uk", UNSUBSCRIBE)


def test_an_email_without_either_has_no_such_headers(
    stack: Stack, demo: DemoSetup, client: IngestClient, stub: Any
) -> None:
    notification_id = stub.SendEmail(_email_request(demo), metadata=_auth(demo), timeout=10).id
    assert final_status(client, notification_id) == "delivered"
    assert notification_id not in _emails(stack)


def test_a_retried_email_keeps_its_headers_and_reply_to(
    stack: Stack, demo: DemoSetup, client: IngestClient, stub: Any, clean_db: Engine
) -> None:
    """The retry is built again from the stored row (the Republisher), not from the first message."""
    senders = Senders(clean_db)
    senders.add_reply_to(demo.service_id, "replies@example.gov.uk", is_default=True)
    other = senders.add_reply_to(demo.service_id, "parking@example.gov.uk", is_default=False)
    stack.control(fail_next=1, status=503, provider="ses")
    request = _email_request(demo, one_click_unsubscribe_url=UNSUBSCRIBE, email_reply_to_id=other.id)
    notification_id = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, notification_id) == "delivered"
    assert client.get_notification(notification_id).attempts == 2
    email = wait_for(lambda: _emails(stack).get(notification_id))
    assert email["reply_to"] == ["parking@example.gov.uk"]
    assert email["headers"]["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"


def test_an_sms_is_stored_with_the_sender_it_was_sent_from(
    demo: DemoSetup, client: IngestClient, stub: Any, clean_db: Engine
) -> None:
    parking = Senders(clean_db).add_sms_sender(demo.service_id, "Parking", is_default=False)
    request = ingest_pb2.SendSmsRequest(
        phone_number="07700900123", template_id=demo.sms_template_id, sms_sender_id=parking.id
    )
    request.personalisation.update({"name": "Ada", "code": "1"})
    answer = stub.SendSms(request, metadata=_auth(demo), timeout=10)
    assert answer.from_number == "Parking"
    assert final_status(client, answer.id) == "delivered"
    assert _stored(clean_db, answer.id) == ("Parking", None)


def test_the_text_and_html_parts_reach_ses_as_the_template_renders_them(
    stack: Stack, demo: DemoSetup, client: IngestClient, stub: Any, clean_db: Engine
) -> None:
    """Ingest leaves both parts to the hand-off (templates.email_parts), a retry too (the Republisher)."""
    with clean_db.connect() as conn:
        subject, content = conn.execute(
            text("SELECT subject, content FROM templates WHERE id = :id"), {"id": demo.email_template_id}
        ).one()
    request = _email_request(demo)
    request.personalisation.update({"name": "<b>Ada</b> & co", "code": "1"})
    rendered = templates.render_email(subject, content, {"name": "<b>Ada</b> & co", "code": "1"})
    expected = {"text": rendered.plain_text, "html": rendered.html}
    assert "&lt;b&gt;Ada&lt;/b&gt; &amp; co" in rendered.html  # personalisation escaped, never markup
    assert rendered.plain_text.startswith("Dear <b>Ada</b> & co,\n")  # the text part is not markdown
    first = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, first) == "delivered"
    stack.control(fail_next=1, status=503, provider="ses")
    retried = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, retried) == "delivered"
    assert client.get_notification(retried).attempts == 2
    parts = _parts(stack)
    assert parts[first] == expected
    assert parts[retried] == expected


def test_a_link_with_a_placeholder_reaches_ses_with_both_parts_made_at_ingest(
    stack: Stack, demo: DemoSetup, client: IngestClient, stub: Any, admin: Admin
) -> None:
    """A value inside a link is percent-encoded for it, which the body alone cannot redo at the hand-off:
    ingest makes both parts and the message carries them (a retry renders them again from the row)."""
    body = "[Click](https://www.gov.uk/((path)))\n\nor go to https://www.gov.uk/((path)) today"
    template_id = admin.create_template(demo.service_id, "Link", "email", body, "A link")
    rendered = templates.render_email("A link", body, {"path": "a b"})
    assert "https://www.gov.uk/a%20b" in rendered.plain_text and "https://www.gov.uk/a%20b" in rendered.html
    request = ingest_pb2.SendEmailRequest(email_address="ada@example.com", template_id=template_id)
    request.personalisation.update({"path": "a b"})
    first = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, first) == "delivered"
    stack.control(fail_next=1, status=503, provider="ses")
    retried = stub.SendEmail(request, metadata=_auth(demo), timeout=10).id
    assert final_status(client, retried) == "delivered"
    parts = _parts(stack)
    assert parts[first] == parts[retried] == {"text": rendered.plain_text, "html": rendered.html}
