"""The Admin servicer on pytest-grpc's real server: services, keys and templates, against the real database."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, text

from herald.crypto import SecretBox
from herald.domain.apikeys import create_admin_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.grpcsrv.server import ObservingInterceptor
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.settings import Settings
from herald.v1 import admin_pb2, admin_pb2_grpc
from services.ingest.admin_servicer import AdminServicer

ADMIN_SECRET = "admin-test-secret-long-enough-for-hs256"
grpc_max_workers = 4  # the race test needs two calls in flight at once


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Any:
    return admin_pb2_grpc.add_AdminServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(engine: Engine, settings: Settings) -> AdminServicer:
    box = SecretBox(settings.secret_key)
    return AdminServicer(Authenticator(engine, box, ADMIN_SECRET), Admin(engine, box))


@pytest.fixture(scope="module")
def grpc_interceptors() -> list[grpc.ServerInterceptor]:
    return [ObservingInterceptor()]


@pytest.fixture(scope="module")
def grpc_stub_cls() -> Any:
    return admin_pb2_grpc.AdminStub


def _admin() -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {create_admin_token(ADMIN_SECRET)}")]


def test_two_concurrent_creates_of_one_name_give_one_row(grpc_stub: Any, clean_db: Engine) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            grpc_stub.CreateService(admin_pb2.CreateServiceRequest(name="Race"), metadata=_admin())
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


def test_service_key_and_template_versions(grpc_stub: Any, clean_db: Engine) -> None:
    service = grpc_stub.CreateService(
        admin_pb2.CreateServiceRequest(name="Setup", research_mode=True), metadata=_admin()
    )
    key = grpc_stub.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(service_id=service.id, name="live", key_type="normal"), metadata=_admin()
    ).key
    assert split_key(key).service_id == service.id
    with clean_db.connect() as conn:
        stored = conn.scalar(text("SELECT secret_encrypted FROM api_keys"))
    assert split_key(key).secret not in stored  # encrypted at rest
    template = grpc_stub.CreateTemplate(
        admin_pb2.CreateTemplateRequest(service_id=service.id, name="t", template_type="sms", content="v1 ((x))"),
        metadata=_admin(),
    )
    edited = grpc_stub.UpdateTemplate(
        admin_pb2.UpdateTemplateRequest(template_id=template.id, content="v2 ((x))"), metadata=_admin()
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
            "NOT_FOUND",
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
            "NOT_FOUND",
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
    grpc_stub: Any, clean_db: Engine, call: str, request_message: Any, code: str, details: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(grpc_stub, call)(request_message, metadata=_admin())
    assert (err.value.code().name, err.value.details()) == (code, details)
    if code == "INVALID_ARGUMENT":
        assert field_violations(err.value)
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM services")) == 0
        assert conn.scalar(text("SELECT count(*) FROM api_keys")) == 0


def test_admin_calls_need_the_admin_token(grpc_stub: Any, clean_db: Engine) -> None:
    wrong = [("authorization", f"Bearer {create_admin_token('not-the-secret-but-just-as-long-as-it')}")]
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.CreateService(admin_pb2.CreateServiceRequest(name="x"), metadata=wrong)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as missing:
        grpc_stub.CreateService(admin_pb2.CreateServiceRequest(name="x"))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with clean_db.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM services")) == 0
