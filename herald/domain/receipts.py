"""Providers' delivery-receipt vocabularies mapped to Herald's statuses (Notify's mapping)."""

from __future__ import annotations

from herald.domain import statuses as st

_MMG = {"2": st.PERMANENT_FAILURE, "3": st.DELIVERED, "4": st.TEMPORARY_FAILURE, "5": st.PERMANENT_FAILURE}
_FIRETEXT = {"0": st.DELIVERED, "1": st.PERMANENT_FAILURE, "2": st.PENDING}
_FIRETEXT_TEMPORARY_CODES = frozenset({"000", "102", "103", "104", "302", "900"})
_FIRETEXT_PERMANENT_CODES = frozenset({"101", "201", "301", "401"})

PROVIDERS = frozenset({"mmg", "firetext", "ses"})


class UnknownProvider(ValueError):
    pass


def map_receipt(provider: str, status: str, code: str, current: str) -> str:
    """The status a receipt means, given the notification's current status.

    An unrecognised provider status becomes technical-failure, as in Notify.
    """
    if provider == "mmg":
        return _MMG.get(status, st.TECHNICAL_FAILURE)
    if provider == "firetext":
        mapped = _FIRETEXT.get(status, st.TECHNICAL_FAILURE)
        if status == "1":
            if code in _FIRETEXT_TEMPORARY_CODES:
                return st.TEMPORARY_FAILURE
            if code in _FIRETEXT_PERMANENT_CODES:
                return st.PERMANENT_FAILURE
            # No code we know: a decline that follows `pending` is a temporary failure (Notify).
            if current == st.PENDING:
                return st.TEMPORARY_FAILURE
        return mapped
    if provider == "ses":
        if status == "Delivery":
            return st.DELIVERED
        if status == "Bounce":
            return st.PERMANENT_FAILURE if code == "Permanent" else st.TEMPORARY_FAILURE
        if status == "Complaint":
            # A complaint follows a delivery: it is recorded elsewhere and leaves the status alone.
            return current
        return st.TECHNICAL_FAILURE
    raise UnknownProvider(provider)
