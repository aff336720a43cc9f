"""Who is calling: a Notify-style API key token checked against the service's stored keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.domain import apikeys
from herald.domain.apikeys import AuthError


@dataclass(frozen=True, slots=True)
class Caller:
    service: services_db.ServiceRow
    key: apikeys.KnownKey


class Authenticator:
    def __init__(self, engine: Engine, box: SecretBox, admin_secret: str = "") -> None:
        self._engine = engine
        self._box = box
        self._admin_secret = admin_secret

    def authenticate_admin(self, authorization: str | None) -> None:
        token = apikeys.token_from_header(authorization)
        if not self._admin_secret:
            raise AuthError("Invalid token: admin calls are not enabled")
        apikeys.verify_admin_token(token, self._admin_secret)

    def authenticate(self, authorization: str | None) -> Caller:
        token = apikeys.token_from_header(authorization)
        service_id = apikeys.issuer(token)
        with self._engine.connect() as conn:
            service = services_db.get_service(conn, service_id)
            if service is None:
                raise AuthError("Invalid token: service not found")
            rows = services_db.keys_for_auth(conn, service_id)
        if not rows:
            raise AuthError("Invalid token: service has no API keys")
        if not service.active:
            raise AuthError("Invalid token: service is archived")
        keys = [apikeys.KnownKey(r.id, r.key_type, self._box.decrypt(r.secret_encrypted), r.revoked_at) for r in rows]
        return Caller(service, apikeys.match_key(token, keys))
