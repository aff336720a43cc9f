"""The provider simulator posts its receipts as real providers do: MMG's JSON, Firetext's form and SES's
events in Amazon SNS messages signed as SNS signs them, each with its provider's credential, posted again
until answered 200. Through the gateway's webhooks they move Herald's notifications; against a recording
server, their exact formats and the retries show."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from herald.providers import EmailRequest, FiretextClient, MmgClient, SmsRequest
from herald.providers._sim_receipts import SNS_CERTIFICATE_PATH
from herald.providers.ses import SesClient
from herald.providers.simulator import ProviderSimulator
from herald.settings import Settings
from services.gateway.sns import NotSigned, SnsVerifier
from services.gateway.webhooks import amazon_sns_url, sns_urls
from tests.gateway.conftest import Stack, sending, status_of
from tests.support import free_port, wait_for

DEV = Settings()
CREDENTIALS = {"mmg": "mmg-secret", "firetext": "firetext-secret", "ses": "ses-secret"}


def webhook_200s(function: str, module: str) -> float:
    labels = {"method": "POST", "module": module, "function": function, "status": "200"}
    return REGISTRY.get_sample_value("herald_api_total", labels) or 0.0


def sms(reference: str, to: str) -> SmsRequest:
    return SmsRequest(reference=reference, to=to, body="Your code is 1", sender="Herald")


def email(reference: str, to: str) -> EmailRequest:
    return EmailRequest(reference, to, "Subject", "Body", "<p>Body</p>", "herald@example.com")


def test_receipts_move_notifications_through_the_gateways_webhooks(stack: Stack, engine: Engine) -> None:
    sim = stack.simulator
    before = {
        "mmg": webhook_200s("process_mmg_response", "notifications_sms_callback"),
        "firetext": webhook_200s("process_firetext_response", "notifications_sms_callback"),
        "ses": webhook_200s("process_ses_response", "notifications_ses_callback"),
    }
    cases = [
        ("mmg", "447700900123", "delivered"),
        ("mmg", "447700900002", "permanent-failure"),
        ("firetext", "447700900123", "delivered"),
        ("firetext", "447700900003", "temporary-failure"),
        ("ses", "someone@example.com", "delivered"),
        ("ses", "perm-fail@example.com", "permanent-failure"),
    ]
    expected: dict[str, str] = {}
    with (
        MmgClient(sim.url, api_key="k") as mmg,
        FiretextClient(sim.url, api_key="k") as firetext,
        SesClient(sim.url, access_key_id=DEV.ses_access_key_id, secret_access_key=DEV.ses_secret_access_key) as ses,
    ):
        for provider, to, status in cases:
            notification_id = sending(engine, stack, "email" if provider == "ses" else "sms", to)
            if provider == "mmg":
                mmg.send_sms(sms(notification_id, to))
            elif provider == "firetext":
                firetext.send_sms(sms(notification_id, to))
            else:
                ses.send_email(email(notification_id, to))
            expected[notification_id] = status

    def all_final() -> dict[str, str] | None:
        found = {n: status_of(stack, n) for n in expected}
        return found if "sending" not in found.values() else None

    assert wait_for(all_final, timeout=20) == expected
    # Each receipt came through the provider's own webhook, not over gRPC.
    assert webhook_200s("process_mmg_response", "notifications_sms_callback") >= before["mmg"] + 2
    assert webhook_200s("process_firetext_response", "notifications_sms_callback") >= before["firetext"] + 2
    assert webhook_200s("process_ses_response", "notifications_ses_callback") >= before["ses"] + 2
    assert httpx.get(f"{sim.url}{SNS_CERTIFICATE_PATH}").content.startswith(b"-----BEGIN CERTIFICATE-----")


def test_the_sns_subscription_is_confirmed_through_the_gateway(stack: Stack) -> None:
    """The simulator posted SNS's SubscriptionConfirmation when it started (before the gateway was up, so
    again until taken); the gateway checked its signature and fetched its SubscribeURL."""
    assert wait_for(lambda: stack.simulator.stats()["sns_subscription_confirmed"] or None, timeout=20)


@dataclass
class Recorder:
    """An HTTP server that records every post and answers with the next of `answers` (then 200)."""

    answers: list[int] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with recorder.lock:
                    recorder.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = recorder.answers.pop(0) if recorder.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def posted(self, path: str, sns_type: str = "Notification") -> list[tuple[dict[str, str], bytes]]:
        """Posts to `path`; to SES's, only SNS messages of `sns_type`."""
        with self.lock:
            return [
                (headers, body)
                for p, headers, body in self.posts
                if p == path and headers.get("x-amz-sns-message-type", sns_type) == sns_type
            ]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.server.shutdown()


def password(headers: dict[str, str]) -> str:
    scheme, _, encoded = headers["authorization"].partition(" ")
    assert scheme == "Basic"
    return base64.b64decode(encoded).decode().partition(":")[2]


def simulator(recorder: Recorder, **options: Any) -> ProviderSimulator:
    return ProviderSimulator(
        "127.0.0.1",
        0,
        f"127.0.0.1:{free_port()}",  # no callbacks: receipts go over HTTP only
        0.01,
        receipts_url=recorder.url,
        callback_credentials=CREDENTIALS,
        receipt_backoff=0.05,
        **options,
    )


def subscriptions(recorder: Recorder) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in recorder.posted("/notifications/email/ses", "SubscriptionConfirmation")]


