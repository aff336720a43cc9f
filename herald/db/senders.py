"""SQL for a service's SMS senders, email reply-to addresses and inbound number.

Every change takes the service's row lock first, so two changes to one service's defaults run one after
the other; the partial unique indexes (one default per service) are the last word.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, text, update

from herald.db.models import InboundNumber, Service, ServiceEmailReplyTo, ServiceSmsSender


class NotFound(Exception):
    pass


class NumberTaken(Exception):
    """The inbound number belongs to another service."""


@dataclass(frozen=True, slots=True)
class SmsSenderRow:
    id: str
    service_id: str
    sms_sender: str
    is_default: bool
    is_inbound_number: bool
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ReplyToRow:
    id: str
    service_id: str
    email_address: str
    is_default: bool
    created_at: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class InboundNumberRow:
    number: str
    service_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ServiceSenders:
    """What a send needs: the service's SMS senders' texts and reply-to addresses by id, and its default
    reply-to address (None: it has none)."""

    sms_senders: dict[str, str]
    reply_tos: dict[str, str]
    default_reply_to: str | None


def lock_service(conn: Connection, service_id: str) -> bool:
    """Locks the service's row until the transaction ends; False when there is no such service."""
    found = conn.execute(select(Service.id).where(Service.id == service_id).with_for_update()).first()
    return found is not None


def _make_default(
    conn: Connection, model: type[ServiceSmsSender] | type[ServiceEmailReplyTo], service_id: str, row_id: str
) -> None:
    """The service's one default (of SMS senders or of reply-to addresses) moves to `row_id`."""
    conn.execute(
        update(model)
        .where(model.service_id == service_id, model.is_default, model.id != row_id)
        .values(is_default=False, updated_at=func.now())
    )
    conn.execute(update(model).where(model.id == row_id).values(is_default=True, updated_at=func.now()))


def _insert(
    conn: Connection, model: type[ServiceSmsSender] | type[ServiceEmailReplyTo], service_id: str, **value: str
) -> str:
    """A new row, not the default. Made at clock_timestamp(), not now(), so those made in one transaction
    list in the order they were made."""
    row_id = str(uuid.uuid4())
    conn.execute(
        insert(model).values(
            id=row_id, service_id=service_id, is_default=False, created_at=func.clock_timestamp(), **value
        )
    )
    return row_id


# --- SMS senders

_SMS_COLUMNS = (
    ServiceSmsSender.id,
    ServiceSmsSender.service_id,
    ServiceSmsSender.sms_sender,
    ServiceSmsSender.is_default,
    (InboundNumber.number.is_not(None)).label("is_inbound_number"),
    ServiceSmsSender.created_at,
    ServiceSmsSender.updated_at,
)
# The default row, made from services.sms_sender the first time a service's senders are read or changed
# (a service created by CreateService has only that column), at clock_timestamp() as _insert's rows.
_ENSURE_DEFAULT = text(
    """INSERT INTO service_sms_senders (id, service_id, sms_sender, is_default, created_at)
       SELECT :id, s.id, s.sms_sender, true, clock_timestamp() FROM services AS s
       WHERE s.id = :service_id
         AND NOT EXISTS (SELECT 1 FROM service_sms_senders WHERE service_id = :service_id AND is_default)
       ON CONFLICT DO NOTHING"""
)


def _sms_row(r: Any) -> SmsSenderRow:
    return SmsSenderRow(str(r[0]), str(r[1]), *r[2:])


def _sms_select() -> Any:
    return select(*_SMS_COLUMNS).outerjoin(
        InboundNumber,
        (InboundNumber.service_id == ServiceSmsSender.service_id)
        & (InboundNumber.number == ServiceSmsSender.sms_sender),
    )


def ensure_default_sms_sender(conn: Connection, service_id: str) -> None:
    conn.execute(_ENSURE_DEFAULT, {"id": uuid.uuid4(), "service_id": service_id})


def list_sms_senders(conn: Connection, service_id: str) -> list[SmsSenderRow]:
    rows = conn.execute(
        _sms_select()
        .where(ServiceSmsSender.service_id == service_id)
        .order_by(ServiceSmsSender.is_default.desc(), ServiceSmsSender.created_at, ServiceSmsSender.id)
    )
    return [_sms_row(r) for r in rows]


def get_sms_sender(conn: Connection, service_id: str, sender_id: str) -> SmsSenderRow | None:
    row = conn.execute(
        _sms_select().where(ServiceSmsSender.service_id == service_id, ServiceSmsSender.id == sender_id)
    ).first()
    return None if row is None else _sms_row(row)


def _make_sms_default(conn: Connection, service_id: str, sender_id: str, sms_sender: str) -> None:
    """The one default moves to `sender_id`; services.sms_sender follows it."""
    _make_default(conn, ServiceSmsSender, service_id, sender_id)
    conn.execute(update(Service).where(Service.id == service_id).values(sms_sender=sms_sender))


def add_sms_sender(conn: Connection, service_id: str, sms_sender: str, is_default: bool) -> str:
    """Call with the service locked and its default row ensured."""
    sender_id = _insert(conn, ServiceSmsSender, service_id, sms_sender=sms_sender)
    if is_default:
        _make_sms_default(conn, service_id, sender_id, sms_sender)
    return sender_id


