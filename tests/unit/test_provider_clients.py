"""Herald's provider clients against httpx.MockTransport: wire format and error mapping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from herald.providers import (
    EmailProvider,
    EmailRequest,
    FiretextClient,
    MmgClient,
    ProviderError,
    SesClient,
    SmsProvider,
    SmsRequest,
)

BASE_URL = "http://provider.test"
RECIPIENT = "447700900123"
BODY = "Your secret code is 123456"
EMAIL_TO = "someone@example.com"

SMS = SmsRequest(reference="ref-1", to=RECIPIENT, body=BODY, sender="HERALD")
EMAIL = EmailRequest(
    reference="ref-2",
    to=EMAIL_TO,
    subject="Subject",
    body=BODY,
    html=f"<p>{BODY}</p>",
    from_address="noreply@herald.test",
)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.response


def mmg_with(handler: Handler, **kwargs: Any) -> MmgClient:
    return MmgClient(BASE_URL, transport=httpx.MockTransport(handler), **kwargs)


def firetext_with(handler: Handler, **kwargs: Any) -> FiretextClient:
    return FiretextClient(BASE_URL, transport=httpx.MockTransport(handler), **kwargs)


def ses_with(handler: Handler, **kwargs: Any) -> SesClient:
    return SesClient(BASE_URL, transport=httpx.MockTransport(handler), **kwargs)


def send_with(provider: str, handler: Handler) -> str:
    """Send the canned message through ``provider``'s client, closing it afterwards."""
    if provider == "mmg":
        with mmg_with(handler) as mmg:
            return mmg.send_sms(SMS)
    if provider == "firetext":
        with firetext_with(handler) as firetext:
            return firetext.send_sms(SMS)
    with ses_with(handler) as ses:
        return ses.send_email(EMAIL)


SUCCESS = {
    "mmg": {"reference": "mmg-id"},
    "firetext": {"code": 0, "description": "SMS successfully queued"},
    "ses": {"MessageId": "ses-id"},
}
PROVIDERS = sorted(SUCCESS)


def test_mmg_sends_json_with_basic_key_and_returns_its_reference() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["mmg"]))
    with mmg_with(recorder, api_key="secret") as mmg:
        assert mmg.name == "mmg"
        assert mmg.send_sms(SMS) == "mmg-id"

    [request] = recorder.requests
    assert request.method == "POST"
    assert request.url == f"{BASE_URL}/mmg/send"
    assert request.headers["Authorization"] == "Basic secret"
    assert request.headers["Content-Type"] == "application/json"
    assert orjson.loads(request.content) == {
        "reqType": "BULK",
        "MSISDN": RECIPIENT,
        "msg": BODY,
        "sender": "HERALD",
        "cid": "ref-1",
        "multi": True,
    }


def test_mmg_without_key_sends_no_authorization() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["mmg"]))
    with mmg_with(recorder) as mmg:
        mmg.send_sms(SMS)
    assert "Authorization" not in recorder.requests[0].headers


def test_firetext_sends_form_and_returns_herald_reference() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["firetext"]))
    with firetext_with(recorder, api_key="secret") as firetext:
        assert firetext.name == "firetext"
        assert firetext.send_sms(SMS) == "ref-1"

    [request] = recorder.requests
    assert request.url == f"{BASE_URL}/firetext/send"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode()) == {
        "apiKey": ["secret"],
        "from": ["HERALD"],
        "to": [RECIPIENT],
        "message": [BODY],
        "reference": ["ref-1"],
    }


def test_firetext_non_zero_code_is_a_permanent_refusal() -> None:
    recorder = Recorder(httpx.Response(200, json={"code": 1, "description": "Authentication failed"}))
    with firetext_with(recorder) as firetext, pytest.raises(ProviderError) as caught:
        firetext.send_sms(SMS)
    assert caught.value.retryable is False
    assert caught.value.provider == "firetext"


