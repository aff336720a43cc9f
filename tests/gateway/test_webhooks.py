"""Providers' receipts in their own formats, through the gateway's webhooks, to the durable receipt path."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine

from services.gateway.app import start_gateway
from services.gateway.webhooks import amazon_sns_url
from tests.gateway.conftest import Signer, Stack, sending, status_of
from tests.support import free_port, wait_for


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"herald:{password}".encode()).decode()}


def final(stack: Stack, notification_id: str) -> str:
    def moved() -> str | None:
        status = status_of(stack, notification_id)
        return status if status != "sending" else None

    return wait_for(moved)


def ses_event(notification_id: str, event: str, bounce_type: str = "") -> dict[str, str]:
    message: dict[str, Any] = {
        "eventType": event,
        "mail": {"messageId": "ses-1", "tags": {"notification_id": [notification_id]}},
    }
    if bounce_type:
        message["bounce"] = {"bounceType": bounce_type}
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:eu-west-2:1:ses",
        "Message": json.dumps(message),
        "Timestamp": datetime.now(UTC).isoformat(),
    }


def test_mmg_receipt(stack: Stack, engine: Engine) -> None:
    notification_id = sending(engine, stack, "sms", "447700900123")
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
    notification_id = sending(engine, stack, "sms", "447700900123")
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


def test_ses_receipt_through_signed_sns(stack: Stack, engine: Engine, signer: Signer, sns_gateway: str) -> None:
    notification_id = sending(engine, stack, "email", "someone@example.com")
    headers = {**basic(stack.settings.ses_callback_credential), "Content-Type": "text/plain; charset=UTF-8"}
    url = f"{sns_gateway}/notifications/email/ses"
    event = ses_event(notification_id, "Bounce", "Permanent")
    forged = json.loads(signer.sign(event))
    forged["Message"] = forged["Message"].replace("Permanent", "Transient")
    assert httpx.post(url, content=json.dumps(forged), headers=headers).status_code == 403
    unsigned = httpx.post(url, content=json.dumps(event), headers=headers)
    assert (unsigned.status_code, unsigned.json()["result"]) == (403, "error")
    # Only Amazon SNS's certificates count on a gateway as configured for production.
    production = httpx.post(f"{stack.base_url}/notifications/email/ses", content=signer.sign(event), headers=headers)
    assert production.status_code == 403

    answer = httpx.post(url, content=signer.sign(event), headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"result": "success"})
    assert final(stack, notification_id) == "permanent-failure"


def test_sns_subscription_confirmation(stack: Stack, signer: Signer, sns_gateway: str) -> None:
    assert amazon_sns_url("https://sns.eu-west-2.amazonaws.com/?Action=ConfirmSubscription&Token=x")
    assert not amazon_sns_url("https://sns.eu-west-2.amazonaws.com.example.org/")
    assert not amazon_sns_url("http://sns.eu-west-2.amazonaws.com/")
    headers = basic(stack.settings.ses_callback_credential)
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "t",
        "TopicArn": "arn:aws:sns:eu-west-2:1:ses",
        "Message": "You have chosen to subscribe to the topic",
        "Timestamp": datetime.now(UTC).isoformat(),
    }
    url = f"{sns_gateway}/notifications/email/ses"
    confirmed = httpx.post(
        url, content=signer.sign({**confirmation, "SubscribeURL": f"{stack.base_url}/_status"}), headers=headers
    )
    assert (confirmed.status_code, confirmed.json()) == (200, {"result": "success"})
    gone = httpx.post(
        url, content=signer.sign({**confirmation, "SubscribeURL": "http://127.0.0.1:1/x"}), headers=headers
    )
    assert gone.status_code == 503


def test_what_callbacks_cannot_keep_is_a_503_so_the_provider_posts_it_again(stack: Stack) -> None:
    s = replace(
        stack.settings,
        gateway_address=f"127.0.0.1:{free_port()}",
        callbacks_address=f"127.0.0.1:{free_port()}",  # nothing listens there
    )
    stop = start_gateway(s)
    try:
        base, auth = f"http://{s.gateway_address}", basic(s.mmg_callback_credential)
        receipt = httpx.post(
            f"{base}/notifications/sms/mmg", json={"CID": str(uuid.uuid4()), "status": "3"}, headers=auth, timeout=30
        )
        text = httpx.post(
            f"{base}/notifications/sms/receive/mmg",
            json={"MSISDN": "447700900123", "Number": "447700900000", "ID": "mmg-1", "Message": "Hi"},
            headers=auth,
            timeout=30,
        )
    finally:
        stop()
    assert (receipt.status_code, receipt.json()) == (503, {"result": "error", "message": "Receipt not kept, try again"})
    assert (text.status_code, text.json()) == (503, {"result": "error", "message": "Message not kept, try again"})
