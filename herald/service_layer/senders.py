"""Managing a service's SMS senders, email reply-to addresses and inbound number (the Admin API).

Bad input raises InvalidRequest naming the field, and changes nothing. Ingest reads senders through its
cache (sending.Sender), so a change reaches sends within HERALD_CACHE_SECONDS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine

from herald.db import senders as senders_db
from herald.domain import inputs
from herald.domain import senders as rules
from herald.service_layer.errors import InvalidRequest

T = TypeVar("T")


class Senders:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add_sms_sender(self, service_id: str, sms_sender: str, is_default: bool) -> senders_db.SmsSenderRow:
        text = _valid(lambda: rules.sms_sender(sms_sender))
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            senders_db.ensure_default_sms_sender(conn, service_id)
            sender_id = senders_db.add_sms_sender(conn, service_id, text, is_default)
            return _found(senders_db.get_sms_sender(conn, service_id, sender_id))

    def list_sms_senders(self, service_id: str) -> list[senders_db.SmsSenderRow]:
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            senders_db.ensure_default_sms_sender(conn, service_id)
            return senders_db.list_sms_senders(conn, service_id)

    def update_sms_sender(
        self, service_id: str, sender_id: str, sms_sender: str | None, is_default: bool | None
    ) -> senders_db.SmsSenderRow:
        sender_id = _uuid("sms_sender_id", sender_id)
        text = None if sms_sender is None else _valid(lambda: rules.sms_sender(sms_sender))
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            senders_db.ensure_default_sms_sender(conn, service_id)
            current = senders_db.get_sms_sender(conn, service_id, sender_id)
            if current is None:
                raise InvalidRequest.one("sms_sender_id", "SMS sender not found")
            _valid(lambda: rules.keep_one_default(rules.SMS_SENDER, is_default, current.is_default))
            _valid(lambda: rules.keep_inbound_number(current.sms_sender, text, current.is_inbound_number))
            senders_db.update_sms_sender(conn, service_id, sender_id, text, bool(is_default))
            return _found(senders_db.get_sms_sender(conn, service_id, sender_id))

    def add_reply_to(self, service_id: str, email_address: str, is_default: bool) -> senders_db.ReplyToRow:
        address = _valid(lambda: rules.reply_to_address(email_address))
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            reply_to_id = senders_db.add_reply_to(conn, service_id, address, is_default)
            return _found(senders_db.get_reply_to(conn, service_id, reply_to_id))

    def list_reply_tos(self, service_id: str) -> list[senders_db.ReplyToRow]:
        with self._engine.begin() as conn:
            return senders_db.list_reply_tos(conn, _locked(conn, service_id))

    def update_reply_to(
        self, service_id: str, reply_to_id: str, email_address: str | None, is_default: bool | None
    ) -> senders_db.ReplyToRow:
        reply_to_id = _uuid("email_reply_to_id", reply_to_id)
        address = None if email_address is None else _valid(lambda: rules.reply_to_address(email_address))
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            current = senders_db.get_reply_to(conn, service_id, reply_to_id)
            if current is None:
                raise InvalidRequest.one("email_reply_to_id", "Reply-to email address not found")
            _valid(lambda: rules.keep_one_default(rules.REPLY_TO, is_default, current.is_default))
            senders_db.update_reply_to(conn, service_id, reply_to_id, address, bool(is_default))
            return _found(senders_db.get_reply_to(conn, service_id, reply_to_id))

    def set_inbound_number(self, service_id: str, number: str) -> tuple[senders_db.InboundNumberRow, str]:
        """The number (in its stored form) and the id of the SMS sender it now is, the service's default."""
        stored = _valid(lambda: rules.inbound_number(number))
        with self._engine.begin() as conn:
            service_id = _locked(conn, service_id)
            try:
                row = senders_db.set_inbound_number(conn, service_id, stored)
            except senders_db.NumberTaken:
                raise InvalidRequest.one("number", f"number {stored} is another service's inbound number") from None
            senders_db.ensure_default_sms_sender(conn, service_id)
            sender_id = senders_db.sms_sender_with_text(conn, service_id, stored)
            if sender_id is None:
                sender_id = senders_db.add_sms_sender(conn, service_id, stored, is_default=True)
            else:
                senders_db.update_sms_sender(conn, service_id, sender_id, None, make_default=True)
            return row, sender_id


def _uuid(field: str, value: str) -> str:
    return _valid(lambda: inputs.canonical_uuid(value, field))


def _valid(check: Callable[[], T]) -> T:
    try:
        return check()
    except (rules.SenderError, inputs.InputError) as exc:
        raise InvalidRequest.one(exc.field, exc.message) from None


def _locked(conn: Connection, service_id: str) -> str:
    service_id = _uuid("service_id", service_id)
    if not senders_db.lock_service(conn, service_id):
        raise InvalidRequest.one("service_id", "Service not found")
    return service_id


def _found(row: T | None) -> T:
    if row is None:  # read back in the transaction that wrote it
        raise AssertionError("a row written in this transaction is missing")
    return row
