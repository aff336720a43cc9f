"""SQL for services, their API keys and templates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, bindparam, delete, func, insert, literal, or_, select, text, union_all, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import CompoundSelect

from herald.db.models import (
    ApiKey,
    Notification,
    Service,
    ServiceCallbackApi,
    ServiceDataRetention,
    ServiceGuestListEntry,
    ServiceTeamMember,
    Template,
    TemplateHistory,
)
from herald.settings import Settings

# Notify accepts tokens from keys revoked in the last 7 days, to say "revoked" rather than "not found".
REVOKED_KEYS_KEPT = timedelta(days=7)


class DuplicateServiceName(Exception):
    pass


class NotFound(Exception):
    pass


class DuplicateServiceId(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ServiceRow:
    id: str
    name: str
    active: bool
    research_mode: bool
    restricted: bool
    prefix_sms: bool
    can_send_international_sms: bool
    sms_sender: str
    email_from: str
    rate_limit: int
    sms_message_limit: int
    email_message_limit: int
    international_sms_message_limit: int


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    name: str
    key_type: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TeamMemberRow:
    id: str
    mobile_number: str | None
    email_address: str | None


@dataclass(frozen=True, slots=True)
class AllowedRecipients:
    """A restricted service's (or a team key's) recipients: normalised numbers and lower-case addresses."""

    numbers: frozenset[str]
    emails: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    key_type: str
    secret_encrypted: str
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: str
    service_id: str
    name: str
    template_type: str
    subject: str | None
    content: str
    version: int
    archived: bool


_SERVICE_COLUMNS = (
    Service.id,
    Service.name,
    Service.active,
    Service.research_mode,
    Service.restricted,
    Service.prefix_sms,
    Service.can_send_international_sms,
    Service.sms_sender,
    Service.email_from,
    Service.rate_limit,
    Service.sms_message_limit,
    Service.email_message_limit,
    Service.international_sms_message_limit,
)


def create_service(conn: Connection, name: str, service_id: str | None = None, **flags: object) -> str:
    """No pre-check for the name: the unique constraint decides, so a race gives exactly one row (seed).
    A given id is taken as it is (the seed's dao_create_service change); a taken id is an IntegrityError."""
    new_id = uuid.UUID(service_id) if service_id else uuid.uuid4()
    try:
        with conn.begin_nested():
            conn.execute(insert(Service).values(id=new_id, name=name, **flags))
    except IntegrityError as exc:
        if "uq_services_name" in str(exc.orig):
            raise DuplicateServiceName(name) from None
        if "pk_services" in str(exc.orig):
            raise DuplicateServiceId(str(new_id)) from None
        raise
    return str(new_id)


def update_service(conn: Connection, service_id: str, **changes: object) -> ServiceRow:
    """A rename races like a create: the unique constraint decides, the loser gets DuplicateServiceName."""
    try:
        with conn.begin_nested():
            row = conn.execute(
                update(Service).where(Service.id == service_id).values(**changes).returning(*_SERVICE_COLUMNS)
            ).one_or_none()
    except IntegrityError as exc:
        if "uq_services_name" in str(exc.orig):
            raise DuplicateServiceName(changes.get("name")) from None
        raise
    if row is None:
        raise NotFound(service_id)
    return _service_row(row)


# Hot-path statements are built once: building SQLAlchemy expressions per call costs more CPU than the
# round trip to PostgreSQL (bench: CPU per stage).
_SERVICE_BY_ID = select(*_SERVICE_COLUMNS).where(Service.id == bindparam("service_id"))
_KEYS_FOR_AUTH = select(ApiKey.id, ApiKey.key_type, ApiKey.secret_encrypted, ApiKey.revoked_at).where(
    ApiKey.service_id == bindparam("service_id"),
    or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > bindparam("cutoff")),
)
_TEMPLATE_COLUMNS = (
    Template.id,
    Template.service_id,
    Template.name,
    Template.template_type,
    Template.subject,
    Template.content,
    Template.version,
    Template.archived,
)
_CURRENT_TEMPLATE = select(*_TEMPLATE_COLUMNS).where(Template.id == bindparam("template_id"))
_TEMPLATE_VERSION = select(
    TemplateHistory.id,
    TemplateHistory.service_id,
    TemplateHistory.name,
    TemplateHistory.template_type,
    TemplateHistory.subject,
    TemplateHistory.content,
    TemplateHistory.version,
    literal(False),  # a past version is shown even if the template was archived since
).where(TemplateHistory.id == bindparam("template_id"), TemplateHistory.version == bindparam("version"))


