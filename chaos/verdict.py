"""The check that ends every scenario: in the database and at the simulator, after the system settles.

lost       accepted (the caller got an id) but not in the database
stuck      in the database but not in a final status
duplicated handed to the provider more than once (the simulator's accepted sends for its reference > 1)
refused    an attempt answered with an error whose reference is in the database anyway: it will be sent
           (shown for every code; DEADLINE_EXCEEDED does not fail the run: it is the caller's own timer
           running out before any answer, which gRPC defines as "outcome unknown", not Herald refusing)
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, bindparam, text
from tqdm import tqdm

from chaos.load import Answers

FINAL = frozenset(
    {"delivered", "temporary-failure", "permanent-failure", "technical-failure", "validation-failed", "cancelled"}
)
_STATUSES = text("SELECT id::text AS id, status FROM notifications WHERE id::text IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_STORED_REFUSED = text("SELECT reference, status FROM notifications WHERE reference IN :refs").bindparams(
    bindparam("refs", expanding=True)
)
_CHUNK = 5000
# The client's own deadline: no answer came from Herald, so the outcome is unknown, not refused.
UNKNOWN_OUTCOME = "DEADLINE_EXCEEDED"


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    attempts: int = 0
    accepted: int = 0
    delivered: int = 0
    other_final: Counter[str] = field(default_factory=Counter)
    stuck: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    duplicated: int = 0
    refused_stored: Counter[str] = field(default_factory=Counter)  # by the gRPC code the caller was told
    codes: Counter[str] = field(default_factory=Counter)
    redriven: int = 0  # repeated requests the simulator answered from its de-duplication by reference
    rerequested: int | None = None  # references sent to the provider more than once (None: not reported)
    all_must_deliver: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(
            self.lost
            or sum(self.stuck.values())
            or self.duplicated
            or sum(n for code, n in self.refused_stored.items() if code != UNKNOWN_OUTCOME)
            or self.problems
            or (self.all_must_deliver and sum(self.other_final.values()))
        )


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def statuses(engine: Engine, ids: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    with engine.connect() as conn:
        for chunk in _chunks(ids):
            found.update({r.id: r.status for r in conn.execute(_STATUSES, {"ids": chunk})})
    return found


def settle(engine: Engine, ids: list[str], timeout: float, label: str) -> dict[str, str]:
    """Polls until every id is stored and final, or `timeout` has passed; returns the last statuses seen."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    with tqdm(total=len(ids), desc=f"{label}: settling", unit="msg", leave=False) as bar:
        while True:
            try:
                found = statuses(engine, ids)
            except Exception as exc:  # the database may still be coming back; report, and try again
                bar.set_postfix_str(f"database: {type(exc).__name__}")
            final = sum(1 for status in found.values() if status in FINAL)
            bar.n = final
            bar.refresh()
            if final == len(ids) or time.monotonic() > deadline:
                return found
            time.sleep(1.0)


def judge(scenario: str, engine: Engine, answers: Answers, sim_stats: dict[str, Any], found: dict[str, str]) -> Row:
    row = Row(scenario, attempts=answers.attempts, accepted=len(answers.accepted), codes=Counter(answers.codes))
    for notification_id in answers.accepted:
        status = found.get(notification_id)
        if status is None:
            row.lost += 1
        elif status == "delivered":
            row.delivered += 1
        elif status in FINAL:
            row.other_final[status] += 1
        else:
            row.stuck[status] += 1
    sends: dict[str, int] = sim_stats.get("sends", {})
    row.duplicated = sum(1 for count in sends.values() if count > 1)
    duplicates = sim_stats.get("duplicates")
    if isinstance(duplicates, int):
        row.redriven = duplicates
    requests = sim_stats.get("requests")
    if isinstance(requests, dict):
        row.rerequested = sum(1 for count in requests.values() if count > 1)
    refused = list(answers.refused)
    with engine.connect() as conn:
        for chunk in _chunks(refused):
            for stored in conn.execute(_STORED_REFUSED, {"refs": chunk}):
                row.refused_stored[answers.refused[stored.reference]] += 1
    return row
