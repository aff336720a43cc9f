"""Who is calling: a Notify-style API key token checked against the service's stored keys."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from herald import metrics
from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.db.errors import is_transient
from herald.domain import apikeys
from herald.domain.apikeys import AuthError


@dataclass(frozen=True, slots=True)
class Caller:
    service: services_db.ServiceRow
    key: apikeys.KnownKey


@dataclass(frozen=True, slots=True)
class _Known:
    expires: float
    service: services_db.ServiceRow | None
    keys: list[apikeys.KnownKey]


class Authenticator:
    """Each service's row and keys are kept for `cache_seconds` (a revoked key stops working within
    that time): two queries and a decryption per call would cost more than the rest of a send."""

    def __init__(
        self,
        engine: Engine,
        box: SecretBox,
        admin_secret: str = "",
        cache_seconds: float = 0.0,
        stale_seconds: float = 0.0,
    ) -> None:
        self._engine = engine
        self._box = box
        self._admin_secret = admin_secret
        self._cache_seconds = cache_seconds
        self._stale_seconds = stale_seconds
        self._cache: dict[str, _Known] = {}

    def authenticate_admin(self, authorization: str | None) -> None:
        token = apikeys.token_from_header(authorization)
        if not self._admin_secret:
            raise AuthError("Invalid token: admin calls are not enabled")
        apikeys.verify_admin_token(token, self._admin_secret)

    def authenticate(self, authorization: str | None) -> Caller:
        token = apikeys.token_from_header(authorization)
        known = self._known(apikeys.issuer(token))
        if known.service is None:
            raise AuthError("Invalid token: service not found")
        if not known.keys:
            raise AuthError("Invalid token: service has no API keys")
        if not known.service.active:
            raise AuthError("Invalid token: service is archived")
        return Caller(known.service, apikeys.match_key(token, known.keys))

    def _known(self, service_id: str) -> _Known:
        now = time.monotonic()
        known = self._cache.get(service_id)
        if known is not None and known.expires > now:
            return known
        try:
            with self._engine.connect() as conn:
                service = services_db.get_service(conn, service_id)
                rows = services_db.keys_for_auth(conn, service_id) if service is not None else []
        except Exception as exc:
            # The database is away: the last good copy keeps accepted sends flowing, for a bounded time.
            if known is not None and is_transient(exc) and now - known.expires < self._stale_seconds:
                metrics.incr("ingest.stale_served", what="service")
                return known
            raise
        keys = [apikeys.KnownKey(r.id, r.key_type, self._box.decrypt(r.secret_encrypted), r.revoked_at) for r in rows]
        known = _Known(now + self._cache_seconds, service, keys)
        if self._cache_seconds > 0 and service is not None:
            self._cache[service_id] = known  # bounded by the number of services; unknown ids are not kept
        return known