def get_service(conn: Connection, service_id: str) -> ServiceRow | None:
    row = conn.execute(_SERVICE_BY_ID, {"service_id": service_id}).one_or_none()
    if row is None:
        return None
    return _service_row(row)


def _service_row(row: Any) -> ServiceRow:
    return ServiceRow(str(row[0]), *row[1:])


def _template_row(row: Any) -> TemplateRow:
    return TemplateRow(str(row[0]), str(row[1]), *row[2:])


def create_api_key(conn: Connection, service_id: str, name: str, key_type: str, secret_encrypted: str) -> str:
    key_id = uuid.uuid4()
    conn.execute(
        insert(ApiKey).values(
            id=key_id, service_id=service_id, name=name, key_type=key_type, secret_encrypted=secret_encrypted
        )
    )
    return str(key_id)


def revoke_api_key(conn: Connection, key_id: str) -> None:
    conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC)))


_API_KEY_INFO = (ApiKey.id, ApiKey.name, ApiKey.key_type, ApiKey.created_at, ApiKey.revoked_at)


def revoke_service_api_key(conn: Connection, service_id: str, key_id: str) -> ApiKeyInfo:
    """Revoking twice keeps the first time (Notify's tokens say "revoked" for 7 days from it)."""
    row = conn.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.service_id == service_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, func.now()))
        .returning(*_API_KEY_INFO)
    ).one_or_none()
    if row is None:
        raise NotFound(key_id)
    return ApiKeyInfo(str(row.id), *row[1:])


def list_api_keys(conn: Connection, service_id: str) -> list[ApiKeyInfo]:
    rows = conn.execute(
        select(*_API_KEY_INFO).where(ApiKey.service_id == service_id).order_by(ApiKey.created_at, ApiKey.id)
    ).all()
    return [ApiKeyInfo(str(r.id), *r[1:]) for r in rows]


def keys_for_auth(conn: Connection, service_id: str) -> list[KeyRow]:
    """Live keys and those revoked within the last 7 days."""
    cutoff = datetime.now(UTC) - REVOKED_KEYS_KEPT
    rows = conn.execute(_KEYS_FOR_AUTH, {"service_id": service_id, "cutoff": cutoff}).all()
    return [KeyRow(str(r.id), r.key_type, r.secret_encrypted, r.revoked_at) for r in rows]


def create_template(
    conn: Connection,
    service_id: str,
    name: str,
    template_type: str,
    content: str,
    subject: str | None = None,
    template_id: str | None = None,
) -> str:
    values = {
        "id": uuid.UUID(template_id) if template_id else uuid.uuid4(),
        "service_id": service_id,
        "name": name,
        "template_type": template_type,
        "subject": subject,
        "content": content,
    }
    conn.execute(insert(Template).values(version=1, **values))
    conn.execute(insert(TemplateHistory).values(version=1, **values))
    return str(values["id"])


def update_template(conn: Connection, template_id: str, content: str, subject: str | None = None) -> int:
    """Every edit makes a new version; notifications keep pointing at the version they used."""
    row = conn.execute(
        update(Template)
        .where(Template.id == template_id)
        .values(content=content, subject=subject, version=Template.version + 1, updated_at=datetime.now(UTC))
        .returning(Template.version, Template.service_id, Template.name, Template.template_type)
    ).one_or_none()
    if row is None:
        raise NotFound(template_id)
    conn.execute(
        insert(TemplateHistory).values(
            id=template_id,
            version=row.version,
            service_id=row.service_id,
            name=row.name,
            template_type=row.template_type,
            subject=subject,
            content=content,
        )
    )
    return int(row.version)