def test_ses_sends_send_email_shape_and_returns_message_id() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["ses"]))
    with ses_with(recorder) as ses:
        assert ses.name == "ses"
        assert ses.send_email(EMAIL) == "ses-id"

    [request] = recorder.requests
    assert request.url == f"{BASE_URL}/ses/send"
    assert orjson.loads(request.content) == {
        "Source": "noreply@herald.test",
        "Destination": {"ToAddresses": [EMAIL_TO]},
        "Message": {
            "Subject": {"Data": "Subject"},
            "Body": {"Text": {"Data": BODY}, "Html": {"Data": f"<p>{BODY}</p>"}},
        },
        "reference": "ref-2",
    }


def test_ses_passes_reply_to_when_set() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["ses"]))
    with ses_with(recorder) as ses:
        ses.send_email(
            EmailRequest(
                reference="r",
                to=EMAIL_TO,
                subject="s",
                body="b",
                html="<p>b</p>",
                from_address="noreply@herald.test",
                reply_to="help@herald.test",
            )
        )
    assert orjson.loads(recorder.requests[0].content)["ReplyToAddresses"] == ["help@herald.test"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (429, True),
        (400, False),
        (401, False),
        (404, False),
    ],
)
def test_http_status_maps_to_retryable_flag(provider: str, status: int, retryable: bool) -> None:
    with pytest.raises(ProviderError) as caught:
        send_with(provider, Recorder(httpx.Response(status, json={"error": "nope"})))
    assert caught.value.retryable is retryable
    assert caught.value.status_code == status
    assert caught.value.provider == provider


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("hung up")],
    ids=["connect", "timeout", "protocol"],
)
def test_transport_failures_are_retryable(provider: str, error: httpx.TransportError) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ProviderError) as caught:
        send_with(provider, fail)
    assert caught.value.retryable is True
    assert caught.value.status_code is None
    assert caught.value.__cause__ is error


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "response",
    [httpx.Response(200, content=b"<html>oops</html>"), httpx.Response(200, json=["not", "an", "object"])],
    ids=["not-json", "not-object"],
)
def test_malformed_success_is_not_retryable(provider: str, response: httpx.Response) -> None:
    # The provider answered 2xx, so it may hold the message: a resend could deliver it twice.
    with pytest.raises(ProviderError) as caught:
        send_with(provider, Recorder(response))
    assert caught.value.retryable is False


@pytest.mark.parametrize(("provider", "answer"), [("mmg", {"ref": "x"}), ("ses", {"MessageId": ""})])
def test_answer_without_provider_id_is_not_retryable(provider: str, answer: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        send_with(provider, Recorder(httpx.Response(200, json=answer)))
    assert caught.value.retryable is False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failures_never_reveal_recipient_or_body(provider: str, caplog: pytest.LogCaptureFixture) -> None:
    echoing = Recorder(httpx.Response(400, json={"error": f"bad number {RECIPIENT} {EMAIL_TO} {BODY}"}))
    with caplog.at_level(logging.DEBUG, logger="herald.providers"), pytest.raises(ProviderError) as caught:
        send_with(provider, echoing)

    shown = str(caught.value) + caplog.text
    for secret in (RECIPIENT, EMAIL_TO, BODY):
        assert secret not in shown
    assert "ref-" in caplog.text


def test_one_pooled_client_is_reused_and_close_closes_it() -> None:
    recorder = Recorder(httpx.Response(200, json=SUCCESS["mmg"]))
    mmg = mmg_with(recorder)
    mmg.send_sms(SMS)
    mmg.send_sms(SMS)
    mmg.close()

    assert len(recorder.requests) == 2
    with pytest.raises(RuntimeError):
        mmg.send_sms(SMS)


def test_clients_satisfy_the_provider_protocols() -> None:
    transport = httpx.MockTransport(Recorder(httpx.Response(200)))
    sms_providers: list[SmsProvider] = [
        MmgClient(BASE_URL, transport=transport),
        FiretextClient(BASE_URL, transport=transport),
    ]
    email_provider: EmailProvider = SesClient(BASE_URL, transport=transport)
    assert [p.name for p in sms_providers] == ["mmg", "firetext"]
    assert email_provider.name == "ses"
    for client in [*sms_providers, email_provider]:
        assert isinstance(client, MmgClient | FiretextClient | SesClient)
        client.close()
