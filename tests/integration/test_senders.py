"""Sender management through the Admin API (pytest-grpc's real server, the real database): SMS senders
and reply-to addresses with one default each, and the inbound number."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald import cli
from herald.service_layer.admin import Admin
from herald.v1 import admin_pb2
from herald.v1.admin_pb2_grpc import AdminStub
from tests.support import ADMIN_SECRET, admin_bearer, refused


@pytest.fixture
def service(admin: Admin) -> str:
    return admin.create_service("Senders", sms_sender="Council")


def _sms_senders(stub: Any, service_id: str) -> list[tuple[str, bool]]:
    listed = stub.ListSmsSenders(admin_pb2.ListSendersRequest(service_id=service_id), metadata=admin_bearer())
    return [(s.sms_sender, s.is_default) for s in listed.senders]


def _service_sender(stub: Any, service_id: str) -> str:
    found = stub.GetService(admin_pb2.GetServiceRequest(service_id=service_id), metadata=admin_bearer())
    return str(found.sms_sender)


def test_a_service_starts_with_its_sms_sender_as_the_one_default(admin_stub: AdminStub, service: str) -> None:
    assert _sms_senders(admin_stub, service) == [("Council", True)]
    assert _sms_senders(admin_stub, service) == [("Council", True)]  # listing twice makes it once


def test_a_new_default_sender_takes_the_place_of_the_old_one_and_becomes_the_services(
    admin_stub: AdminStub, service: str
) -> None:
    other = admin_stub.AddSmsSender(
        admin_pb2.AddSmsSenderRequest(service_id=service, sms_sender=" Parking "), metadata=admin_bearer()
    )
    assert (other.sms_sender, other.is_default, other.HasField("created_at")) == ("Parking", False, True)
    assert _sms_senders(admin_stub, service) == [("Council", True), ("Parking", False)]
    default = admin_stub.AddSmsSender(
        admin_pb2.AddSmsSenderRequest(service_id=service, sms_sender="07700900123", is_default=True),
        metadata=admin_bearer(),
    )
    assert default.is_default
    assert _sms_senders(admin_stub, service) == [("07700900123", True), ("Council", False), ("Parking", False)]
    assert _service_sender(admin_stub, service) == "07700900123"

    admin_stub.UpdateSmsSender(
        admin_pb2.UpdateSmsSenderRequest(service_id=service, sms_sender_id=other.id, is_default=True),
        metadata=admin_bearer(),
    )
    assert _service_sender(admin_stub, service) == "Parking"
    renamed = admin_stub.UpdateSmsSender(
        admin_pb2.UpdateSmsSenderRequest(service_id=service, sms_sender_id=other.id, sms_sender="Parking2"),
        metadata=admin_bearer(),
    )
    assert (renamed.sms_sender, renamed.is_default, renamed.HasField("updated_at")) == ("Parking2", True, True)
    assert _service_sender(admin_stub, service) == "Parking2"  # the default's text is what sends use


def test_the_default_sender_cannot_be_made_not_the_default(admin_stub: AdminStub, service: str) -> None:
    [default] = admin_stub.ListSmsSenders(
        admin_pb2.ListSendersRequest(service_id=service), metadata=admin_bearer()
    ).senders
    code, violations = refused(
        lambda: admin_stub.UpdateSmsSender(
            admin_pb2.UpdateSmsSenderRequest(
                service_id=service, sms_sender_id=default.id, sms_sender="Other", is_default=False
            ),
            metadata=admin_bearer(),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations[0][0] == "is_default"
    assert _sms_senders(admin_stub, service) == [("Council", True)]  # nothing changed, the text neither


@pytest.mark.parametrize("bad", ["", "AB", "Council 2026", "Hi!", "0044770090", "1234"])
def test_a_bad_sender_is_refused_naming_the_field_and_nothing_is_added(
    admin_stub: AdminStub, service: str, bad: str
) -> None:
    code, violations = refused(
        lambda: admin_stub.AddSmsSender(
            admin_pb2.AddSmsSenderRequest(service_id=service, sms_sender=bad, is_default=True), metadata=admin_bearer()
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations[0][0] == "sms_sender"
    assert _sms_senders(admin_stub, service) == [("Council", True)]
    assert _service_sender(admin_stub, service) == "Council"


def test_another_services_sender_cannot_be_changed(admin_stub: AdminStub, service: str, admin: Admin) -> None:
    other_service = admin.create_service("Someone else")
    [theirs] = admin_stub.ListSmsSenders(
        admin_pb2.ListSendersRequest(service_id=other_service), metadata=admin_bearer()
    ).senders
    for sender_id in (theirs.id, str(uuid.uuid4())):
        code, violations = refused(
            lambda sender_id=sender_id: admin_stub.UpdateSmsSender(
                admin_pb2.UpdateSmsSenderRequest(service_id=service, sms_sender_id=sender_id, sms_sender="Mine"),
                metadata=admin_bearer(),
            )
        )
        assert (code, violations) == (grpc.StatusCode.INVALID_ARGUMENT, [("sms_sender_id", "SMS sender not found")])
    assert _sms_senders(admin_stub, other_service) == [("Herald", True)]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda stub, sid: stub.ListSmsSenders(
                admin_pb2.ListSendersRequest(service_id=sid), metadata=admin_bearer()
            ),
            "",
        ),
        (
            lambda stub, sid: stub.ListReplyTos(admin_pb2.ListSendersRequest(service_id=sid), metadata=admin_bearer()),
            "",
        ),
        (
            lambda stub, sid: stub.UpdateReplyTo(
                admin_pb2.UpdateReplyToRequest(service_id=sid, email_reply_to_id="nope"), metadata=admin_bearer()
            ),
            "email_reply_to_id",
        ),
    ],
)
def test_unknown_services_and_malformed_ids_are_invalid_arguments(admin_stub: AdminStub, call: Any, field: str) -> None:
    code, violations = refused(lambda: call(admin_stub, str(uuid.uuid4())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert violations[0] == (field, f"{field} is not a valid UUID") if field else ("service_id", "Service not found")


def test_sender_rpcs_need_the_admin_token(admin_stub: AdminStub, service: str) -> None:
    code, _ = refused(lambda: admin_stub.ListSmsSenders(admin_pb2.ListSendersRequest(service_id=service)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def _reply_tos(stub: Any, service_id: str) -> list[tuple[str, bool]]:
    listed = stub.ListReplyTos(admin_pb2.ListSendersRequest(service_id=service_id), metadata=admin_bearer())
    return [(r.email_address, r.is_default) for r in listed.reply_tos]


def test_reply_to_addresses_have_one_default_the_first_one_added(admin_stub: AdminStub, service: str) -> None:
    assert _reply_tos(admin_stub, service) == []

    def add(address: str, is_default: bool = False) -> Any:
        request = admin_pb2.AddReplyToRequest(service_id=service, email_address=address, is_default=is_default)
        return admin_stub.AddReplyTo(request, metadata=admin_bearer())

    first = add(" first@example.gov.uk ")
    assert (first.email_address, first.is_default) == ("first@example.gov.uk", True)
    add("second@example.gov.uk")
    third = add("third@example.gov.uk", is_default=True)
    assert _reply_tos(admin_stub, service) == [
        ("third@example.gov.uk", True),
        ("first@example.gov.uk", False),
        ("second@example.gov.uk", False),
    ]
    code, violations = refused(
        lambda: admin_stub.UpdateReplyTo(
            admin_pb2.UpdateReplyToRequest(service_id=service, email_reply_to_id=third.id, is_default=False),
            metadata=admin_bearer(),
        )
    )
    assert (code, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "is_default")
    changed = admin_stub.UpdateReplyTo(
        admin_pb2.UpdateReplyToRequest(
            service_id=service, email_reply_to_id=first.id, email_address="new@example.gov.uk", is_default=True
        ),
        metadata=admin_bearer(),
    )
    assert (changed.email_address, changed.is_default) == ("new@example.gov.uk", True)
    assert [default for _, default in _reply_tos(admin_stub, service)] == [True, False, False]


def test_a_bad_reply_to_address_is_refused_and_nothing_is_added(admin_stub: AdminStub, service: str) -> None:
    code, violations = refused(
        lambda: admin_stub.AddReplyTo(
            admin_pb2.AddReplyToRequest(service_id=service, email_address="not an address"), metadata=admin_bearer()
        )
    )
    assert (code, violations) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("email_address", "email_address Not a valid email address")],
    )
    assert _reply_tos(admin_stub, service) == []


def test_an_inbound_number_becomes_the_default_sender_and_belongs_to_one_service(
    admin_stub: AdminStub, service: str, admin: Admin, clean_db: Engine
) -> None:
    number = admin_stub.SetInboundNumber(
        admin_pb2.SetInboundNumberRequest(service_id=service, number="+44 7700 900111"), metadata=admin_bearer()
    )
    assert (number.number, number.service_id) == ("447700900111", service)
    listed = admin_stub.ListSmsSenders(
        admin_pb2.ListSendersRequest(service_id=service), metadata=admin_bearer()
    ).senders
    assert [(s.sms_sender, s.is_default, s.is_inbound_number) for s in listed] == [
        ("447700900111", True, True),
        ("Council", False, False),
    ]
    assert listed[0].id == number.sms_sender_id
    assert _service_sender(admin_stub, service) == "447700900111"

    code, violations = refused(
        lambda: admin_stub.UpdateSmsSender(
            admin_pb2.UpdateSmsSenderRequest(
                service_id=service, sms_sender_id=number.sms_sender_id, sms_sender="Other"
            ),
            metadata=admin_bearer(),
        )
    )
    assert (code, violations) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("sms_sender", "You cannot update an inbound number")],
    )

    other_service = admin.create_service("Someone else")
    code, violations = refused(
        lambda: admin_stub.SetInboundNumber(
            admin_pb2.SetInboundNumberRequest(service_id=other_service, number="07700900111"), metadata=admin_bearer()
        )
    )
    assert (code, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "number")

    # Setting it again is the same; a new number replaces the old one.
    again = admin_stub.SetInboundNumber(
        admin_pb2.SetInboundNumberRequest(service_id=service, number="07700900111"), metadata=admin_bearer()
    )
    assert again.sms_sender_id == number.sms_sender_id
    admin_stub.SetInboundNumber(
        admin_pb2.SetInboundNumberRequest(service_id=service, number="07700900222"), metadata=admin_bearer()
    )
    with clean_db.connect() as conn:
        owned = conn.execute(text("SELECT number, service_id FROM inbound_numbers")).all()
    assert [(n, str(s)) for n, s in owned] == [("447700900222", service)]
    assert _service_sender(admin_stub, service) == "447700900222"


def test_a_bad_inbound_number_is_refused(admin_stub: AdminStub, service: str, clean_db: Engine) -> None:
    code, violations = refused(
        lambda: admin_stub.SetInboundNumber(
            admin_pb2.SetInboundNumberRequest(service_id=service, number="call me"), metadata=admin_bearer()
        )
    )
    assert (code, violations[0][0]) == (grpc.StatusCode.INVALID_ARGUMENT, "number")
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM inbound_numbers")) == 0


def test_the_cli_manages_senders_and_the_inbound_number(
    admin_stub: AdminStub,
    admin_address: str,
    service: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HERALD_ADMIN_SECRET", ADMIN_SECRET)

    def herald(*argv: str) -> Any:
        assert cli.main([*argv, "--target", admin_address, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    parking = herald("senders", "sms", "add", service, "Parking")
    assert (parking["sms_sender"], parking["is_default"]) == ("Parking", False)
    assert herald("senders", "sms", "update", service, parking["id"], "--default")["is_default"] is True
    renamed = herald("senders", "sms", "update", service, parking["id"], "--sms-sender", "Parking2")
    assert renamed["sms_sender"] == "Parking2"
    assert [s["sms_sender"] for s in herald("senders", "sms", "list", service)["senders"]] == ["Parking2", "Council"]

    first = herald("senders", "reply-to", "add", service, "first@example.gov.uk")
    assert first["is_default"] is True
    herald("senders", "reply-to", "add", service, "second@example.gov.uk", "--default")
    changed = herald("senders", "reply-to", "update", service, first["id"], "--email-address", "one@example.gov.uk")
    assert (changed["email_address"], changed["is_default"]) == ("one@example.gov.uk", False)
    listed = herald("senders", "reply-to", "list", service)["reply_tos"]
    assert [r["email_address"] for r in listed] == ["second@example.gov.uk", "one@example.gov.uk"]

    number = herald("inbound-number", "set", service, "07700900333")
    assert number["number"] == "447700900333"

    assert cli.main(["senders", "sms", "list", service, "--target", admin_address]) == 0
    table = capsys.readouterr().out
    assert "447700900333" in table and "inbound number" in table
    assert cli.main(["senders", "sms", "add", service, "Hi!", "--target", admin_address]) == 1
    assert "sms_sender: sms_sender can only use letters" in capsys.readouterr().err