def get_template(conn: Connection, template_id: str, version: int | None = None) -> TemplateRow | None:
    if version is None:
        row = conn.execute(_CURRENT_TEMPLATE, {"template_id": template_id}).one_or_none()
    else:
        row = conn.execute(_TEMPLATE_VERSION, {"template_id": template_id, "version": version}).one_or_none()
    if row is None:
        return None
    return TemplateRow(str(row[0]), str(row[1]), *row[2:])


def archive_template(conn: Connection, template_id: str) -> TemplateRow:
    row = conn.execute(
        update(Template)
        .where(Template.id == template_id)
        .values(archived=True, updated_at=datetime.now(UTC))
        .returning(*_TEMPLATE_COLUMNS)
    ).one_or_none()
    if row is None:
        raise NotFound(template_id)
    return _template_row(row)


def list_templates(conn: Connection, service_id: str, include_archived: bool = False) -> list[TemplateRow]:
    query = select(*_TEMPLATE_COLUMNS).where(Template.service_id == service_id)
    if not include_archived:
        query = query.where(Template.archived.is_(False))
    rows = conn.execute(query.order_by(Template.created_at, Template.id)).all()
    return [_template_row(r) for r in rows]


def add_team_member(conn: Connection, service_id: str, mobile_number: str | None, email_address: str | None) -> str:
    member_id = uuid.uuid4()
    conn.execute(
        insert(ServiceTeamMember).values(
            id=member_id, service_id=service_id, mobile_number=mobile_number, email_address=email_address
        )
    )
    return str(member_id)


def remove_team_member(conn: Connection, service_id: str, member_id: str) -> TeamMemberRow:
    row = conn.execute(
        delete(ServiceTeamMember)
        .where(ServiceTeamMember.id == member_id, ServiceTeamMember.service_id == service_id)
        .returning(ServiceTeamMember.id, ServiceTeamMember.mobile_number, ServiceTeamMember.email_address)
    ).one_or_none()
    if row is None:
        raise NotFound(member_id)
    return TeamMemberRow(str(row.id), row.mobile_number, row.email_address)


def team_members(conn: Connection, service_id: str) -> list[TeamMemberRow]:
    rows = conn.execute(
        select(ServiceTeamMember.id, ServiceTeamMember.mobile_number, ServiceTeamMember.email_address)
        .where(ServiceTeamMember.service_id == service_id)
        .order_by(ServiceTeamMember.created_at, ServiceTeamMember.id)
    ).all()
    return [TeamMemberRow(str(r.id), r.mobile_number, r.email_address) for r in rows]


def set_guest_list(conn: Connection, service_id: str, entries: list[tuple[str, str]]) -> None:
    """Replaces the list: (recipient_type, normalised recipient) pairs, 'mobile' or 'email'."""
    conn.execute(delete(ServiceGuestListEntry).where(ServiceGuestListEntry.service_id == service_id))
    if entries:
        conn.execute(
            insert(ServiceGuestListEntry),
            [
                {"id": uuid.uuid4(), "service_id": service_id, "recipient_type": kind, "recipient": recipient}
                for kind, recipient in entries
            ],
        )


def guest_list(conn: Connection, service_id: str) -> list[str]:
    rows = conn.execute(
        select(ServiceGuestListEntry.recipient)
        .where(ServiceGuestListEntry.service_id == service_id)
        .order_by(ServiceGuestListEntry.recipient)
    ).all()
    return [r.recipient for r in rows]


_ALLOWED_RECIPIENTS: CompoundSelect[str, str] = union_all(
    select(literal("mobile"), ServiceTeamMember.mobile_number).where(
        ServiceTeamMember.service_id == bindparam("service_id"), ServiceTeamMember.mobile_number.is_not(None)
    ),
    select(literal("email"), ServiceTeamMember.email_address).where(
        ServiceTeamMember.service_id == bindparam("service_id"), ServiceTeamMember.email_address.is_not(None)
    ),
    select(ServiceGuestListEntry.recipient_type, ServiceGuestListEntry.recipient).where(
        ServiceGuestListEntry.service_id == bindparam("service_id")
    ),
)


def allowed_recipients(conn: Connection, service_id: str) -> AllowedRecipients:
    """Team members' numbers and addresses and the guest list, in one query."""
    rows = conn.execute(_ALLOWED_RECIPIENTS, {"service_id": service_id}).all()
    return AllowedRecipients(
        numbers=frozenset(recipient for kind, recipient in rows if kind == "mobile"),
        emails=frozenset(recipient for kind, recipient in rows if kind == "email"),
    )


