"""Pure tests: the status transition table, the providers' receipt vocabularies and research mode.

Facts from notify-v2.md section 3 (statuses, provider mapping, which statuses a receipt may update) and
the seed's research-mode recipients (07833333333 temporary failure, 07822222222 permanent failure,
temp-fail@ / perm-fail@simulator.notify).
"""

from __future__ import annotations

import itertools

import pytest

from herald.domain import receipts, research
from herald.domain import statuses as st
from herald.domain.receipts import UnknownProvider, map_receipt

IN_FLIGHT = (st.CREATED, st.SENDING, st.SENT, st.PENDING)
# Notify: "A receipt can update the status only if the current one is in {created, sending, pending,
# sent, pending-virus-check}" (Herald has no letters, so no pending-virus-check).
RECEIPT_UPDATABLE = frozenset({st.CREATED, st.SENDING, st.PENDING, st.SENT})
RECEIPT_FINAL_OUTCOMES = (st.DELIVERED, st.TEMPORARY_FAILURE, st.PERMANENT_FAILURE, st.TECHNICAL_FAILURE)

# A rank for "forward": every allowed move must strictly increase it.
RANK = {st.CREATED: 0, st.SENDING: 1, st.SENT: 2, st.PENDING: 3} | {s: 4 for s in st.FINAL}


# --- the transition table -------------------------------------------------------------------------


def test_status_sets_are_consistent() -> None:
    assert st.FINAL | set(IN_FLIGHT) == st.ALL
    assert not st.FINAL & set(IN_FLIGHT)
    assert st.FAILURES < st.FINAL
    assert st.DELIVERED not in st.FAILURES
    for source, targets in st.TRANSITIONS.items():
        assert source in st.ALL
        assert targets <= st.ALL, source


@pytest.mark.parametrize(("current", "new"), list(itertools.product(sorted(st.ALL), sorted(st.ALL))))
def test_statuses_only_move_forward(current: str, new: str) -> None:
    if st.can_move(current, new):
        assert RANK[new] > RANK[current], f"{current} -> {new} goes backwards or sideways"


@pytest.mark.parametrize("final", sorted(st.FINAL))
def test_every_final_status_is_terminal(final: str) -> None:
    assert final not in st.TRANSITIONS
    assert [new for new in sorted(st.ALL) if st.can_move(final, new)] == []


@pytest.mark.parametrize("status", sorted(st.ALL))
def test_nothing_moves_to_its_own_status(status: str) -> None:
    """A repeated receipt is a duplicate, not a move."""
    assert not st.can_move(status, status)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (st.DELIVERED, st.SENDING, False),
        (st.DELIVERED, st.TEMPORARY_FAILURE, False),
        (st.DELIVERED, st.PENDING, False),
        (st.PERMANENT_FAILURE, st.DELIVERED, False),
        (st.TEMPORARY_FAILURE, st.DELIVERED, False),
        (st.TECHNICAL_FAILURE, st.SENDING, False),
        (st.PENDING, st.SENDING, False),
        (st.SENDING, st.CREATED, False),
        (st.PENDING, st.CREATED, False),
        (st.CREATED, st.SENDING, True),
        (st.CREATED, st.SENT, True),
        (st.CREATED, st.TECHNICAL_FAILURE, True),
        (st.CREATED, st.VALIDATION_FAILED, True),
        (st.CREATED, st.CANCELLED, True),
        (st.SENDING, st.PENDING, True),
        (st.SENDING, st.SENT, True),
        (st.SENDING, st.VALIDATION_FAILED, False),  # validated before it is sent
        (st.SENDING, st.CANCELLED, False),
        (st.PENDING, st.DELIVERED, True),
        (st.PENDING, st.TEMPORARY_FAILURE, True),
        (st.PENDING, st.SENT, False),
        (st.SENT, st.DELIVERED, True),
    ],
)
def test_can_move(current: str, new: str, allowed: bool) -> None:
    assert st.can_move(current, new) is allowed


