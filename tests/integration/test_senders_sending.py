"""Sends that name a sender (sms_sender_id, email_reply_to_id) or carry a one-click unsubscribe link,
through the ingest servicer on pytest-grpc's real server, the real database and broker."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from herald.service_layer.admin import Admin
from herald.service_layer.senders import Senders
from herald.settings import Settings
from herald.v1 import ingest_pb2
from herald.v1.ingest_pb2_grpc import IngestStub
from tests.support import bearer, refused, take_queued

UNSUBSCRIBE = "https://example.gov.uk/unsubscribe?token=abc"


@pytest.fixture
def setup(admin: Admin, clean_db: Engine, clean_broker: str) -> dict[str, str]:
    service = admin.create_service("Sender options", sms_sender="Council")
    other = admin.create_service("Someone else")
    senders = Senders(clean_db)
    return {
        "service": service,
        "key": admin.create_api_key(service, "live", "normal"),
        "sms": admin.create_template(service, "sms", "sms", "Hi"),
        "email": admin.create_template(service, "email", "email", "Dear you", "Hello"),
        "parking": senders.add_sms_sender(service, "Parking", is_default=False).id,
        "their_sender": senders.add_sms_sender(other, "Theirs", is_default=False).id,
        "their_reply_to": senders.add_reply_to(other, "them@example.gov.uk", is_default=True).id,
    }


def test_an_sms_goes_from_the_sender_asked_for_else_from_the_default(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings
) -> None:
    def send(sender_id: str = "") -> Any:
        request = ingest_pb2.SendSmsRequest(
            phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id
        )
        return ingest_stub.SendSms(request, metadata=bearer(setup["key"]))

    asked, default = send(setup["parking"]), send()
    assert (asked.from_number, default.from_number) == ("Parking", "Council")
    assert [m.sender for m in take_queued(settings.broker_url, "db-sms")] == ["Parking", "Council"]


@pytest.mark.parametrize("whose", ["another service's", "unknown"])
def test_an_sms_sender_id_not_of_the_callers_service_is_notifys_400_and_nothing_is_queued(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings, whose: str
) -> None:
    sender_id = setup["their_sender"] if whose == "another service's" else str(uuid.uuid4())
    request = ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id)
    code, violations = refused(lambda: ingest_stub.SendSms(request, metadata=bearer(setup["key"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations == [
        ("sms_sender_id", f"sms_sender_id {sender_id} does not exist in database for service id {setup['service']}")
    ]
    assert take_queued(settings.broker_url, "db-sms") == []


def test_a_malformed_sender_id_is_the_schemas_error(ingest_stub: IngestStub, setup: dict[str, str]) -> None:
    request = ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id="abc")
    code, violations = refused(lambda: ingest_stub.SendSms(request, metadata=bearer(setup["key"])))
    assert (code, violations) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("sms_sender_id", "sms_sender_id is not a valid UUID")],
    )


def _email(setup: dict[str, str], **fields: Any) -> ingest_pb2.SendEmailRequest:
    return ingest_pb2.SendEmailRequest(email_address="ada@example.com", template_id=setup["email"], **fields)


def test_an_email_carries_the_reply_to_asked_for_else_the_default_else_none(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings, clean_db: Engine
) -> None:
    ingest_stub.SendEmail(_email(setup), metadata=bearer(setup["key"]))
    senders = Senders(clean_db)
    default = senders.add_reply_to(setup["service"], "replies@example.gov.uk", is_default=False)
    other = senders.add_reply_to(setup["service"], "parking@example.gov.uk", is_default=False)
    ingest_stub.SendEmail(_email(setup), metadata=bearer(setup["key"]))
    ingest_stub.SendEmail(_email(setup, email_reply_to_id=other.id), metadata=bearer(setup["key"]))
    assert default.is_default
    assert [m.reply_to for m in take_queued(settings.broker_url, "db-email")] == [
        "",
        "replies@example.gov.uk",
        "parking@example.gov.uk",
    ]


def test_another_services_reply_to_is_notifys_400(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings
) -> None:
    reply_to_id = setup["their_reply_to"]
    code, violations = refused(
        lambda: ingest_stub.SendEmail(_email(setup, email_reply_to_id=reply_to_id), metadata=bearer(setup["key"]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations == [
        (
            "email_reply_to_id",
            f"email_reply_to_id {reply_to_id} does not exist in database for service id {setup['service']}",
        )
    ]
    assert take_queued(settings.broker_url, "db-email") == []


def test_in_a_batch_a_bad_sender_id_fails_its_own_item_only(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings
) -> None:
    items = [
        ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id)
        for sender_id in (setup["parking"], setup["their_sender"])
    ]
    answer = ingest_stub.SendSmsBatch(ingest_pb2.SendSmsBatchRequest(items=items), metadata=bearer(setup["key"]))
    assert answer.results[0].accepted.from_number == "Parking"
    assert answer.results[1].error.field == "sms_sender_id"
    assert [m.sender for m in take_queued(settings.broker_url, "db-sms")] == ["Parking"]


def test_a_one_click_unsubscribe_url_travels_with_the_email(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings
) -> None:
    ingest_stub.SendEmail(_email(setup, one_click_unsubscribe_url=UNSUBSCRIBE), metadata=bearer(setup["key"]))
    [message] = take_queued(settings.broker_url, "db-email")
    assert message.unsubscribe_url == UNSUBSCRIBE


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.gov.uk/u", "one_click_unsubscribe_url is not a valid https url"),
        ("https://example.gov.uk/u\r\nBcc: x@example.com", "one_click_unsubscribe_url must not contain whitespace"),
    ],
)
def test_an_unsubscribe_url_that_is_not_https_or_not_one_header_is_refused(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings, url: str, message: str
) -> None:
    code, violations = refused(
        lambda: ingest_stub.SendEmail(_email(setup, one_click_unsubscribe_url=url), metadata=bearer(setup["key"]))
    )
    assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("one_click_unsubscribe_url", message)])
    assert take_queued(settings.broker_url, "db-email") == []
