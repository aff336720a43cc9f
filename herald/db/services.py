"""SQL for services, their API keys and templates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, bindparam, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from herald.db.models import ApiKey, Service, Template, TemplateHistory

# Notify accepts tokens from keys revoked in the last 7 days, to say "revoked" rather than "not found".
REVOKED_KEYS_KEPT = timedelta(days=7)


class DuplicateServiceName(Exception):
    pass


class NotFound(Exception):
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
)


def create_service(conn: Connection, name: str, **flags: object) -> str:
    """No pre-check for the name: the unique constraint decides, so a race gives exactly one row (seed)."""
    service_id = uuid.uuid4()
    try:
        with conn.begin_nested():
            conn.execute(insert(Service).values(id=service_id, name=name, **flags))
    except IntegrityError as exc:
        if "uq_services_name" in str(exc.orig):
            raise DuplicateServiceName(name) from None
        raise
    return str(service_id)


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
    return ServiceRow(str(row.id), *row[1:])


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


def keys_for_auth(conn: Connection, service_id: str) -> list[KeyRow]:
    """Live keys and those revoked within the last 7 days."""
    cutoff = datetime.now(UTC) - REVOKED_KEYS_KEPT
    rows = conn.execute(_KEYS_FOR_AUTH, {"service_id": service_id, "cutoff": cutoff}).all()
    return [KeyRow(str(r.id), r.key_type, r.secret_encrypted, r.revoked_at) for r in rows]


def create_template(
    conn: Connection, service_id: str, name: str, template_type: str, content: str, subject: str | None = None
) -> str:
    template_id = uuid.uuid4()
    values = {
        "id": template_id,
        "service_id": service_id,
        "name": name,
        "template_type": template_type,
        "subject": subject,
        "content": content,
    }
    conn.execute(insert(Template).values(version=1, **values))
    conn.execute(insert(TemplateHistory).values(version=1, **values))
    return str(template_id)


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
