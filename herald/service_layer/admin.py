"""Setting services up: services, API keys and templates (used by the CLI, the demo and tests)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.domain import apikeys, inputs
from herald.service_layer.errors import InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class DemoSetup:
    service_id: str
    live_key: str
    test_key: str
    research_service_id: str
    research_key: str
    sms_template_id: str
    email_template_id: str
    research_sms_template_id: str
    research_email_template_id: str


class Admin:
    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    def create_service(self, name: str, **flags: object) -> str:
        """Raises services_db.DuplicateServiceName when the name is taken (decided by the constraint)."""
        _check_texts(name=name, **{k: v for k, v in flags.items() if isinstance(v, str)})
        if not name.strip():
            raise InvalidRequest.one("name", "name Can't be empty")
        with self._engine.begin() as conn:
            return services_db.create_service(conn, name.strip(), **flags)

    def create_api_key(self, service_id: str, name: str, key_type: str) -> str:
        """Returns the whole key string; only its encrypted secret is stored."""
        if key_type not in apikeys.KEY_TYPES:
            raise InvalidRequest.one("key_type", f"key_type {key_type} is not one of {list(apikeys.KEY_TYPES)}")
        _check_texts(name=name)
        if not name.strip():
            raise InvalidRequest.one("name", "name Can't be empty")
        secret = apikeys.new_secret()
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            services_db.create_api_key(conn, service_id, name, key_type, self._box.encrypt(secret))
        return apikeys.format_key(name, service_id, secret)

    def create_template(
        self, service_id: str, name: str, template_type: str, content: str, subject: str | None = None
    ) -> str:
        if template_type not in ("sms", "email"):
            raise InvalidRequest.one("template_type", f"template_type {template_type} is not one of [sms, email]")
        if template_type == "email" and not subject:
            raise InvalidRequest.one("subject", "subject is required for an email template")
        _check_texts(name=name, content=content, subject=subject or "")
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            return services_db.create_template(conn, service_id, name, template_type, content, subject)

    def update_template(self, template_id: str, content: str, subject: str | None = None) -> int:
        template_id = _check_uuid("template_id", template_id)
        _check_texts(content=content, subject=subject or "")
        try:
            with self._engine.begin() as conn:
                return services_db.update_template(conn, template_id, content, subject)
        except services_db.NotFound:
            raise NotFound("Template not found") from None

    def demo(self, suffix: str) -> DemoSetup:
        """A live service and a research-mode one, each with keys and an SMS and an email template."""
        live = self.create_service(f"Herald demo {suffix}")
        research = self.create_service(f"Herald research demo {suffix}", research_mode=True)
        sms_body = "Hello ((name)), your code is ((code))."
        email_body = "Dear ((name)),\n\nYour reference is ((code)).\n\nThanks,\nHerald"
        return DemoSetup(
            service_id=live,
            live_key=self.create_api_key(live, "demo-live", "normal"),
            test_key=self.create_api_key(live, "demo-test", "test"),
            research_service_id=research,
            research_key=self.create_api_key(research, "demo-research", "normal"),
            sms_template_id=self.create_template(live, "Code", "sms", sms_body),
            email_template_id=self.create_template(live, "Reference", "email", email_body, "Your reference"),
            research_sms_template_id=self.create_template(research, "Code", "sms", sms_body),
            research_email_template_id=self.create_template(
                research, "Reference", "email", email_body, "Your reference"
            ),
        )


def _check_uuid(field: str, value: str) -> str:
    """The canonical form, the only one PostgreSQL and Herald's caches agree on."""
    try:
        return inputs.canonical_uuid(value, field)
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _check_texts(**fields: str) -> None:
    """Only what the database can hold: no NUL, no lone surrogates."""
    try:
        for field, value in fields.items():
            inputs.check_text(value, field)
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _require_service(conn: Connection, service_id: str) -> str:
    service_id = _check_uuid("service_id", service_id)
    if services_db.get_service(conn, service_id) is None:
        raise NotFound("Service not found")
    return service_id
