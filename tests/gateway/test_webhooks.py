"""Providers' receipts in their own formats, through the gateway's webhooks, to the durable receipt path."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, text

from herald.domain.apikeys import create_token, split_key
from services.gateway.app import start_gateway
from services.gateway.webhooks import amazon_sns_url
from tests.gateway.conftest import Stack
from tests.support import free_port, wait_for


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"herald:{password}".encode()).decode()}


def sending(engine: Engine, stack: Stack, kind: str) -> str:
    """A notification handed to a provider and waiting for its receipt."""
    notification_id = str(uuid.uuid4())
    template = stack.demo.sms_template_id if kind == "sms" else stack.demo.email_template_id
    to = "447700900123" if kind == "sms" else "someone@example.com"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at)'
                " VALUES (:id, :s, :t, 1, 'normal', :kind, :to, 'Hi', 'sending', 1, :at)"
            ),
            {"id": notification_id, "s": stack.demo.service_id, "t": template, "kind": kind, "to": to,
             "at": datetime.now(UTC)},
        )  # fmt: skip
    return notification_id


def status_of(stack: Stack, notification_id: str) -> str:
    key = split_key(stack.demo.live_key)
    answer = httpx.get(
        f"{stack.base_url}/v2/notifications/{notification_id}",
        headers={"Authorization": f"Bearer {create_token(key.secret, key.service_id)}"},
    )
    return str(answer.json()["status"])


def final(stack: Stack, notification_id: str) -> str:
    def moved() -> str | None:
        status = status_of(stack, notification_id)
        return status if status != "sending" else None

    return wait_for(moved)


def ses_notification(notification_id: str, event: str, bounce_type: str = "") -> str:
    message = {"eventType": event, "mail": {"messageId": "ses-1", "tags": {"notification_id": [notification_id]}}}
    if bounce_type:
        message["bounce"] = {"bounceType": bounce_type}
    return json.dumps({"Type": "Notification", "MessageId": "sns-1", "Message": json.dumps(message)})


def test_mmg_receipt(stack: Stack, engine: Engine) -> None:
    notification_id = sending(engine, stack, "sms")
    url = f"{stack.base_url}/notifications/sms/mmg"
    body = {"reference": "mmg-1", "CID": notification_id, "MSISDN": "447700900123", "status": "3", "substatus": "2"}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers=basic("wrong")).status_code == 401
    missing = httpx.post(url, json={"status": "3"}, headers=basic(stack.settings.mmg_callback_credential))
    assert (missing.status_code, missing.json()) == (
        400,
        {"result": "error", "message": ["MMG callback failed: CID missing"]},
    )
    answer = httpx.post(url, json=body, headers=basic(stack.settings.mmg_callback_credential))
    assert (answer.status_code, answer.json()) == (200, {"result": "success"})
    assert final(stack, notification_id) == "delivered"


def test_firetext_receipt(stack: Stack, engine: Engine) -> None:
    notification_id = sending(engine, stack, "sms")
    answer = httpx.post(
        f"{stack.base_url}/notifications/sms/firetext",
        data={"mobile": "447700900123", "status": "1", "time": "2026-01-01 10:00:00", "reference": notification_id,
              "code": "101"},
        headers=basic(stack.settings.firetext_callback_credential),
    )  # fmt: skip
    assert (answer.status_code, answer.json()) == (200, {"result": "success"})
    assert final(stack, notification_id) == "permanent-failure"
    not_ours = httpx.post(
        f"{stack.base_url}/notifications/sms/firetext",
        data={"status": "0", "reference": "not-a-uuid"},
        headers=basic(stack.settings.firetext_callback_credential),
    )
    assert not_ours.status_code == 400


def test_ses_receipt_through_sns(stack: Stack, engine: Engine) -> None:
    notification_id = sending(engine, stack, "email")
    answer = httpx.post(
        f"{stack.base_url}/notifications/email/ses",
        content=ses_notification(notification_id, "Bounce", "Permanent"),
        headers={**basic(stack.settings.ses_callback_credential), "Content-Type": "text/plain; charset=UTF-8"},
    )
    assert (answer.status_code, answer.json()) == (200, {"result": "success"})
    assert final(stack, notification_id) == "permanent-failure"


def test_sns_subscription_confirmation(stack: Stack) -> None:
    assert amazon_sns_url("https://sns.eu-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=x")
    assert not amazon_sns_url("https://sns.eu-west-2.amazonaws.com.example.org/")
    assert not amazon_sns_url("http://sns.eu-west-2.amazonaws.com/")
    headers = basic(stack.settings.ses_callback_credential)
    confirmation = {"Type": "SubscriptionConfirmation", "TopicArn": "arn:aws:sns:eu-west-2:1:ses", "Token": "t"}
    refused = httpx.post(
        f"{stack.base_url}/notifications/email/ses",
        content=json.dumps({**confirmation, "SubscribeURL": f"{stack.base_url}/_status"}),
        headers=headers,
    )
    assert refused.status_code == 400  # only Amazon SNS's own URL is fetched
    # A gateway that may fetch the test's local URL, to see the confirmation made.
    s = replace(stack.settings, gateway_address=f"127.0.0.1:{free_port()}")
    stop = start_gateway(s, may_fetch=lambda url: True)
    try:
        confirmed = httpx.post(
            f"http://{s.gateway_address}/notifications/email/ses",
            content=json.dumps({**confirmation, "SubscribeURL": f"{stack.base_url}/_status"}),
            headers=headers,
        )
        unreachable = httpx.post(
            f"http://{s.gateway_address}/notifications/email/ses",
            content=json.dumps({**confirmation, "SubscribeURL": "http://127.0.0.1:1/confirm"}),
            headers=headers,
        )
    finally:
        stop()
    assert (confirmed.status_code, confirmed.json()) == (200, {"result": "success"})
    assert unreachable.status_code == 503
