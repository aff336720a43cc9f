"""Delivery receipts: a provider's word (or research mode's simulation) moves a notification forward."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from herald import metrics
from herald.db import notifications as notifications_db
from herald.domain import receipts, research
from herald.domain import statuses as st
from herald.service_layer.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    notification_id: str
    status: str
    applied: bool


class ReceiptProcessor:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def report(self, provider: str, reference: str, status: str, code: str) -> Outcome:
        if provider not in receipts.PROVIDERS:
            raise InvalidRequest.one("provider", f"provider {provider} is not one of mmg, firetext, ses")
        _check_id("reference", reference)
        with self._engine.begin() as conn:
            current = notifications_db.current_status(conn, reference)
            if current is None:
                metrics.incr("callback.unknown_reference", provider=provider)
                raise NotFound()
            new = receipts.map_receipt(provider, status, code, current)
            outcome = self._move(conn, reference, current, new)
        metrics.incr("callback", provider=provider, status=new)
        return outcome

    def simulate(self, notification_id: str) -> Outcome:
        """Research mode and test keys: the seed's outcomes by recipient, through the same mapping."""
        _check_id("notification_id", notification_id)
        with self._engine.begin() as conn:
            row = notifications_db.get(conn, notification_id, lock=True)
            if row is None:
                raise NotFound()
            if row.notification_type == "sms":
                fake = research.simulated_sms_receipt(row.to)
            else:
                fake = research.simulated_email_receipt(row.to)
            # A created row is handed off and completed in one step: the simulated provider answers at once.
            handed_to = fake.provider if row.status == st.CREATED else None
            new = receipts.map_receipt(fake.provider, fake.status, fake.code, row.status)
            outcome = self._move(conn, notification_id, row.status, new, handed_to)
        metrics.incr("callback.research", status=new)
        return outcome

    @staticmethod
    def _move(conn: Connection, notification_id: str, current: str, new: str, handed_to: str | None = None) -> Outcome:
        if not st.can_move(current, new):
            log.info("receipt ignored", extra={"notification_id": notification_id, "from": current, "to": new})
            return Outcome(notification_id, current, applied=False)
        moved = notifications_db.move_status(conn, notification_id, new, datetime.now(UTC), handed_to)
        if moved is None:  # another receipt got there first
            return Outcome(notification_id, current, applied=False)
        return Outcome(notification_id, moved, applied=True)


def _check_id(field: str, value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise InvalidRequest.one(field, f"{field} is not a valid UUID") from None
