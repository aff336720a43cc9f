"""The ingest servicer on pytest-grpc's real server, with the real database and broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.domain.apikeys import create_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import ingest_pb2, ingest_pb2_grpc
from herald.v1.ingest_pb2_grpc import IngestStub
from services.ingest.servicer import IngestServicer
from tests.support import bearer, take_queued

INTERNATIONAL = "Cannot send to international mobile numbers"
DOCS = "https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header"


@pytest.fixture
def setup(admin: Admin, clean_broker: str) -> dict[str, str]:
    service = admin.create_service("Ingest servicer test", prefix_sms=True)
    other = admin.create_service("Someone else")
    return {
        "service": service,
        "key": admin.create_api_key(service, "live", "normal"),
        "sms": admin.create_template(service, "sms", "sms", "Hi ((name))"),
        "email": admin.create_template(service, "email", "email", "Dear ((name))", "Hello ((name))"),
        "other_sms": admin.create_template(other, "sms", "sms", "Not yours"),
    }


def _sms(to: str = "07700 900 123", template: str = "", **personalisation: str) -> ingest_pb2.SendSmsRequest:
    request = ingest_pb2.SendSmsRequest(phone_number=to, template_id=template)
    request.personalisation.update(personalisation)
    return request


def test_send_sms_is_queued_with_rendered_body(
    ingest_stub: IngestStub, setup: dict[str, str], settings: Settings
) -> None:
    answer = ingest_stub.SendSms(_sms(template=setup["sms"], name="Ada"), metadata=bearer(setup["key"]))
    assert answer.body == "Hi Ada"
    assert answer.template.version == 1
    [message] = take_queued(settings.broker_url, "db-sms")
    assert message.id == answer.id
    assert message.to == "447700900123"
    assert message.body == "Ingest servicer test: Hi Ada"  # the prefix is billed, not returned
    assert message.service_id == setup["service"]


def test_send_email_is_queued(ingest_stub: IngestStub, setup: dict[str, str], settings: Settings) -> None:
    request = ingest_pb2.SendEmailRequest(email_address=" ada@example.com ", template_id=setup["email"])
    request.personalisation.update({"name": "Ada"})
    answer = ingest_stub.SendEmail(request, metadata=bearer(setup["key"]))
    assert answer.subject == "Hello Ada"
    assert answer.from_email.endswith("@example.org")
    [message] = take_queued(settings.broker_url, "db-email")
    assert message.to == "ada@example.com"


@pytest.mark.parametrize(
    ("metadata", "code", "details"),
    [
        ([], grpc.StatusCode.UNAUTHENTICATED, "Unauthorized: authentication token must be provided"),
        ([("authorization", "Basic abc")], grpc.StatusCode.UNAUTHENTICATED,
         "Unauthorized: authentication bearer scheme must be used"),
        ([("authorization", "Bearer not-a-jwt")], grpc.StatusCode.PERMISSION_DENIED,
         f"Invalid token: make sure your API token matches the example at {DOCS}"),
    ],
)  # fmt: skip
def test_bad_authorization_header(
    ingest_stub: IngestStub,
    setup: dict[str, str],
    metadata: list[tuple[str, str]],
    code: grpc.StatusCode,
    details: str,
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.SendSms(_sms(template=setup["sms"], name="x"), metadata=metadata)
    assert (err.value.code(), err.value.details()) == (code, details)


def test_token_checks_in_notify_order(ingest_stub: IngestStub, setup: dict[str, str], admin: Admin) -> None:
    key = split_key(setup["key"])
    cases = {
        "Invalid token: service id is not the right data type": create_token(key.secret, "not-a-uuid"),
        "Invalid token: service not found": create_token(key.secret, str(uuid.uuid4())),
        "Error: Your system clock must be accurate to within 30 seconds": create_token(
            key.secret, key.service_id, time.time() - 60
        ),
        "Invalid token: API key not found": create_token(str(uuid.uuid4()), key.service_id),
    }
    keyless = admin.create_service("No keys yet")
    cases["Invalid token: service has no API keys"] = create_token(key.secret, keyless)
    for expected, token in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            ingest_stub.SendSms(_sms(template=setup["sms"], name="x"), metadata=[("authorization", f"Bearer {token}")])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == expected


def test_revoked_key(ingest_stub: IngestStub, setup: dict[str, str], clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        key_id = conn.scalar(text("SELECT id FROM api_keys WHERE service_id = :s"), {"s": setup["service"]})
        services_db.revoke_api_key(conn, str(key_id))
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.SendSms(_sms(template=setup["sms"], name="x"), metadata=bearer(setup["key"]))
    assert err.value.details() == "Invalid token: API key revoked"


@pytest.mark.parametrize(
    ("request_kwargs", "field", "message"),
    [
        ({"template": "other_sms"}, "template_id", "Template not found"),
        ({"template": "unknown"}, "template_id", "Template not found"),
        ({"template": "not-a-uuid"}, "template_id", "template_id is not a valid UUID"),
        ({"template": "email"}, "template_id", "email template is not suitable for sms notification"),
        ({"template": "sms", "to": "0999"}, "phone_number", "phone_number Not enough digits"),
        ({"template": "sms", "to": "020 7946 0000"}, "phone_number", "phone_number Not a UK mobile number"),
        ({"template": "sms", "to": "+1 202 555 0143"}, "phone_number", INTERNATIONAL),
        ({"template": "sms", "name": None}, "personalisation", "Missing personalisation: name"),
    ],
)  # fmt: skip
def test_bad_send_changes_nothing(
    ingest_stub: IngestStub,
    setup: dict[str, str],
    settings: Settings,
    request_kwargs: dict[str, Any],
    field: str,
    message: str,
) -> None:
    template = {"unknown": str(uuid.uuid4()), "not-a-uuid": "not-a-uuid"}.get(request_kwargs["template"])
    request = _sms(to=request_kwargs.get("to", "07700900123"), template=template or setup[request_kwargs["template"]])
    if request_kwargs.get("name", "x") is not None:
        request.personalisation.update({"name": "x"})
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.SendSms(request, metadata=bearer(setup["key"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == message
    assert field_violations(err.value) == [(field, message)]
    assert take_queued(settings.broker_url, "db-sms") == []


def test_get_notification_sees_only_own_service(
    ingest_stub: IngestStub, setup: dict[str, str], admin: Admin, clean_db: Engine
) -> None:
    other = admin.create_service("Reader")
    other_key = admin.create_api_key(other, "live", "normal")
    notification_id = str(uuid.uuid4())
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at)'
                " VALUES (:id, :s, :t, 1, 'normal', 'sms', '447700900123', 'Hi', 'created', 1, now())"
            ),
            {"id": notification_id, "s": setup["service"], "t": setup["sms"]},
        )
    mine = ingest_stub.GetNotification(
        ingest_pb2.GetNotificationRequest(id=notification_id), metadata=bearer(setup["key"])
    )
    assert (mine.status, mine.phone_number, mine.template.version) == ("created", "447700900123", 1)
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.GetNotification(ingest_pb2.GetNotificationRequest(id=notification_id), metadata=bearer(other_key))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.NOT_FOUND, "No result found")


@pytest.mark.parametrize(
    ("database", "code", "details"),
    [
        # A database without Herald's tables: a fault of Herald's own, answered without a stack trace.
        ("127.0.0.1:5432/postgres", grpc.StatusCode.INTERNAL, "Internal server error"),
        # A database that is away: not the caller's fault and not a bug; try again later.
        ("127.0.0.1:1/herald", grpc.StatusCode.UNAVAILABLE, None),
    ],
)
def test_faults_are_internal_or_unavailable_without_stack_trace(
    setup: dict[str, str], database: str, code: grpc.StatusCode, details: str | None
) -> None:
    from herald.db.engine import make_engine
    from herald.grpcsrv.server import Server, ServiceBinding

    broken = make_engine(f"postgresql+psycopg2://postgres@{database}")
    servicer = IngestServicer(
        Authenticator(broken, SecretBox("x")), Sender(broken, lambda *_: None, "example.org"), broken
    )
    server = Server("127.0.0.1:0", [ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, "x")])
    server.start()
    try:
        address = f"127.0.0.1:{server.port}"
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
            ingest_pb2_grpc.IngestStub(channel).SendSms(
                _sms(template=setup["sms"], name="x"), metadata=bearer(setup["key"])
            )
        assert err.value.code() == code
        assert "Traceback" not in (err.value.details() or "")
        if details is not None:
            assert err.value.details() == details
    finally:
        server.stop(0)
        broken.dispose()


def test_preview_renders_without_sending(ingest_stub: IngestStub, setup: dict[str, str], settings: Settings) -> None:
    request = ingest_pb2.PreviewTemplateRequest(template_id=setup["sms"])
    request.personalisation.update({"name": "Ada"})
    preview = ingest_stub.PreviewTemplate(request, metadata=bearer(setup["key"]))
    assert (preview.body, preview.version, preview.fragment_count) == ("Hi Ada", 1, 1)
    email = ingest_pb2.PreviewTemplateRequest(template_id=setup["email"])
    email.personalisation.update({"name": "<b>Ada</b> https://example.com"})
    shown = ingest_stub.PreviewTemplate(email, metadata=bearer(setup["key"]))
    assert shown.subject == "Hello <b>Ada</b> https://example.com"
    assert 'href="https://example.com"' in shown.html
    assert "&lt;b&gt;Ada&lt;/b&gt;" in shown.html  # personalisation is escaped, never markup
    assert take_queued(settings.broker_url, "db-sms") == [] and take_queued(settings.broker_url, "db-email") == []


def test_preview_errors(ingest_stub: IngestStub, setup: dict[str, str]) -> None:
    missing = ingest_pb2.PreviewTemplateRequest(template_id=setup["sms"])
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.PreviewTemplate(missing, metadata=bearer(setup["key"]))
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing personalisation: name",
    )
    other = ingest_pb2.PreviewTemplateRequest(template_id=setup["other_sms"])
    with pytest.raises(grpc.RpcError) as err:
        ingest_stub.PreviewTemplate(other, metadata=bearer(setup["key"]))
    assert err.value.details() == "Template not found"


def test_a_long_sms_bills_the_prefix(
    ingest_stub: IngestStub, admin: Admin, settings: Settings, clean_broker: str
) -> None:
    service = admin.create_service("Council", prefix_sms=True)
    key = admin.create_api_key(service, "live", "normal")
    template = admin.create_template(service, "long", "sms", "x" * 153)  # 160 with "Council: "
    answer = ingest_stub.SendSms(_sms(template=template), metadata=bearer(key))
    [message] = take_queued(settings.broker_url, "db-sms")
    assert answer.body == "x" * 153
    assert (message.body, message.billable_units) == ("Council: " + "x" * 153, 2)


def test_edits_make_versions_and_notifications_keep_theirs(
    ingest_stub: IngestStub, setup: dict[str, str], admin: Admin, settings: Settings
) -> None:
    first = ingest_stub.SendSms(_sms(template=setup["sms"], name="Ada"), metadata=bearer(setup["key"]))
    assert admin.update_template(setup["sms"], "Hello again ((name))") == 2
    second = ingest_stub.SendSms(_sms(template=setup["sms"], name="Ada"), metadata=bearer(setup["key"]))
    assert (first.template.version, first.body) == (1, "Hi Ada")
    assert (second.template.version, second.body) == (2, "Hello again Ada")
    assert [m.template_version for m in take_queued(settings.broker_url, "db-sms")] == [1, 2]
    old = ingest_pb2.PreviewTemplateRequest(template_id=setup["sms"], version=1)
    old.personalisation.update({"name": "Ada"})
    assert ingest_stub.PreviewTemplate(old, metadata=bearer(setup["key"])).body == "Hi Ada"


def test_international_numbers_only_for_services_that_may(
    ingest_stub: IngestStub, admin: Admin, settings: Settings, clean_broker: str
) -> None:
    service = admin.create_service("Abroad", can_send_international_sms=True)
    key = admin.create_api_key(service, "live", "normal")
    template = admin.create_template(service, "t", "sms", "Hi")
    ingest_stub.SendSms(_sms(to="+1 (202) 555-0143", template=template), metadata=bearer(key))
    [message] = take_queued(settings.broker_url, "db-sms")
    assert message.to == "12025550143"


def test_email_reports_sanitised_content(ingest_stub: IngestStub, setup: dict[str, str]) -> None:
    request = ingest_pb2.SendEmailRequest(
        email_address="ada@example.com", template_id=setup["email"], sanitise_content_for=["name"]
    )
    request.personalisation.update({"name": "a-b"})
    answer = ingest_stub.SendEmail(request, metadata=bearer(setup["key"]))
    assert answer.body == "Dear a\\-b"
    assert answer.sanitised_content["name"].unsanitised == "a-b"
    assert answer.sanitised_content["name"].sanitised == "a\\-b"
