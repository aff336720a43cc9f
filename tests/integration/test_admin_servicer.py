"""The Admin servicer on pytest-grpc's real server: services, keys and templates, against the real database."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald import cli
from herald.domain.apikeys import create_admin_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.v1 import admin_pb2
from herald.v1.admin_pb2_grpc import AdminStub
from tests.support import ADMIN_SECRET, admin_bearer


def test_two_concurrent_creates_of_one_name_give_one_row(admin_stub: AdminStub, clean_db: Engine) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            admin_stub.CreateService(admin_pb2.CreateServiceRequest(name="Race"), metadata=admin_bearer())
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ALREADY_EXISTS: Duplicate service name 'Race'", "OK"]
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM services WHERE name = 'Race'")) == 1


def test_service_key_and_template_versions(admin_stub: AdminStub, clean_db: Engine) -> None:
    service = admin_stub.CreateService(
        admin_pb2.CreateServiceRequest(name="Setup", research_mode=True), metadata=admin_bearer()
    )
    key = admin_stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(service_id=service.id, name="live", key_type="normal"), metadata=admin_bearer()
    ).key
    assert split_key(key).service_id == service.id
    with clean_db.connect() as conn:
        stored = conn.scalar(text("SELECT secret_encrypted FROM api_keys"))
    assert split_key(key).secret not in stored  # encrypted at rest
    template = admin_stub.CreateTemplate(
        admin_pb2.CreateTemplateRequest(service_id=service.id, name="t", template_type="sms", content="v1 ((x))"),
        metadata=admin_bearer(),
    )
    edited = admin_stub.UpdateTemplate(
        admin_pb2.UpdateTemplateRequest(template_id=template.id, content="v2 ((x))"), metadata=admin_bearer()
    )
    assert (template.version, edited.version) == (1, 2)
    with clean_db.connect() as conn:
        versions = conn.execute(text("SELECT version, content FROM templates_history ORDER BY version")).all()
    assert [tuple(v) for v in versions] == [(1, "v1 ((x))"), (2, "v2 ((x))")]


@pytest.mark.parametrize(
    ("call", "request_message", "code", "details"),
    [
        ("CreateService", admin_pb2.CreateServiceRequest(name="  "), "INVALID_ARGUMENT", "name Can't be empty"),
        (
            "CreateApiKey",
            admin_pb2.CreateApiKeyRequest(service_id=str(uuid.uuid4()), name="k", key_type="normal"),
            "INVALID_ARGUMENT",
            "Service not found",
        ),
        (
            "CreateApiKey",
            admin_pb2.CreateApiKeyRequest(service_id=str(uuid.uuid4()), name="k", key_type="superuser"),
            "INVALID_ARGUMENT",
            "key_type superuser is not one of ['normal', 'team', 'test']",
        ),
        (
            "UpdateTemplate",
            admin_pb2.UpdateTemplateRequest(template_id=str(uuid.uuid4()), content="x"),
            "INVALID_ARGUMENT",
            "Template not found",
        ),
        (
            "CreateTemplate",
            admin_pb2.CreateTemplateRequest(service_id="nope", name="t", template_type="sms", content="x"),
            "INVALID_ARGUMENT",
            "service_id is not a valid UUID",
        ),
    ],
)
def test_bad_requests_change_nothing(
    admin_stub: AdminStub, clean_db: Engine, call: str, request_message: Any, code: str, details: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(admin_stub, call)(request_message, metadata=admin_bearer())
    assert (err.value.code().name, err.value.details()) == (code, details)
    if code == "INVALID_ARGUMENT":
        assert field_violations(err.value)
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM services")) == 0
        assert conn.scalar(text("SELECT count(*) FROM api_keys")) == 0


def test_admin_calls_need_the_admin_token(admin_stub: AdminStub, clean_db: Engine) -> None:
    wrong = [("authorization", f"Bearer {create_admin_token('not-the-secret-but-just-as-long-as-it')}")]
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.CreateService(admin_pb2.CreateServiceRequest(name="x"), metadata=wrong)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as missing:
        admin_stub.CreateService(admin_pb2.CreateServiceRequest(name="x"))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM services")) == 0


def _service(admin_stub: AdminStub, name: str, **fields: Any) -> str:
    return str(
        admin_stub.CreateService(admin_pb2.CreateServiceRequest(name=name, **fields), metadata=admin_bearer()).id
    )


def test_a_new_service_starts_in_trial_mode_and_going_live_is_an_update(
    admin_stub: AdminStub, clean_db: Engine
) -> None:
    service_id = _service(admin_stub, "Trial")
    assert admin_stub.GetService(admin_pb2.GetServiceRequest(service_id=service_id), metadata=admin_bearer()).restricted
    updated = admin_stub.UpdateService(
        admin_pb2.UpdateServiceRequest(
            service_id=service_id,
            name="Live now",
            restricted=False,
            rate_limit=600,
            sms_message_limit=0,
            international_sms_message_limit=100,
            can_send_international_sms=True,
        ),
        metadata=admin_bearer(),
    )
    assert (updated.name, updated.restricted, updated.research_mode, updated.prefix_sms) == (
        "Live now",
        False,
        False,
        False,
    )
    assert (updated.rate_limit, updated.sms_message_limit, updated.email_message_limit) == (600, 0, 999_999_999)
    assert (updated.international_sms_message_limit, updated.can_send_international_sms) == (100, True)
    live_from_the_start = _service(admin_stub, "Live", restricted=False)
    assert not admin_stub.GetService(
        admin_pb2.GetServiceRequest(service_id=live_from_the_start), metadata=admin_bearer()
    ).restricted


def test_a_service_created_with_a_given_id_keeps_it(admin_stub: AdminStub, clean_db: Engine) -> None:
    given = str(uuid.uuid4())
    assert _service(admin_stub, "Given", id=given) == given
    with pytest.raises(grpc.RpcError) as again:
        _service(admin_stub, "Given again", id=given)
    assert (again.value.code(), field_violations(again.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        [("id", f"id {given} is already a service")],
    )


def test_a_rename_to_a_taken_name_is_already_exists(admin_stub: AdminStub, clean_db: Engine) -> None:
    _service(admin_stub, "Taken")
    other = _service(admin_stub, "Other")
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.UpdateService(
            admin_pb2.UpdateServiceRequest(service_id=other, name="Taken"), metadata=admin_bearer()
        )
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.ALREADY_EXISTS, "Duplicate service name 'Taken'")
    assert admin_stub.GetService(admin_pb2.GetServiceRequest(service_id=other), metadata=admin_bearer()).name == "Other"


def test_two_concurrent_renames_to_one_name_give_one_winner(admin_stub: AdminStub, clean_db: Engine) -> None:
    services = [_service(admin_stub, "First"), _service(admin_stub, "Second")]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def rename(service_id: str) -> None:
        barrier.wait()
        try:
            admin_stub.UpdateService(
                admin_pb2.UpdateServiceRequest(service_id=service_id, name="Wanted"), metadata=admin_bearer()
            )
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=rename, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ALREADY_EXISTS: Duplicate service name 'Wanted'", "OK"]
    with clean_db.connect() as conn:
        names = sorted(conn.scalars(text("SELECT name FROM services")).all())
    assert names in (["First", "Wanted"], ["Second", "Wanted"])


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"service_id": "not-a-uuid"}, "service_id", "service_id is not a valid UUID"),
        ({"service_id": "3f1a2e54-9a41-4d5c-8b7e-2f5c3e1d0a99"}, "service_id", "Service not found"),
        ({"rate_limit": -1}, "rate_limit", "rate_limit must be at least 1"),
        ({"rate_limit": 0}, "rate_limit", "rate_limit must be at least 1"),
        ({"rate_limit": 10**9}, "rate_limit", "rate_limit must be at most 1000000"),
        ({"sms_message_limit": -5}, "sms_message_limit", "sms_message_limit must be at least 0"),
        (
            {"email_message_limit": 10**13},
            "email_message_limit",
            "email_message_limit must be at most 1000000000000",
        ),
        ({"name": " "}, "name", "name Can't be empty"),
        ({"name": "a\x00b"}, "name", "name contains a character that is not allowed (NUL)"),
    ],
)
def test_bad_updates_name_the_field_and_change_nothing(
    admin_stub: AdminStub, clean_db: Engine, fields: dict[str, Any], field: str, message: str
) -> None:
    service_id = _service(admin_stub, "Unchanged")
    request = admin_pb2.UpdateServiceRequest(service_id=service_id, restricted=False)
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.UpdateService(request, metadata=admin_bearer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value)[0][0] == field
    assert err.value.details() == message
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT name, restricted, rate_limit, sms_message_limit FROM services")).one()
    assert tuple(row) == ("Unchanged", True, 3000, 999_999_999)


def test_keys_are_listed_and_revoked(admin_stub: AdminStub, clean_db: Engine) -> None:
    service_id = _service(admin_stub, "Keys")
    made = admin_stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(service_id=service_id, name="live", key_type="normal"), metadata=admin_bearer()
    )
    admin_stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(service_id=service_id, name="team", key_type="team"), metadata=admin_bearer()
    )
    revoked = admin_stub.RevokeApiKey(
        admin_pb2.RevokeApiKeyRequest(service_id=service_id, key_id=made.id), metadata=admin_bearer()
    )
    assert revoked.HasField("revoked_at")
    keys = admin_stub.ListApiKeys(admin_pb2.ListApiKeysRequest(service_id=service_id), metadata=admin_bearer()).keys
    assert [(k.name, k.key_type, k.HasField("revoked_at")) for k in keys] == [
        ("live", "normal", True),
        ("team", "team", False),
    ]
    other = _service(admin_stub, "Not the owner")
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.RevokeApiKey(
            admin_pb2.RevokeApiKeyRequest(service_id=other, key_id=made.id), metadata=admin_bearer()
        )
    assert field_violations(err.value) == [("key_id", "API key not found")]


def test_templates_are_archived_and_listed(admin_stub: AdminStub, clean_db: Engine) -> None:
    service_id = _service(admin_stub, "Templates")
    kept, gone = (
        admin_stub.CreateTemplate(
            admin_pb2.CreateTemplateRequest(service_id=service_id, name=name, template_type="sms", content="Hi"),
            metadata=admin_bearer(),
        ).id
        for name in ("kept", "gone")
    )
    archived = admin_stub.ArchiveTemplate(admin_pb2.ArchiveTemplateRequest(template_id=gone), metadata=admin_bearer())
    assert (archived.name, archived.archived) == ("gone", True)
    current = admin_stub.ListTemplates(
        admin_pb2.ListTemplateRecordsRequest(service_id=service_id), metadata=admin_bearer()
    )
    assert [t.id for t in current.templates] == [kept]
    every = admin_stub.ListTemplates(
        admin_pb2.ListTemplateRecordsRequest(service_id=service_id, include_archived=True), metadata=admin_bearer()
    )
    assert [(t.name, t.archived) for t in every.templates] == [("kept", False), ("gone", True)]


def test_team_members_and_the_guest_list_are_kept_normalised(admin_stub: AdminStub, clean_db: Engine) -> None:
    service_id = _service(admin_stub, "Team")
    ada = admin_stub.AddTeamMember(
        admin_pb2.AddTeamMemberRequest(service_id=service_id, mobile_number="07700 900 111", email_address="Ada@X.org"),
        metadata=admin_bearer(),
    )
    assert (ada.mobile_number, ada.email_address) == ("447700900111", "ada@x.org")
    bob = admin_stub.AddTeamMember(
        admin_pb2.AddTeamMemberRequest(service_id=service_id, email_address="bob@example.com"), metadata=admin_bearer()
    )
    guests = admin_stub.SetGuestList(
        admin_pb2.SetGuestListRequest(
            service_id=service_id, recipients=["+44 7700 900222", "Guest@Example.com", "07700900222"]
        ),
        metadata=admin_bearer(),
    )
    assert list(guests.recipients) == ["447700900222", "guest@example.com"]
    removed = admin_stub.RemoveTeamMember(
        admin_pb2.RemoveTeamMemberRequest(service_id=service_id, member_id=bob.id), metadata=admin_bearer()
    )
    assert removed.email_address == "bob@example.com"
    shown = admin_stub.GetService(admin_pb2.GetServiceRequest(service_id=service_id), metadata=admin_bearer())
    assert [m.id for m in shown.team_members] == [ada.id]
    assert list(shown.guest_list) == ["447700900222", "guest@example.com"]


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        (["07700900111", "not a number"], "recipients[1]"),
        (["nobody@"], "recipients[0]"),
        (["07700900111", "guest@example.com", "12"], "recipients[2]"),
    ],
)
def test_a_bad_guest_list_entry_names_itself_and_changes_nothing(
    admin_stub: AdminStub, clean_db: Engine, entries: list[str], field: str
) -> None:
    service_id = _service(admin_stub, "Guests")
    admin_stub.SetGuestList(
        admin_pb2.SetGuestListRequest(service_id=service_id, recipients=["a@b.com"]), metadata=admin_bearer()
    )
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.SetGuestList(
            admin_pb2.SetGuestListRequest(service_id=service_id, recipients=entries), metadata=admin_bearer()
        )
    assert field_violations(err.value) == [(field, f"{field} is not a mobile number or an email address")]
    shown = admin_stub.GetService(admin_pb2.GetServiceRequest(service_id=service_id), metadata=admin_bearer())
    assert list(shown.guest_list) == ["a@b.com"]


def test_a_team_member_needs_a_way_to_reach_them(admin_stub: AdminStub, clean_db: Engine) -> None:
    service_id = _service(admin_stub, "Nobody")
    with pytest.raises(grpc.RpcError) as err:
        admin_stub.AddTeamMember(admin_pb2.AddTeamMemberRequest(service_id=service_id), metadata=admin_bearer())
    assert field_violations(err.value) == [("mobile_number", "mobile_number or email_address is required")]
    with pytest.raises(grpc.RpcError) as bad:
        admin_stub.AddTeamMember(
            admin_pb2.AddTeamMemberRequest(service_id=service_id, mobile_number="12345"), metadata=admin_bearer()
        )
    assert field_violations(bad.value)[0][0] == "mobile_number"
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM service_team_members")) == 0


def test_the_cli_manages_a_service_through_the_admin_api(
    admin_stub: AdminStub,
    admin_address: str,
    clean_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HERALD_ADMIN_SECRET", ADMIN_SECRET)

    def herald(*argv: str) -> Any:
        assert cli.main([*argv, "--target", admin_address, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    service_id = herald("services", "create", "From the CLI")["id"]
    updated = herald("services", "update", service_id, "--no-restricted", "--rate-limit", "120", "--prefix-sms")
    assert (updated["restricted"], updated["rate_limit"], updated["prefix_sms"]) == (False, "120", True)
    key = herald("keys", "create", service_id, "--name", "ci", "--type", "team")
    assert herald("keys", "revoke", service_id, key["id"])["revoked_at"]
    assert [k["name"] for k in herald("keys", "list", service_id)["keys"]] == ["ci"]
    template = herald("templates", "create", service_id, "--name", "t", "--type", "sms", "--content", "Hi")
    assert herald("templates", "update", template["id"], "--content", "Hello")["version"] == 2
    herald("templates", "archive", template["id"])
    assert herald("templates", "list", service_id) == {"templates": []}
    assert herald("templates", "list", service_id, "--all")["templates"][0]["archived"] is True
    member = herald("team", "add", service_id, "--email", "Ada@Example.com")
    assert herald("guest-list", "set", service_id, "07700900222")["recipients"] == ["447700900222"]
    assert herald("team", "remove", service_id, member["id"])["email_address"] == "ada@example.com"

    assert cli.main(["services", "show", service_id, "--target", admin_address]) == 0
    shown = capsys.readouterr().out
    assert "rate limit (per 60 s)      120" in shown and "447700900222" in shown
    assert cli.main(["guest-list", "set", service_id, "nobody", "--target", admin_address]) == 1
    refused = capsys.readouterr().err
    assert refused.startswith("refused: INVALID_ARGUMENT: recipients[0] is not a mobile number or an email address")