@pytest.mark.parametrize("version", ["1", "2"])
def test_each_providers_format_and_credential_and_a_retry_until_200(recorder: Recorder, version: str) -> None:
    reference = {name: str(uuid.uuid4()) for name in ("mmg", "firetext", "ses")}
    with simulator(recorder, sns_signature_version=version) as sim:
        # SNS's SubscriptionConfirmation comes first, answered 200; then the first two receipts' posts fail
        # and are posted again.
        wait_for(lambda: subscriptions(recorder) or None, timeout=10)
        with recorder.lock:
            recorder.answers = [503, 500]
        with (
            MmgClient(sim.url, api_key="k") as mmg,
            FiretextClient(sim.url, api_key="k") as firetext,
            SesClient(sim.url, access_key_id=DEV.ses_access_key_id, secret_access_key=DEV.ses_secret_access_key) as ses,
        ):
            mmg.send_sms(sms(reference["mmg"], "447700900002"))
            firetext.send_sms(sms(reference["firetext"], "447700900003"))
            ses.send_email(email(reference["ses"], "temp-fail@example.com"))
        wait_for(lambda: sim.stats()["receipts_posted"] == 3 or None, timeout=10)
        assert sim.stats()["receipts_dropped"] == 0
        paths = ("/notifications/sms/mmg", "/notifications/sms/firetext", "/notifications/email/ses")
        assert sum(len(recorder.posted(path)) for path in paths) == 5
        assert len(subscriptions(recorder)) == 1
        # This recorder is no gateway: it never fetches the SubscribeURL.
        assert not sim.stats()["sns_subscription_confirmed"]

        [(headers, body)] = {b: (h, b) for h, b in recorder.posted("/notifications/sms/mmg")}.values()
        assert headers["content-type"] == "application/json" and password(headers) == "mmg-secret"
        mmg_receipt = json.loads(body)
        assert {k: mmg_receipt[k] for k in ("CID", "MSISDN", "status")} == {
            "CID": reference["mmg"],
            "MSISDN": "447700900002",
            "status": "5",
        }
        assert {"reference", "deliverytime"} <= mmg_receipt.keys()

        [(headers, body)] = {b: (h, b) for h, b in recorder.posted("/notifications/sms/firetext")}.values()
        assert headers["content-type"] == "application/x-www-form-urlencoded"
        assert password(headers) == "firetext-secret"
        form = dict(parse_qsl(body.decode()))
        assert {k: form[k] for k in ("reference", "mobile", "status", "code")} == {
            "reference": reference["firetext"],
            "mobile": "447700900003",
            "status": "1",
            "code": "102",
        }

        [(headers, body)] = {b: (h, b) for h, b in recorder.posted("/notifications/email/ses")}.values()
        assert headers["content-type"] == "text/plain; charset=UTF-8" and password(headers) == "ses-secret"
        assert headers["x-amz-sns-message-type"] == "Notification"
        envelope = json.loads(body)
        assert (envelope["Type"], envelope["SignatureVersion"]) == ("Notification", version)
        assert envelope["SigningCertURL"] == sim.url + SNS_CERTIFICATE_PATH
        event = json.loads(envelope["Message"])
        assert event["eventType"] == "Bounce" and event["bounce"]["bounceType"] == "Transient"
        assert event["mail"]["tags"]["notification_id"] == [reference["ses"]]
        assert event["mail"]["destination"] == ["temp-fail@example.com"]

        # The signature is SNS's as the gateway checks it, once the simulator's certificate is trusted.
        asyncio.run(SnsVerifier(sns_urls(sim.url)).verify(envelope))
        with pytest.raises(NotSigned):  # a production gateway trusts only Amazon SNS's certificates
            asyncio.run(SnsVerifier(amazon_sns_url).verify(envelope))
        with pytest.raises(NotSigned):
            asyncio.run(SnsVerifier(sns_urls(sim.url)).verify({**envelope, "Message": envelope["Message"][:-1]}))


def test_the_subscription_confirmation_is_snss(recorder: Recorder) -> None:
    with simulator(recorder) as sim:
        [confirmation] = wait_for(lambda: subscriptions(recorder) or None, timeout=10)
        assert confirmation["Type"] == "SubscriptionConfirmation"
        assert confirmation["SubscribeURL"].startswith(
            f"{sim.url}/_sns/confirm-subscription?Action=ConfirmSubscription"
        )
        asyncio.run(SnsVerifier(sns_urls(sim.url)).verify(confirmation))
        [(headers, _)] = recorder.posted("/notifications/email/ses", "SubscriptionConfirmation")
        assert password(headers) == "ses-secret"
        assert not sim.stats()["sns_subscription_confirmed"]
        answer = httpx.get(confirmation["SubscribeURL"])
        assert answer.status_code == 200 and b"<SubscriptionArn>" in answer.content
        assert sim.stats()["sns_subscription_confirmed"]


def test_the_trusted_prefix_is_a_whole_origin() -> None:
    trusted = sns_urls("http://127.0.0.1:6011")
    assert trusted("http://127.0.0.1:6011/_sns/SimpleNotificationService-simulator.pem")
    assert not trusted("http://127.0.0.1:60110/_sns/SimpleNotificationService-simulator.pem")
    assert trusted("https://sns.eu-west-2.amazonaws.com/SimpleNotificationService-1.pem")
    assert sns_urls("") is amazon_sns_url


def test_a_receipt_never_answered_200_is_dropped_after_the_retry_window(recorder: Recorder) -> None:
    recorder.answers = [401] * 1000  # a wrong credential, say: a provider keeps trying, for a while
    with simulator(recorder, receipt_retry_seconds=0.5) as sim:
        with MmgClient(sim.url, api_key="k") as mmg:
            mmg.send_sms(sms(str(uuid.uuid4()), "447700900123"))
        wait_for(lambda: sim.stats()["receipts_dropped"] == 1 or None, timeout=10)
        assert sim.stats()["receipts_posted"] == 0
        assert len(recorder.posted("/notifications/sms/mmg")) >= 2