def update_sms_sender(
    conn: Connection, service_id: str, sender_id: str, sms_sender: str | None, make_default: bool
) -> None:
    """Call with the service locked; raises NotFound for another service's or an unknown id."""
    current = get_sms_sender(conn, service_id, sender_id)
    if current is None:
        raise NotFound(sender_id)
    text_now = current.sms_sender if sms_sender is None else sms_sender
    if sms_sender is not None:
        conn.execute(
            update(ServiceSmsSender)
            .where(ServiceSmsSender.id == sender_id)
            .values(sms_sender=sms_sender, updated_at=func.now())
        )
    if make_default or (current.is_default and sms_sender is not None):
        _make_sms_default(conn, service_id, sender_id, text_now)


# --- Reply-to addresses

_REPLY_TO_COLUMNS = (
    ServiceEmailReplyTo.id,
    ServiceEmailReplyTo.service_id,
    ServiceEmailReplyTo.email_address,
    ServiceEmailReplyTo.is_default,
    ServiceEmailReplyTo.created_at,
    ServiceEmailReplyTo.updated_at,
)


def _reply_to_row(r: Any) -> ReplyToRow:
    return ReplyToRow(str(r[0]), str(r[1]), *r[2:])


def list_reply_tos(conn: Connection, service_id: str) -> list[ReplyToRow]:
    rows = conn.execute(
        select(*_REPLY_TO_COLUMNS)
        .where(ServiceEmailReplyTo.service_id == service_id)
        .order_by(ServiceEmailReplyTo.is_default.desc(), ServiceEmailReplyTo.created_at, ServiceEmailReplyTo.id)
    )
    return [_reply_to_row(r) for r in rows]


def get_reply_to(conn: Connection, service_id: str, reply_to_id: str) -> ReplyToRow | None:
    row = conn.execute(
        select(*_REPLY_TO_COLUMNS).where(
            ServiceEmailReplyTo.service_id == service_id, ServiceEmailReplyTo.id == reply_to_id
        )
    ).first()
    return None if row is None else _reply_to_row(row)


def add_reply_to(conn: Connection, service_id: str, email_address: str, is_default: bool) -> str:
    """Call with the service locked. The service's first address is its default whatever `is_default` says."""
    has_default = conn.execute(
        select(ServiceEmailReplyTo.id).where(
            ServiceEmailReplyTo.service_id == service_id, ServiceEmailReplyTo.is_default
        )
    ).first()
    reply_to_id = _insert(conn, ServiceEmailReplyTo, service_id, email_address=email_address)
    if is_default or has_default is None:
        _make_default(conn, ServiceEmailReplyTo, service_id, reply_to_id)
    return reply_to_id


def update_reply_to(
    conn: Connection, service_id: str, reply_to_id: str, email_address: str | None, make_default: bool
) -> None:
    """Call with the service locked; raises NotFound for another service's or an unknown id."""
    if get_reply_to(conn, service_id, reply_to_id) is None:
        raise NotFound(reply_to_id)
    if email_address is not None:
        conn.execute(
            update(ServiceEmailReplyTo)
            .where(ServiceEmailReplyTo.id == reply_to_id)
            .values(email_address=email_address, updated_at=func.now())
        )
    if make_default:
        _make_default(conn, ServiceEmailReplyTo, service_id, reply_to_id)


# --- Inbound number


def set_inbound_number(conn: Connection, service_id: str, number: str) -> InboundNumberRow:
    """Call with the service locked. Replaces the service's inbound number; raises NumberTaken when another
    service has `number`."""
    owner = conn.execute(
        select(InboundNumber.service_id).where(InboundNumber.number == number).with_for_update()
    ).scalar_one_or_none()
    if owner is not None and str(owner) != service_id:
        raise NumberTaken(number)
    if owner is None:
        conn.execute(delete(InboundNumber).where(InboundNumber.service_id == service_id))
        conn.execute(insert(InboundNumber).values(number=number, service_id=service_id))
    row = conn.execute(
        select(InboundNumber.number, InboundNumber.service_id, InboundNumber.created_at).where(
            InboundNumber.number == number
        )
    ).one()
    return InboundNumberRow(row[0], str(row[1]), row[2])


def sms_sender_with_text(conn: Connection, service_id: str, sms_sender: str) -> str | None:
    """The id of the service's sender with this text, if it has one."""
    found = conn.execute(
        select(ServiceSmsSender.id)
        .where(ServiceSmsSender.service_id == service_id, ServiceSmsSender.sms_sender == sms_sender)
        .order_by(ServiceSmsSender.is_default.desc(), ServiceSmsSender.created_at)
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else str(found)


# --- For sends


def service_senders(conn: Connection, service_id: str) -> ServiceSenders:
    sms = conn.execute(
        select(ServiceSmsSender.id, ServiceSmsSender.sms_sender).where(ServiceSmsSender.service_id == service_id)
    )
    reply_tos = list(
        conn.execute(
            select(ServiceEmailReplyTo.id, ServiceEmailReplyTo.email_address, ServiceEmailReplyTo.is_default).where(
                ServiceEmailReplyTo.service_id == service_id
            )
        )
    )
    return ServiceSenders(
        sms_senders={str(r[0]): r[1] for r in sms},
        reply_tos={str(r[0]): r[1] for r in reply_tos},
        default_reply_to=next((r[1] for r in reply_tos if r[2]), None),
    )