def test_unknown_statuses_never_move() -> None:
    assert not st.can_move("elephant", st.DELIVERED)
    assert not st.can_move(st.SENDING, "elephant")
    assert st.sources_for("elephant") == ()


@pytest.mark.parametrize(
    ("new", "sources"),
    [
        (st.CREATED, ()),
        (st.SENDING, (st.CREATED,)),
        (st.SENT, (st.CREATED, st.SENDING)),
        (st.DELIVERED, (st.CREATED, st.PENDING, st.SENDING, st.SENT)),
        (st.TEMPORARY_FAILURE, (st.CREATED, st.PENDING, st.SENDING, st.SENT)),
        (st.PERMANENT_FAILURE, (st.CREATED, st.PENDING, st.SENDING, st.SENT)),
        (st.TECHNICAL_FAILURE, (st.CREATED, st.PENDING, st.SENDING, st.SENT)),
        (st.VALIDATION_FAILED, (st.CREATED,)),
        (st.CANCELLED, (st.CREATED,)),
    ],
)
def test_sources_for_gives_the_guard_set(new: str, sources: tuple[str, ...]) -> None:
    assert st.sources_for(new) == sources


@pytest.mark.parametrize("new", sorted(st.ALL))
def test_sources_for_agrees_with_can_move(new: str) -> None:
    sources = st.sources_for(new)
    assert list(sources) == sorted(sources)
    assert set(sources) == {current for current in st.ALL if st.can_move(current, new)}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(sorted(st.ALL), RECEIPT_FINAL_OUTCOMES)))
def test_a_final_receipt_updates_exactly_notifys_updatable_statuses(current: str, new: str) -> None:
    assert st.can_move(current, new) is (current in RECEIPT_UPDATABLE)


def test_a_pending_receipt_updates_sending_but_not_a_final_status() -> None:
    assert st.can_move(st.SENDING, st.PENDING)
    assert [s for s in sorted(st.FINAL) if st.can_move(s, st.PENDING)] == []


@pytest.mark.parametrize("current", [st.CREATED, st.SENT])
def test_a_pending_receipt_updates_created_and_sent_as_in_notify(current: str) -> None:
    assert st.can_move(current, st.PENDING)


# --- provider vocabularies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("2", st.PERMANENT_FAILURE),
        ("3", st.DELIVERED),
        ("4", st.TEMPORARY_FAILURE),
        ("5", st.PERMANENT_FAILURE),
        ("0", st.TECHNICAL_FAILURE),
        ("1", st.TECHNICAL_FAILURE),
        ("6", st.TECHNICAL_FAILURE),
        ("", st.TECHNICAL_FAILURE),
        ("delivered", st.TECHNICAL_FAILURE),
    ],
)
@pytest.mark.parametrize("current", [st.SENDING, st.PENDING])
def test_mmg(status: str, expected: str, current: str) -> None:
    """MMG's codes do not depend on the current status (the pending rule is Firetext's alone)."""
    assert map_receipt("mmg", status, "", current) == expected


@pytest.mark.parametrize(
    ("status", "code", "current", "expected"),
    [
        ("0", "", st.SENDING, st.DELIVERED),
        ("0", "", st.PENDING, st.DELIVERED),
        ("0", "101", st.SENDING, st.DELIVERED),  # a code only refines a decline
        ("2", "", st.SENDING, st.PENDING),
        ("2", "102", st.SENDING, st.PENDING),
        # a decline with no code: permanent, unless it follows pending
        ("1", "", st.SENDING, st.PERMANENT_FAILURE),
        ("1", "", st.CREATED, st.PERMANENT_FAILURE),
        ("1", "", st.PENDING, st.TEMPORARY_FAILURE),
        # unknown statuses
        ("3", "", st.SENDING, st.TECHNICAL_FAILURE),
        ("", "", st.SENDING, st.TECHNICAL_FAILURE),
        ("3", "", st.PENDING, st.TECHNICAL_FAILURE),
    ],
)
def test_firetext(status: str, code: str, current: str, expected: str) -> None:
    assert map_receipt("firetext", status, code, current) == expected


