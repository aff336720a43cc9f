"""Research mode and test keys: the receipt a provider would have sent, chosen by the recipient (seed)."""

from __future__ import annotations

from dataclasses import dataclass

# The providers whose receipts research mode and test keys imitate.
SMS_PROVIDER = "mmg"
EMAIL_PROVIDER = "ses"
TEMP_FAIL_NUMBER = "447833333333"  # 07833333333
PERM_FAIL_NUMBER = "447822222222"  # 07822222222
TEMP_FAIL_EMAIL = "temp-fail@simulator.notify"
PERM_FAIL_EMAIL = "perm-fail@simulator.notify"


@dataclass(frozen=True, slots=True)
class SimulatedReceipt:
    provider: str
    status: str
    code: str = ""


def simulated_sms_receipt(normalised_number: str) -> SimulatedReceipt:
    if normalised_number == TEMP_FAIL_NUMBER:
        return SimulatedReceipt(SMS_PROVIDER, "4")
    if normalised_number == PERM_FAIL_NUMBER:
        return SimulatedReceipt(SMS_PROVIDER, "5")
    return SimulatedReceipt(SMS_PROVIDER, "3")


def simulated_email_receipt(address: str) -> SimulatedReceipt:
    lowered = address.lower()
    if lowered == TEMP_FAIL_EMAIL:
        return SimulatedReceipt(EMAIL_PROVIDER, "Bounce", "Transient")
    if lowered == PERM_FAIL_EMAIL:
        return SimulatedReceipt(EMAIL_PROVIDER, "Bounce", "Permanent")
    return SimulatedReceipt(EMAIL_PROVIDER, "Delivery")