# The platform's own messages (Notify's wording, Herald's name). Ids come from settings, as the seed's
# config holds them, so that every environment's ingest finds them.
PLATFORM_SERVICE_NAME = "Herald"
PLATFORM_TEMPLATES = (
    ("sms_code_template_id", "Herald sign-in code", "sms", None, "((verify_code)) is your Herald authentication code"),
    (
        "email_verification_template_id",
        "Herald email verification",
        "email",
        "Confirm Herald registration",
        "Hi ((name)),\n\nTo complete your registration for Herald please click the link below\n\n((url))",
    ),
    (
        "invitation_template_id",
        "Herald invitation",
        "email",
        "((user_name)) has invited you to collaborate on ((service_name)) on Herald",
        "((user_name)) has invited you to collaborate on ((service_name)) on Herald.\n\n"
        "Click this link to create an account on Herald:\n((url))\n\n"
        "This invitation will stop working at midnight tomorrow. This is to keep ((service_name)) secure.",
    ),
    (
        "password_reset_template_id",
        "Herald password reset",
        "email",
        "Reset your Herald password",
        "Hi ((user_name)),\n\nWe received a request to reset your password on Herald.\n\n"
        "If you didn’t request this email, you can ignore it – your password has not been changed.\n\n"
        "To reset your password, click this link:\n\n((url))",
    ),
)


def create_platform_service(conn: Connection, settings: Settings) -> None:
    """Live (not restricted), so that it can send sign-in codes to anyone. Plain SQL, so that migration 0003
    keeps working whatever columns later migrations add. Existing rows are left as they are."""
    conn.execute(
        text(
            "INSERT INTO services (id, name, active, research_mode, restricted, prefix_sms,"
            " can_send_international_sms, sms_sender, email_from)"
            " VALUES (:id, :name, true, false, false, false, true, 'Herald', 'herald') ON CONFLICT DO NOTHING"
        ),
        {"id": settings.notify_service_id, "name": PLATFORM_SERVICE_NAME},
    )
    if conn.execute(text("SELECT 1 FROM services WHERE id = :id"), {"id": settings.notify_service_id}).first() is None:
        raise RuntimeError(f"Another service is named {PLATFORM_SERVICE_NAME!r}: rename it, then upgrade again")
    for setting, name, template_type, subject, content in PLATFORM_TEMPLATES:
        values = {
            "id": getattr(settings, setting),
            "service_id": settings.notify_service_id,
            "name": name,
            "template_type": template_type,
            "subject": subject,
            "content": content,
        }
        conn.execute(
            text(
                "INSERT INTO templates (id, service_id, name, template_type, subject, content, version, archived)"
                " VALUES (:id, :service_id, :name, :template_type, :subject, :content, 1, false)"
                " ON CONFLICT DO NOTHING"
            ),
            values,
        )
        conn.execute(
            text(
                "INSERT INTO templates_history (id, service_id, name, template_type, subject, content, version)"
                " VALUES (:id, :service_id, :name, :template_type, :subject, :content, 1) ON CONFLICT DO NOTHING"
            ),
            values,
        )


def set_data_retention(conn: Connection, service_id: str, notification_type: str, days: int) -> None:
    statement = pg_insert(ServiceDataRetention).values(
        id=uuid.uuid4(), service_id=service_id, notification_type=notification_type, days_of_retention=days
    )
    conn.execute(
        statement.on_conflict_do_update(
            constraint="uq_service_data_retention_service_type",
            set_={"days_of_retention": days, "updated_at": func.now()},
        )
    )


def data_retention(conn: Connection, service_id: str) -> dict[str, int]:
    """The service's own retention by notification type; a type not in it keeps the default."""
    rows = conn.execute(
        select(ServiceDataRetention.notification_type, ServiceDataRetention.days_of_retention).where(
            ServiceDataRetention.service_id == service_id
        )
    ).all()
    return {r.notification_type: r.days_of_retention for r in rows}


# --- Service callbacks: one of each kind per service.