@pytest.mark.parametrize("code", ["000", "102", "103", "104", "302", "900"])
@pytest.mark.parametrize("current", [st.SENDING, st.PENDING])
def test_firetext_temporary_codes(code: str, current: str) -> None:
    assert map_receipt("firetext", "1", code, current) == st.TEMPORARY_FAILURE


@pytest.mark.parametrize("code", ["101", "201", "301", "401"])
@pytest.mark.parametrize("current", [st.SENDING, st.PENDING])
def test_firetext_permanent_codes_win_even_after_pending(code: str, current: str) -> None:
    assert map_receipt("firetext", "1", code, current) == st.PERMANENT_FAILURE


def test_firetext_unrecognised_code_straight_after_sending_is_permanent() -> None:
    assert map_receipt("firetext", "1", "999", st.SENDING) == st.PERMANENT_FAILURE


def test_firetext_unrecognised_code_after_pending_is_temporary() -> None:
    assert map_receipt("firetext", "1", "999", st.PENDING) == st.TEMPORARY_FAILURE


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("Delivery", "", st.DELIVERED),
        ("Bounce", "Permanent", st.PERMANENT_FAILURE),
        ("Bounce", "Transient", st.TEMPORARY_FAILURE),
        ("Bounce", "Undetermined", st.TEMPORARY_FAILURE),
        ("Bounce", "", st.TEMPORARY_FAILURE),
        ("Open", "", st.TECHNICAL_FAILURE),
        ("", "", st.TECHNICAL_FAILURE),
    ],
)
@pytest.mark.parametrize("current", [st.SENDING, st.PENDING])
def test_ses(status: str, code: str, expected: str, current: str) -> None:
    assert map_receipt("ses", status, code, current) == expected


@pytest.mark.parametrize("provider", ["twilio", "", "MMG", "Firetext", "SES"])
def test_unknown_provider_raises(provider: str) -> None:
    with pytest.raises(UnknownProvider) as err:
        map_receipt(provider, "3", "", st.SENDING)
    assert isinstance(err.value, ValueError)
    assert str(err.value) == provider


def test_known_providers() -> None:
    assert {"mmg", "firetext", "ses"} == receipts.PROVIDERS


# --- research mode (seed) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "status", "outcome"),
    [
        ("447833333333", "4", st.TEMPORARY_FAILURE),  # 07833333333
        ("447822222222", "5", st.PERMANENT_FAILURE),  # 07822222222
        ("447811111111", "3", st.DELIVERED),  # 07811111111
        ("447700900123", "3", st.DELIVERED),  # anything else
        ("447833333334", "3", st.DELIVERED),
    ],
)
def test_research_mode_sms(number: str, status: str, outcome: str) -> None:
    fake = research.simulated_sms_receipt(number)
    assert (fake.provider, fake.status, fake.code) == ("mmg", status, "")
    assert map_receipt(fake.provider, fake.status, fake.code, st.SENDING) == outcome


@pytest.mark.parametrize(
    ("address", "status", "code", "outcome"),
    [
        ("temp-fail@simulator.notify", "Bounce", "Transient", st.TEMPORARY_FAILURE),
        ("Temp-Fail@Simulator.Notify", "Bounce", "Transient", st.TEMPORARY_FAILURE),
        ("perm-fail@simulator.notify", "Bounce", "Permanent", st.PERMANENT_FAILURE),
        ("PERM-FAIL@SIMULATOR.NOTIFY", "Bounce", "Permanent", st.PERMANENT_FAILURE),
        ("delivered@simulator.notify", "Delivery", "", st.DELIVERED),
        ("someone@example.com", "Delivery", "", st.DELIVERED),
        ("temp-fail@simulator.notify.example", "Delivery", "", st.DELIVERED),
    ],
)
def test_research_mode_email(address: str, status: str, code: str, outcome: str) -> None:
    fake = research.simulated_email_receipt(address)
    assert (fake.provider, fake.status, fake.code) == ("ses", status, code)
    assert map_receipt(fake.provider, fake.status, fake.code, st.SENDING) == outcome
