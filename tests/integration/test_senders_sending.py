"""Sends that name a sender (sms_sender_id, email_reply_to_id) or carry a one-click unsubscribe link,
through the ingest servicer on pytest-grpc's real server, the real database and broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.domain.apikeys import create_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import ObservingInterceptor
from herald.queues import PublisherThread
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.service_layer.senders import Senders
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.servicer import IngestServicer
from tests.support import take_queued

UNSUBSCRIBE = "https://example.gov.uk/unsubscribe?token=abc"


@pytest.fixture(scope="module")
def publisher(settings: Settings) -> Iterator[PublisherThread]:
    p = PublisherThread(settings.broker_url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return ingest_pb2_grpc.add_IngestServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(engine: Engine, settings: Settings, publisher: PublisherThread) -> IngestServicer:
    # No caching: each test's senders are read as the test made them.
    box = SecretBox(settings.secret_key)
    return IngestServicer(Authenticator(engine, box), Sender(engine, publisher.publish, "example.org"), engine)


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[grpc.ServerInterceptor]:
    return [ObservingInterceptor()]


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return ingest_pb2_grpc.IngestStub


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


def _auth(key: str) -> list[tuple[str, str]]:
    parts = split_key(key)
    return [("authorization", f"Bearer {create_token(parts.secret, parts.service_id)}")]


def _refused(call: Any) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), field_violations(caught.value)


def test_an_sms_goes_from_the_sender_asked_for_else_from_the_default(
    grpc_stub: Any, setup: dict[str, str], settings: Settings
) -> None:
    def send(sender_id: str = "") -> Any:
        request = ingest_pb2.SendSmsRequest(
            phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id
        )
        return grpc_stub.SendSms(request, metadata=_auth(setup["key"]))

    asked, default = send(setup["parking"]), send()
    assert (asked.from_number, default.from_number) == ("Parking", "Council")
    assert [m.sender for m in take_queued(settings.broker_url, "db-sms")] == ["Parking", "Council"]


@pytest.mark.parametrize("whose", ["another service's", "unknown"])
def test_an_sms_sender_id_not_of_the_callers_service_is_notifys_400_and_nothing_istake_queued(
    grpc_stub: Any, setup: dict[str, str], settings: Settings, whose: str
) -> None:
    sender_id = setup["their_sender"] if whose == "another service's" else str(uuid.uuid4())
    request = ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id)
    code, violations = _refused(lambda: grpc_stub.SendSms(request, metadata=_auth(setup["key"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations == [
        ("sms_sender_id", f"sms_sender_id {sender_id} does not exist in database for service id {setup['service']}")
    ]
    assert take_queued(settings.broker_url, "db-sms") == []


def test_a_malformed_sender_id_is_the_schemas_error(grpc_stub: Any, setup: dict[str, str]) -> None:
    request = ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id="abc")
    code, violations = _refused(lambda: grpc_stub.SendSms(request, metadata=_auth(setup["key"])))
    assert (code, violations) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("sms_sender_id", "sms_sender_id is not a valid UUID")],
    )


def _email(setup: dict[str, str], **fields: Any) -> ingest_pb2.SendEmailRequest:
    return ingest_pb2.SendEmailRequest(email_address="ada@example.com", template_id=setup["email"], **fields)


def test_an_email_carries_the_reply_to_asked_for_else_the_default_else_none(
    grpc_stub: Any, setup: dict[str, str], settings: Settings, clean_db: Engine
) -> None:
    grpc_stub.SendEmail(_email(setup), metadata=_auth(setup["key"]))
    senders = Senders(clean_db)
    default = senders.add_reply_to(setup["service"], "replies@example.gov.uk", is_default=False)
    other = senders.add_reply_to(setup["service"], "parking@example.gov.uk", is_default=False)
    grpc_stub.SendEmail(_email(setup), metadata=_auth(setup["key"]))
    grpc_stub.SendEmail(_email(setup, email_reply_to_id=other.id), metadata=_auth(setup["key"]))
    assert default.is_default
    assert [m.reply_to for m in take_queued(settings.broker_url, "db-email")] == [
        "",
        "replies@example.gov.uk",
        "parking@example.gov.uk",
    ]


def test_another_services_reply_to_is_notifys_400(grpc_stub: Any, setup: dict[str, str], settings: Settings) -> None:
    reply_to_id = setup["their_reply_to"]
    code, violations = _refused(
        lambda: grpc_stub.SendEmail(_email(setup, email_reply_to_id=reply_to_id), metadata=_auth(setup["key"]))
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
    grpc_stub: Any, setup: dict[str, str], settings: Settings
) -> None:
    items = [
        ingest_pb2.SendSmsRequest(phone_number="07700900123", template_id=setup["sms"], sms_sender_id=sender_id)
        for sender_id in (setup["parking"], setup["their_sender"])
    ]
    answer = grpc_stub.SendSmsBatch(ingest_pb2.SendSmsBatchRequest(items=items), metadata=_auth(setup["key"]))
    assert answer.results[0].accepted.from_number == "Parking"
    assert answer.results[1].error.field == "sms_sender_id"
    assert [m.sender for m in take_queued(settings.broker_url, "db-sms")] == ["Parking"]


def test_a_one_click_unsubscribe_url_travels_with_the_email(
    grpc_stub: Any, setup: dict[str, str], settings: Settings
) -> None:
    grpc_stub.SendEmail(_email(setup, one_click_unsubscribe_url=UNSUBSCRIBE), metadata=_auth(setup["key"]))
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
    grpc_stub: Any, setup: dict[str, str], settings: Settings, url: str, message: str
) -> None:
    code, violations = _refused(
        lambda: grpc_stub.SendEmail(_email(setup, one_click_unsubscribe_url=url), metadata=_auth(setup["key"]))
    )
    assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("one_click_unsubscribe_url", message)])
    assert take_queued(settings.broker_url, "db-email") == []
