"""Ingest keeps a service's keys for a few seconds: a revoked key is refused once that time is up."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, insert, text

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.db.models import Service
from herald.domain.apikeys import AuthError, create_token, split_key
from herald.service_layer.admin import Admin
from herald.service_layer.auth import Authenticator
from herald.settings import Settings


def test_a_revoked_key_is_refused_once_the_cache_expires(admin: Admin, clean_db: Engine, settings: Settings) -> None:
    service = admin.create_service("Cached")
    key = split_key(admin.create_api_key(service, "live", "normal"))
    auth = Authenticator(clean_db, SecretBox(settings.secret_key), cache_seconds=0.3)
    header = f"Bearer {create_token(key.secret, key.service_id)}"
    assert auth.authenticate(header).service.id == service
    with clean_db.begin() as conn:
        services_db.revoke_api_key(conn, str(conn.scalar(text("SELECT id FROM api_keys"))))
    assert auth.authenticate(header).key.revoked_at is None  # still the cached view
    time.sleep(0.35)
    with pytest.raises(AuthError) as refused:
        auth.authenticate(header)
    assert refused.value.message == "Invalid token: API key revoked"


def test_unknown_services_are_not_cached(admin: Admin, clean_db: Engine, settings: Settings) -> None:
    auth = Authenticator(clean_db, SecretBox(settings.secret_key), cache_seconds=60)
    service_id = "0b5b7c9e-9c1c-4a51-9d6c-4d1f27d7c1a1"
    secret = "5a1f5b3e-2f0c-4c3a-9a47-1c1b5e0d9f10"
    header = f"Bearer {create_token(secret, service_id)}"
    with pytest.raises(AuthError, match="service not found"):
        auth.authenticate(header)
    with clean_db.begin() as conn:
        conn.execute(insert(Service).values(id=service_id, name="Late"))
        services_db.create_api_key(conn, service_id, "k", "normal", SecretBox(settings.secret_key).encrypt(secret))
    assert auth.authenticate(header).service.name == "Late"
