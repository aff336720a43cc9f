"""What a service reads of its own data through Notify's v2 GET routes: notifications, page by page,
and templates. Notify's filters and their messages live here, so the gateway holds no rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine

from herald.db import reads as reads_db
from herald.db.notifications import NotificationRow
from herald.domain import inputs
from herald.domain import statuses as st
from herald.service_layer.auth import Caller
from herald.service_layer.errors import InvalidRequest, NotFound

PAGE_SIZE: Final = 250  # Notify's API_PAGE_SIZE

# Notify's NOTIFICATION_STATUS_TYPES, then the letter statuses a caller may also ask for, in Notify's order
# (its error message lists them so).
STATUSES: Final = (
    "cancelled",
    "created",
    "sending",
    "sent",
    "delivered",
    "pending",
    "failed",
    "technical-failure",
    "temporary-failure",
    "permanent-failure",
    "pending-virus-check",
    "validation-failed",
    "virus-scan-failed",
    "returned-letter",
    "accepted",
    "received",
)
# Notify's deprecated "failed" stands for every failure status.
STATUS_GROUPS: Final = {
    "failed": (
        st.TECHNICAL_FAILURE,
        st.TEMPORARY_FAILURE,
        st.PERMANENT_FAILURE,
        st.VALIDATION_FAILED,
        "virus-scan-failed",
        "returned-letter",
    )
}
TEMPLATE_TYPES: Final = ("sms", "email", "letter")


@dataclass(frozen=True, slots=True)
class NotificationQuery:
    template_types: Sequence[str] = ()
    statuses: Sequence[str] = ()
    reference: str = ""
    older_than: str = ""


def _one_of(field: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        # Notify's jsonschema message, quotes stripped.
        raise InvalidRequest.one(field, f"{field} {value} is not one of [{', '.join(allowed)}]")


def expanded_statuses(statuses: Sequence[str]) -> list[str]:
    for status in statuses:
        _one_of("status", status, STATUSES)
    out: list[str] = []
    for status in statuses:
        for each in STATUS_GROUPS.get(status, (status,)):
            if each not in out:
                out.append(each)
    return out


def list_notifications(engine: Engine, caller: Caller, query: NotificationQuery) -> list[NotificationRow]:
    for template_type in query.template_types:
        _one_of("template_type", template_type, TEMPLATE_TYPES)
    statuses = expanded_statuses(query.statuses)
    try:
        older_than = inputs.canonical_uuid(query.older_than, "older_than") if query.older_than else ""
        inputs.check_text(query.reference, "reference")  # no NUL or lone surrogate reaches PostgreSQL
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    where = reads_db.NotificationFilter(
        service_id=caller.service.id,
        key_type=caller.key.key_type,
        types=list(query.template_types),
        statuses=statuses,
        reference=query.reference,
        older_than=older_than,
    )
    with engine.connect() as conn:
        return reads_db.list_notifications(conn, where, PAGE_SIZE)


def get_template(engine: Engine, caller: Caller, template_id: str, version: int = 0) -> reads_db.TemplateDetail:
    """Another service's template, an archived one (current version) or a missing version: "No result
    found", as Notify's GET routes answer."""
    try:
        template_id = inputs.canonical_uuid(template_id, "id")
    except inputs.InputError as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None
    if version < 0:
        raise NotFound()
    with engine.connect() as conn:
        template = reads_db.get_template(conn, template_id, version or None)
    if template is None or template.service_id != caller.service.id or template.archived:
        raise NotFound()
    return template


def list_templates(engine: Engine, caller: Caller, template_type: str = "") -> list[reads_db.TemplateDetail]:
    if template_type:
        _one_of("type", template_type, TEMPLATE_TYPES)
    with engine.connect() as conn:
        return reads_db.list_templates(conn, caller.service.id, template_type)
