"""SQL for what a service reads of its own data: pages of notifications and its templates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, literal, select, tuple_

from herald.db.models import Notification, Template, TemplateHistory
from herald.db.notifications import _ROW_COLUMNS, NotificationRow, _row


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    service_id: str
    key_type: str  # only what keys of this type sent (Notify)
    types: Sequence[str] = ()  # empty: every type
    statuses: Sequence[str] = ()  # empty: every status; already expanded from Notify's groups
    reference: str = ""
    older_than: str = ""  # a notification id: the page starts after it


@dataclass(frozen=True, slots=True)
class TemplateDetail:
    id: str
    service_id: str
    template_type: str
    name: str
    subject: str | None
    content: str
    version: int
    archived: bool
    created_at: datetime
    updated_at: datetime | None


def list_notifications(conn: Connection, where: NotificationFilter, limit: int) -> list[NotificationRow]:
    """Newest first. The cursor is the keyset (created_at, id) of `older_than`, never an OFFSET, so a page
    costs the same however deep it is; ix_notifications_service_created serves both filter and order."""
    query = select(*_ROW_COLUMNS).where(
        Notification.service_id == where.service_id, Notification.key_type == where.key_type
    )
    if where.older_than:
        cursor = conn.execute(
            select(Notification.created_at, Notification.id).where(
                Notification.id == where.older_than, Notification.service_id == where.service_id
            )
        ).one_or_none()
        if cursor is None:
            return []  # Notify: an unknown older_than gives an empty page
        query = query.where(tuple_(Notification.created_at, Notification.id) < tuple_(cursor[0], cursor[1]))
    if where.types:
        query = query.where(Notification.notification_type.in_(where.types))
    if where.statuses:
        query = query.where(Notification.status.in_(where.statuses))
    if where.reference:
        query = query.where(Notification.reference == where.reference)
    rows = conn.execute(query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit))
    return [_row(r) for r in rows]


_CURRENT_COLUMNS = (
    Template.id,
    Template.service_id,
    Template.template_type,
    Template.name,
    Template.subject,
    Template.content,
    Template.version,
    Template.archived,
    Template.created_at,
    Template.updated_at,
)


def _detail(row: Sequence[object]) -> TemplateDetail:
    return TemplateDetail(str(row[0]), str(row[1]), *row[2:])  # type: ignore[arg-type]


def get_template(conn: Connection, template_id: str, version: int | None = None) -> TemplateDetail | None:
    """The current version, or a past one: its text from the history, its dates those of the template
    (created) and of the version (updated, unless it is the first)."""
    if version is None:
        query = select(*_CURRENT_COLUMNS).where(Template.id == template_id)
    else:
        query = (
            select(
                TemplateHistory.id,
                TemplateHistory.service_id,
                TemplateHistory.template_type,
                TemplateHistory.name,
                TemplateHistory.subject,
                TemplateHistory.content,
                TemplateHistory.version,
                literal(False),  # a past version is shown even if the template was archived since
                Template.created_at,
                case((TemplateHistory.version > 1, TemplateHistory.created_at), else_=None),
            )
            .join(Template, Template.id == TemplateHistory.id)
            .where(TemplateHistory.id == template_id, TemplateHistory.version == version)
        )
    row = conn.execute(query).one_or_none()
    return _detail(row) if row is not None else None


def list_templates(conn: Connection, service_id: str, template_type: str = "") -> list[TemplateDetail]:
    """Not archived, by name then type (Notify)."""
    query = select(*_CURRENT_COLUMNS).where(Template.service_id == service_id, Template.archived.is_(False))
    if template_type:
        query = query.where(Template.template_type == template_type)
    return [_detail(r) for r in conn.execute(query.order_by(Template.name, Template.template_type))]
