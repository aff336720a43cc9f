"""What it costs to render and validate one message, in microseconds.

    .venv/bin/python bench/bench_templates.py [n]

Each figure is the median over several repeats of the mean time per call across a run of n calls
(emails run n // 10 times: they are an order of magnitude slower and a long run proves nothing more).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

from herald.domain.international import international_billing
from herald.domain.recipients import validate_email_address, validate_phone_number
from herald.domain.templates import render_email, render_sms

REPEATS = 5

SMS_BODY = (
    "Hello ((first name)), your appointment at ((clinic)) is on ((date)) at ((time)). "
    "Reply STOP to cancel.((bring letter?? Please bring your letter.))"
)
SMS_PERSONALISATION: list[dict[str, object]] = [
    {
        "first_name": "Amala",
        "Clinic": "St Thomas’ Hospital – Ward 5",
        "date": "3 March",
        "time": "10:30",
        "bring letter": "yes",
    },
    {
        "First Name": "Siân",
        "clinic": "Ysbyty Gwynedd",
        "date": "4 March",
        "time": "09:00",
        "bring_letter": "no",
    },
    {
        "first-name": "Jo",
        "CLINIC": "Leeds General",
        "date": "5 March",
        "time": "14:15",
        "bringletter": "show",
    },
]
PHONE_NUMBERS = ["07700 900123", "+44 (0)7700 900456", "447700900789", "0044 7833 333333", "07797 123456"]
INTERNATIONAL_NUMBERS = ["+33 6 12 34 56 78", "+1 650 253 0000", "+49 1512 3456789", "+1 242 359 1234"]

EMAIL_SUBJECT = "Your appointment on ((date))"
EMAIL_BODY = """# Your appointment

Dear ((name)),

Your appointment at ((clinic)) is on ((date)). Please bring:((items))

^ If you cannot attend, call 0300 123 4567 or visit https://www.example.nhs.uk/appointments.

---

[Manage your appointment](https://www.example.nhs.uk/manage?ref=((reference)))
"""
EMAIL_PERSONALISATION: list[dict[str, object]] = [
    {
        "name": "Amala",
        "clinic": "St Thomas’",
        "date": "3 March",
        "items": ["letter", "medicines"],
        "reference": "A1",
    },
    {"name": "Siân", "clinic": "Ysbyty Gwynedd", "date": "4 March", "items": ["letter"], "reference": "B2"},
]
EMAIL_ADDRESSES = ["delivered@simulator.notify", " jo.bloggs@example.com ", "perm-fail@simulator.notify"]


def _sms(i: int) -> None:
    render_sms(SMS_BODY, SMS_PERSONALISATION[i % len(SMS_PERSONALISATION)], prefix="NHS Trust")
    international_billing(validate_phone_number(PHONE_NUMBERS[i % len(PHONE_NUMBERS)]))


def _sms_render(i: int) -> None:
    render_sms(SMS_BODY, SMS_PERSONALISATION[i % len(SMS_PERSONALISATION)], prefix="NHS Trust")


def _uk_phone(i: int) -> None:
    international_billing(validate_phone_number(PHONE_NUMBERS[i % len(PHONE_NUMBERS)]))


def _international_phone(i: int) -> None:
    number = INTERNATIONAL_NUMBERS[i % len(INTERNATIONAL_NUMBERS)]
    international_billing(validate_phone_number(number, allow_international=True))


def _email(i: int) -> None:
    render_email(EMAIL_SUBJECT, EMAIL_BODY, EMAIL_PERSONALISATION[i % len(EMAIL_PERSONALISATION)])
    validate_email_address(EMAIL_ADDRESSES[i % len(EMAIL_ADDRESSES)])


def _mean_microseconds(call: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - start) / n * 1e6


def run(n: int = 20000) -> dict[str, float]:
    """Microseconds per message: SMS render + UK recipient validation and billing (with a prefix), its
    two halves separately, an international number's validation and billing (phonenumbers' full parse),
    and email render + address validation."""
    cases: list[tuple[str, Callable[[int], None], int]] = [
        ("sms_us", _sms, n),
        ("sms_render_us", _sms_render, n),
        ("uk_phone_us", _uk_phone, n),
        ("intl_phone_us", _international_phone, max(n // 10, 1)),
        ("email_us", _email, max(n // 10, 1)),
    ]
    results: dict[str, float] = {}
    for name, call, count in cases:
        _mean_microseconds(call, min(count, 1000))  # warm the template caches
        results[name] = statistics.median(_mean_microseconds(call, count) for _ in range(REPEATS))
    return results


if __name__ == "__main__":
    for name, microseconds in run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000).items():
        print(f"{name:>14}: {microseconds:8.2f} µs")