DELIVERY_STATUS: Final = "delivery_status"  # Notify's callback_type
INBOUND_SMS: Final = "inbound_sms"
CALLBACK_KINDS: Final = (DELIVERY_STATUS, INBOUND_SMS)


@dataclass(frozen=True, slots=True)
class CallbackRow:
    service_id: str
    url: str
    bearer_token_encrypted: str
    signing_secret_encrypted: str
    updated_at: datetime


_CALLBACK_COLUMNS = (
    ServiceCallbackApi.service_id,
    ServiceCallbackApi.url,
    ServiceCallbackApi.bearer_token_encrypted,
    ServiceCallbackApi.signing_secret_encrypted,
    ServiceCallbackApi.updated_at,
)


def _callback_row(row: Any) -> CallbackRow:
    return CallbackRow(
        str(row.service_id), row.url, row.bearer_token_encrypted, row.signing_secret_encrypted, row.updated_at
    )


def _kind_of(service_id: str, kind: str) -> Any:
    return (ServiceCallbackApi.service_id == service_id) & (ServiceCallbackApi.callback_type == kind)


def set_callback(
    conn: Connection,
    kind: str,
    service_id: str,
    url: str,
    bearer_token_encrypted: str,
    signing_secret_encrypted: str,
) -> CallbackRow:
    values = {
        "url": url,
        "bearer_token_encrypted": bearer_token_encrypted,
        "signing_secret_encrypted": signing_secret_encrypted,
    }
    statement = pg_insert(ServiceCallbackApi).values(service_id=service_id, callback_type=kind, **values)
    upsert = statement.on_conflict_do_update(
        index_elements=["service_id", "callback_type"], set_={**values, "updated_at": func.now()}
    )
    return _callback_row(conn.execute(upsert.returning(*_CALLBACK_COLUMNS)).one())


def callback(conn: Connection, kind: str, service_id: str) -> CallbackRow | None:
    row = conn.execute(select(*_CALLBACK_COLUMNS).where(_kind_of(service_id, kind))).first()
    return None if row is None else _callback_row(row)


def remove_callback(conn: Connection, kind: str, service_id: str) -> CallbackRow | None:
    removed = delete(ServiceCallbackApi).where(_kind_of(service_id, kind)).returning(*_CALLBACK_COLUMNS)
    row = conn.execute(removed).first()
    return None if row is None else _callback_row(row)


def callbacks(conn: Connection, kind: str, service_ids: list[str]) -> dict[str, CallbackRow]:
    """The services' callbacks of `kind`, by service id (services without one left out)."""
    rows = conn.execute(
        select(*_CALLBACK_COLUMNS).where(
            ServiceCallbackApi.service_id.in_(service_ids), ServiceCallbackApi.callback_type == kind
        )
    )
    return {str(r.service_id): _callback_row(r) for r in rows}


def services_with_callbacks(conn: Connection) -> dict[str, frozenset[str]]:
    """Which services have a callback, by kind (every kind present)."""
    found: dict[str, set[str]] = {kind: set() for kind in CALLBACK_KINDS}
    for service_id, kind in conn.execute(select(ServiceCallbackApi.service_id, ServiceCallbackApi.callback_type)):
        found[kind].add(str(service_id))
    return {kind: frozenset(ids) for kind, ids in found.items()}


_CALLBACK_PAYLOADS = select(
    Notification.id,
    Notification.service_id,
    Notification.reference,
    Notification.to,
    Notification.status,
    Notification.created_at,
    Notification.updated_at,
    Notification.sent_at,
    Notification.notification_type,
    Notification.template_id,
    Notification.template_version,
).where(
    Notification.id == func.any(bindparam("ids", type_=ARRAY(PG_UUID(as_uuid=False)))),
    Notification.service_id == func.any(bindparam("service_ids", type_=ARRAY(PG_UUID(as_uuid=False)))),
)


def callback_payloads(conn: Connection, ids: list[str], service_ids: list[str]) -> list[Any]:
    """What a delivery-status callback says about each of `ids` whose service is among `service_ids`."""
    if not ids or not service_ids:
        return []
    return list(conn.execute(_CALLBACK_PAYLOADS, {"ids": ids, "service_ids": service_ids}))
