"""Hypothesis against the providers' webhooks with the right credentials, so that requests get past the
credential check (test_http_surface.py's fuzz mostly meets the 401): bodies shaped like each provider's
(MMG's JSON, Firetext's form, SNS messages signed as SNS signs them, carrying SES-like events) with any
values, and anything else. No 500, and every answer is one the OpenAPI document gives for its route."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from herald.providers.sns_messages import SIGNED_FIELDS
from tests.gateway.conftest import Signer, Stack
from tests.gateway.test_http_surface import conforms

_text = st.text(max_size=40)
_scalar = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | _text
_value = st.recursive(
    _scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8
)
_reference = st.one_of(st.uuids().map(str), _text)


def _fields(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of `names` with any values (the provider's own when given), plus stray fields."""
    return st.fixed_dictionaries({}, optional={name: _value for name in names}) | st.dictionaries(
        st.sampled_from(names) | _text, _value, max_size=6
    )


_mmg = st.one_of(
    _fields(["status", "CID", "substatus", "reference", "MSISDN", "deliverytime"]),
    st.fixed_dictionaries(  # a receipt in MMG's shape, so that the path past the checks runs too
        {"status": st.sampled_from(["2", "3", "4", "5"]) | _text, "CID": _reference},
        optional={"substatus": _scalar, "MSISDN": _text, "reference": _text},
    ),
).map(lambda d: json.dumps(d).encode())
_firetext = st.one_of(
    st.dictionaries(st.sampled_from(["status", "reference", "code", "mobile", "time"]) | _text, _text, max_size=6),
    st.fixed_dictionaries(
        {"status": st.sampled_from(["0", "1", "2"]) | _text, "reference": _reference},
        optional={"code": st.sampled_from(["101", "102"]) | _text, "mobile": _text},
    ),
).map(lambda d: urlencode(d).encode())
_ses_event = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "eventType": _text,
            "notificationType": _text,
            "mail": _value,
            "bounce": _value,
        },
    ),
    st.fixed_dictionaries(
        {
            "eventType": st.sampled_from(["Delivery", "Bounce", "Complaint", "Send"]) | _text,
            "mail": st.fixed_dictionaries({"tags": st.fixed_dictionaries({"notification_id": st.lists(_reference)})}),
        },
        optional={"bounce": st.fixed_dictionaries({"bounceType": st.sampled_from(["Permanent", "Transient"])})},
    ),
)
_sns = st.fixed_dictionaries(
    {
        "Type": st.sampled_from(["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]) | _text,
        "Message": _ses_event.map(json.dumps) | _text,
    },
    optional={
        "MessageId": st.uuids().map(str),
        "TopicArn": _text,
        "Timestamp": _text,
        "Token": _text,
        "SubscribeURL": st.sampled_from(["http://127.0.0.1:1/x", "https://example.org/"]) | _text,
        "Subject": _text,
    },
)
_any_bytes = st.binary(max_size=64)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"herald:{password}".encode()).decode()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=st.data(), route=st.sampled_from(["mmg", "firetext", "ses"]), shaped=st.booleans())
def test_no_webhook_request_gets_a_500_or_an_undocumented_answer(
    stack: Stack,
    sns_gateway: str,
    signer: Signer,
    http: httpx.Client,
    data: st.DataObject,
    route: str,
    shaped: bool,
) -> None:
    paths = {"mmg": "/notifications/sms/mmg", "firetext": "/notifications/sms/firetext",
             "ses": "/notifications/email/ses"}  # fmt: skip
    credentials = stack.settings.callback_credentials()
    if not shaped:
        body = data.draw(_any_bytes)
    elif route == "mmg":
        body = data.draw(_mmg)
    elif route == "firetext":
        body = data.draw(_firetext)
    else:
        message = data.draw(_sns)
        signed = data.draw(st.sampled_from([True, True, False]))
        signable = message["Type"] in SIGNED_FIELDS  # SNS signs only its own message types
        body = (signer.sign(message) if signed and signable else json.dumps(message)).encode()
    content_type = {"mmg": "application/json", "firetext": "application/x-www-form-urlencoded",
                    "ses": "text/plain; charset=UTF-8"}[route]  # fmt: skip
    response = http.post(
        sns_gateway + paths[route],
        content=body,
        headers={"Authorization": basic(credentials[route]), "Content-Type": content_type},
    )
    event(f"{route} {response.status_code}")  # shown by --hypothesis-show-statistics
    assert response.status_code != 500, response.text
    assert response.status_code != 401  # the credential was right: the body was read
    conforms(response, paths[route], "post")


def test_a_signed_receipt_for_no_notification_is_kept_not_refused(
    stack: Stack, sns_gateway: str, signer: Signer
) -> None:
    """A receipt naming no notification of Herald's is still Herald's to drop after keeping it: SNS
    would otherwise post it again for hours."""
    event = {"eventType": "Delivery", "mail": {"tags": {"notification_id": [str(uuid.uuid4())]}}}
    message = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": "arn:aws:sns:eu-west-2:1:ses",
               "Message": json.dumps(event), "Timestamp": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    response = httpx.post(
        f"{sns_gateway}/notifications/email/ses",
        content=signer.sign(message),
        headers={"Authorization": basic(stack.settings.ses_callback_credential), "Content-Type": "text/plain"},
    )
    assert (response.status_code, response.json()) == (200, {"result": "success"})
