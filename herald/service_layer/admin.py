"""Setting services up and managing them: services, API keys, templates, team members and the guest list
(the Admin API, the demo and tests)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.domain import apikeys, inputs, limits, recipients
from herald.service_layer import service_callbacks
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest, NotFound
from herald.service_layer.sending import SendCommand, Sender
from herald.settings import Settings
from herald.v1.notifications_pb2 import NotificationType

# What UpdateService may change, and the limits' bounds (minimum, maximum).
SERVICE_FLAGS = ("restricted", "research_mode", "prefix_sms", "can_send_international_sms")
SERVICE_LIMITS = {
    "rate_limit": (1, limits.MAX_RATE_LIMIT),
    "sms_message_limit": (0, limits.MAX_DAILY_LIMIT),
    "email_message_limit": (0, limits.MAX_DAILY_LIMIT),
    "international_sms_message_limit": (0, limits.MAX_DAILY_LIMIT),
}
MAX_GUEST_LIST = 5000
# UpdateService's retention fields, by notification type.
RETENTION_FIELDS = {"sms_data_retention_days": "sms", "email_data_retention_days": "email"}


@dataclass(frozen=True, slots=True)
class ServiceDetails:
    service: services_db.ServiceRow
    team: list[services_db.TeamMemberRow]
    guest_list: list[str]
    retention_days: dict[str, int]  # by notification type, the default filled in


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: str
    key: str  # shown once


@dataclass(frozen=True, slots=True)
class NewCallback:
    callback: services_db.CallbackRow
    signing_secret: str  # shown once


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
    """`allow_http_callbacks`: callback URLs (delivery-status and inbound-SMS) may be http
    (HERALD_ENVIRONMENT development, make run's local mode); otherwise https only."""

    def __init__(self, engine: Engine, box: SecretBox, *, allow_http_callbacks: bool = False) -> None:
        self._engine = engine
        self._box = box
        self._allow_http_callbacks = allow_http_callbacks

    def create_service(self, name: str, service_id: str = "", **flags: object) -> str:
        """Raises services_db.DuplicateServiceName when the name is taken (decided by the constraint).
        `service_id`: a given id (the seed's dao_create_service), else a new one. The Admin API starts a
        service restricted (trial mode); this helper leaves `restricted` to the caller (the demo's and the
        tests' services are live)."""
        _check_texts(name=name, **{k: v for k, v in flags.items() if isinstance(v, str)})
        if not name.strip():
            raise InvalidRequest.one("name", "name Can't be empty")
        given = _check_uuid("id", service_id) if service_id else None
        try:
            with self._engine.begin() as conn:
                return services_db.create_service(conn, name.strip(), given, **flags)
        except services_db.DuplicateServiceId:
            raise InvalidRequest.one("id", f"id {given} is already a service") from None

    def update_service(
        self,
        service_id: str,
        *,
        name: str | None = None,
        flags: dict[str, bool] | None = None,
        limit_values: dict[str, int] | None = None,
        retention: dict[str, int] | None = None,
    ) -> ServiceDetails:
        """Only what is given changes; bad input changes nothing. `flags` among SERVICE_FLAGS, `limit_values`
        among SERVICE_LIMITS, `retention` among RETENTION_FIELDS. A rename to a taken name raises
        services_db.DuplicateServiceName (the constraint decides, also between two concurrent renames)."""
        service_id = _check_uuid("service_id", service_id)
        values: dict[str, object] = {}
        if name is not None:
            _check_texts(name=name)
            if not name.strip():
                raise InvalidRequest.one("name", "name Can't be empty")
            values["name"] = name.strip()
        for field, flag in (flags or {}).items():
            if field not in SERVICE_FLAGS:
                raise InvalidRequest.one(field, f"{field} cannot be changed")
            values[field] = flag
        for field, value in (limit_values or {}).items():
            if field not in SERVICE_LIMITS:
                raise InvalidRequest.one(field, f"{field} cannot be changed")
            problem = limits.check_limit_value(field, value, *SERVICE_LIMITS[field])
            if problem is not None:
                raise InvalidRequest.one(field, problem)
            values[field] = value
        for field, days in (retention or {}).items():
            if field not in RETENTION_FIELDS:
                raise InvalidRequest.one(field, f"{field} cannot be changed")
            problem = limits.check_limit_value(field, days, limits.MIN_RETENTION_DAYS, limits.MAX_RETENTION_DAYS)
            if problem is not None:
                raise InvalidRequest.one(field, problem)
        with self._engine.begin() as conn:
            if values:
                try:
                    services_db.update_service(conn, service_id, **values)
                except services_db.NotFound:
                    raise InvalidRequest.one("service_id", "Service not found") from None
            elif retention:
                _require_service(conn, service_id)
            for field, days in (retention or {}).items():
                services_db.set_data_retention(conn, service_id, RETENTION_FIELDS[field], days)
            return _details(conn, service_id)

    def get_service(self, service_id: str) -> ServiceDetails:
        with self._engine.connect() as conn:
            return _details(conn, _require_service(conn, service_id))

    def create_api_key(self, service_id: str, name: str, key_type: str) -> str:
        """Returns the whole key string; only its encrypted secret is stored."""
        return self.new_api_key(service_id, name, key_type).key

    def new_api_key(self, service_id: str, name: str, key_type: str) -> NewApiKey:
        """The key's id (what revoking takes) and the whole key string, shown once."""
        if key_type not in apikeys.KEY_TYPES:
            raise InvalidRequest.one("key_type", f"key_type {key_type} is not one of {list(apikeys.KEY_TYPES)}")
        _check_texts(name=name)
        if not name.strip():
            raise InvalidRequest.one("name", "name Can't be empty")
        secret = apikeys.new_secret()
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            key_id = services_db.create_api_key(conn, service_id, name, key_type, self._box.encrypt(secret))
        return NewApiKey(key_id, apikeys.format_key(name, service_id, secret))

    def list_api_keys(self, service_id: str) -> list[services_db.ApiKeyInfo]:
        with self._engine.connect() as conn:
            return services_db.list_api_keys(conn, _require_service(conn, service_id))

    def revoke_api_key(self, service_id: str, key_id: str) -> services_db.ApiKeyInfo:
        """Ingest refuses the key once its auth cache expires (HERALD_CACHE_SECONDS)."""
        key_id = _check_uuid("key_id", key_id)
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            try:
                return services_db.revoke_service_api_key(conn, service_id, key_id)
            except services_db.NotFound:
                raise InvalidRequest.one("key_id", "API key not found") from None

    def create_template(
        self,
        service_id: str,
        name: str,
        template_type: str,
        content: str,
        subject: str | None = None,
        template_id: str = "",
    ) -> str:
        if template_type not in ("sms", "email"):
            raise InvalidRequest.one("template_type", f"template_type {template_type} is not one of [sms, email]")
        if template_type == "email" and not subject:
            raise InvalidRequest.one("subject", "subject is required for an email template")
        _check_texts(name=name, content=content, subject=subject or "")
        given = _check_uuid("template_id", template_id) if template_id else None
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            return services_db.create_template(conn, service_id, name, template_type, content, subject, given)

    def update_template(self, template_id: str, content: str, subject: str | None = None) -> int:
        template_id = _check_uuid("template_id", template_id)
        _check_texts(content=content, subject=subject or "")
        try:
            with self._engine.begin() as conn:
                return services_db.update_template(conn, template_id, content, subject)
        except services_db.NotFound:
            raise InvalidRequest.one("template_id", "Template not found") from None

    def archive_template(self, template_id: str) -> services_db.TemplateRow:
        template_id = _check_uuid("template_id", template_id)
        try:
            with self._engine.begin() as conn:
                return services_db.archive_template(conn, template_id)
        except services_db.NotFound:
            raise InvalidRequest.one("template_id", "Template not found") from None

    def list_templates(self, service_id: str, include_archived: bool = False) -> list[services_db.TemplateRow]:
        with self._engine.connect() as conn:
            return services_db.list_templates(conn, _require_service(conn, service_id), include_archived)

    def add_team_member(self, service_id: str, mobile_number: str = "", email_address: str = "") -> str:
        """Numbers are kept normalised and addresses in lower case, as sends are compared with them."""
        if not mobile_number and not email_address:
            raise InvalidRequest.one("mobile_number", "mobile_number or email_address is required")
        number = _team_number("mobile_number", mobile_number) if mobile_number else None
        address = _team_address("email_address", email_address) if email_address else None
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            return services_db.add_team_member(conn, service_id, number, address)

    def remove_team_member(self, service_id: str, member_id: str) -> services_db.TeamMemberRow:
        member_id = _check_uuid("member_id", member_id)
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            try:
                return services_db.remove_team_member(conn, service_id, member_id)
            except services_db.NotFound:
                raise InvalidRequest.one("member_id", "Team member not found") from None

    def set_guest_list(self, service_id: str, entries: list[str]) -> list[str]:
        """Replaces the guest list. Every entry is checked before anything changes."""
        if len(entries) > MAX_GUEST_LIST:
            raise InvalidRequest.one("recipients", f"recipients holds at most {MAX_GUEST_LIST} entries")
        normalised: dict[tuple[str, str], None] = {}  # ordered and without repeats
        for index, entry in enumerate(entries):
            normalised[_guest(f"recipients[{index}]", entry)] = None
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            services_db.set_guest_list(conn, service_id, list(normalised))
            return services_db.guest_list(conn, service_id)

    def set_callback(self, kind: str, service_id: str, url: str, bearer_token: str) -> NewCallback:
        """Registers (or replaces) the service's callback of `kind` (services_db.CALLBACK_KINDS) with a new
        signing secret; bad input changes nothing."""
        service_id = _check_uuid("service_id", service_id)
        url = service_callbacks.check_url(url, allow_http=self._allow_http_callbacks)
        service_callbacks.check_token(bearer_token)
        secret = service_callbacks.new_signing_secret()
        with self._engine.begin() as conn:
            service_id = _require_service(conn, service_id)
            row = services_db.set_callback(
                conn, kind, service_id, url, self._box.encrypt(bearer_token), self._box.encrypt(secret)
            )
        return NewCallback(row, secret)

    def get_callback(self, kind: str, service_id: str) -> services_db.CallbackRow:
        with self._engine.connect() as conn:
            row = services_db.callback(conn, kind, _require_service(conn, service_id))
        if row is None:
            raise NotFound()
        return row

    def remove_callback(self, kind: str, service_id: str) -> services_db.CallbackRow:
        with self._engine.begin() as conn:
            row = services_db.remove_callback(conn, kind, _require_service(conn, service_id))
        if row is None:
            raise NotFound()
        return row

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


# The columns' lengths (String(255)); longer would be refused by the database, after the fact.
_MAX_LENGTHS = {"name": 255, "sms_sender": 255, "email_from": 255}


def _check_texts(**fields: str) -> None:
    """Only what the database can hold: no NUL, no lone surrogates, nothing longer than its column."""
    try:
        for field, value in fields.items():
            inputs.check_text(value, field, max_length=_MAX_LENGTHS.get(field))
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _team_number(field: str, value: str) -> str:
    _check_texts(**{field: value})
    try:
        return recipients.validate_phone_number(value, allow_international=True)
    except recipients.RecipientError as exc:
        raise InvalidRequest.one(field, f"{field} {exc.message}") from None


def _team_address(field: str, value: str) -> str:
    _check_texts(**{field: value})
    try:
        return recipients.validate_email_address(value).lower()
    except recipients.RecipientError as exc:
        raise InvalidRequest.one(field, f"{field} {exc.message}") from None


def _guest(field: str, entry: str) -> tuple[str, str]:
    """('email', address) or ('mobile', number): an entry with an @ is an address."""
    _check_texts(**{field: entry})
    try:
        if "@" in entry:
            return "email", recipients.validate_email_address(entry).lower()
        return "mobile", recipients.validate_phone_number(entry, allow_international=True)
    except recipients.RecipientError:
        raise InvalidRequest.one(field, f"{field} is not a mobile number or an email address") from None


def _details(conn: Connection, service_id: str) -> ServiceDetails:
    service = services_db.get_service(conn, service_id)
    if service is None:
        raise InvalidRequest.one("service_id", "Service not found")
    retention = {kind: limits.DEFAULT_RETENTION_DAYS for kind in RETENTION_FIELDS.values()}
    retention.update(services_db.data_retention(conn, service_id))
    return ServiceDetails(
        service, services_db.team_members(conn, service_id), services_db.guest_list(conn, service_id), retention
    )


def _require_service(conn: Connection, service_id: str) -> str:
    service_id = _check_uuid("service_id", service_id)
    if services_db.get_service(conn, service_id) is None:
        raise InvalidRequest.one("service_id", "Service not found")
    return service_id


@dataclass(frozen=True, slots=True)
class PlatformTemplates:
    """The platform's own service and templates, made by migration 0003 with ids from settings."""

    service_id: str
    sms_code: str
    email_verification: str
    invitation: str
    password_reset: str

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformTemplates:
        return cls(
            settings.notify_service_id,
            settings.sms_code_template_id,
            settings.email_verification_template_id,
            settings.invitation_template_id,
            settings.password_reset_template_id,
        )


# The platform's service sends as a live key would: rendered, limited and tracked like any message.
_PLATFORM_KEY = apikeys.KnownKey(id="", key_type="normal", secret="", revoked_at=None)


class PlatformMessages:
    """Sign-in codes, email verification, invitations and password resets, through Sender.send."""

    def __init__(self, engine: Engine, sender: Sender, templates: PlatformTemplates) -> None:
        self._engine = engine
        self._sender = sender
        self._templates = templates

    def send_verify_code(self, mobile_number: str, code: str) -> str:
        _require_given(mobile_number=mobile_number, code=code)
        return self._send(
            NotificationType.SMS, mobile_number, self._templates.sms_code, {"verify_code": code}, "mobile_number"
        )

    def send_email_verification(self, email_address: str, name: str, url: str) -> str:
        _require_given(email_address=email_address, name=name, url=url)
        personalisation = {"name": name, "url": url}
        return self._send(NotificationType.EMAIL, email_address, self._templates.email_verification, personalisation)

    def send_invitation(self, service_id: str, email_address: str, from_user_name: str, url: str) -> str:
        _require_given(email_address=email_address, from_user_name=from_user_name, url=url)
        with self._engine.connect() as conn:
            service = services_db.get_service(conn, _check_uuid("service_id", service_id))
        if service is None:
            raise InvalidRequest.one("service_id", "Service not found")
        personalisation = {"user_name": from_user_name, "service_name": service.name, "url": url}
        return self._send(NotificationType.EMAIL, email_address, self._templates.invitation, personalisation)

    def send_password_reset(self, email_address: str, user_name: str, url: str) -> str:
        _require_given(email_address=email_address, user_name=user_name, url=url)
        personalisation = {"user_name": user_name, "url": url}
        return self._send(NotificationType.EMAIL, email_address, self._templates.password_reset, personalisation)

    def _send(
        self,
        notification_type: NotificationType.ValueType,
        to: str,
        template_id: str,
        personalisation: dict[str, str],
        recipient_field: str = "email_address",
    ) -> str:
        with self._engine.connect() as conn:
            service = services_db.get_service(conn, self._templates.service_id)
        if service is None:
            raise NotFound("Herald's own service is missing: run `herald db upgrade`")
        command = SendCommand(notification_type, to, template_id, personalisation)
        try:
            return self._sender.send(Caller(service, _PLATFORM_KEY), command).id
        except InvalidRequest as exc:
            # The request names the recipient `mobile_number`; Sender's message names `phone_number`.
            raise InvalidRequest(
                [(recipient_field if f == "phone_number" else f, m) for f, m in exc.violations]
            ) from None


def _require_given(**fields: str) -> None:
    for field, value in fields.items():
        if not value.strip():
            raise InvalidRequest.one(field, f"{field} is required")
