"""Herald's provider clients against the real provider simulator, over HTTP and gRPC on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from herald.providers import (
    EmailRequest,
    FiretextClient,
    MmgClient,
    ProviderError,
    SmsRequest,
)
from herald.providers.ses import SesClient
from herald.providers.simulator import SES_MAX_MESSAGE_BYTES, SES_SEND_EMAIL_PATH, ProviderSimulator
from herald.settings import Settings
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc
from tests.support import free_port

pytestmark = pytest.mark.timeout(30)

RECEIPT_DELAY = 0.05
REPO_ROOT = Path(__file__).resolve().parents[2]
DEV = Settings()
GOOD_SMS = "447700900123"


def wait_for(condition: Callable[[], Any], timeout: float = 3.0, interval: float = 0.01) -> Any:
    """Poll until ``condition()`` is truthy and return it, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


class FakeCallbacks(callbacks_pb2_grpc.CallbacksServicer):
    """Records every receipt the simulator reports; ``refuse`` holds status codes to answer first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._receipts: list[callbacks_pb2.DeliveryReceipt] = []
        self.refuse: list[grpc.StatusCode] = []
        self.calls = 0

    def ReportDelivery(
        self, request: callbacks_pb2.DeliveryReceipt, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        with self._lock:
            self.calls += 1
            refusal = self.refuse.pop(0) if self.refuse else None
            if refusal is None:
                self._receipts.append(request)
        if refusal is not None:
            context.abort(refusal, "refused by the test")
        return callbacks_pb2.ReportDeliveryResponse(notification_id=request.reference)

    def ReceiveText(
        self, request: callbacks_pb2.InboundText, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReceiveTextResponse:
        # The simulator posts received texts to the gateway's webhooks, never here (test_inbound*.py).
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not a received-texts test")
        raise AssertionError("unreachable")

    def receipts_for(self, reference: str) -> list[callbacks_pb2.DeliveryReceipt]:
        with self._lock:
            return [r for r in self._receipts if r.reference == reference]

    def clear(self) -> None:
        with self._lock:
            self._receipts.clear()
            self.refuse.clear()
            self.calls = 0


def start_callbacks_server(servicer: FakeCallbacks, port: int = 0) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    callbacks_pb2_grpc.add_CallbacksServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


@pytest.fixture(scope="module")
def callbacks() -> Iterator[tuple[FakeCallbacks, int]]:
    servicer = FakeCallbacks()
    server, port = start_callbacks_server(servicer)
    yield servicer, port
    server.stop(grace=None)


@pytest.fixture(scope="module")
def simulator(callbacks: tuple[FakeCallbacks, int]) -> Iterator[ProviderSimulator]:
    with ProviderSimulator("127.0.0.1", 0, f"127.0.0.1:{callbacks[1]}", RECEIPT_DELAY) as sim:
        yield sim


@pytest.fixture
def fake_callbacks(callbacks: tuple[FakeCallbacks, int]) -> FakeCallbacks:
    return callbacks[0]


@pytest.fixture(scope="module")
def control_client(simulator: ProviderSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url, timeout=5.0) as client:
        yield client


@pytest.fixture
def control(control_client: httpx.Client, fake_callbacks: FakeCallbacks) -> httpx.Client:
    """A plain HTTP client on the simulator, which starts every test from a clean slate."""
    control_client.post("/_reset").raise_for_status()
    fake_callbacks.clear()
    return control_client


# The clients are long-lived, as in the dispatcher; building one per test would also cost an SSL context each.
@pytest.fixture(scope="module")
def mmg(simulator: ProviderSimulator) -> Iterator[MmgClient]:
    with MmgClient(simulator.url, api_key="mmg-key") as client:
        yield client


@pytest.fixture(scope="module")
def firetext(simulator: ProviderSimulator) -> Iterator[FiretextClient]:
    with FiretextClient(simulator.url, api_key="firetext-key") as client:
        yield client


@pytest.fixture(scope="module")
def ses(simulator: ProviderSimulator) -> Iterator[SesClient]:
    # The development keys in Settings are the ones the simulator accepts by default.
    with SesClient(
        simulator.url, access_key_id=DEV.ses_access_key_id, secret_access_key=DEV.ses_secret_access_key
    ) as client:
        yield client


def new_reference() -> str:
    return str(uuid.uuid4())


def sms(to: str, reference: str | None = None) -> SmsRequest:
    return SmsRequest(reference=reference or new_reference(), to=to, body="Your code is 123456", sender="HERALD")


def email(to: str, reference: str | None = None, body: str = "Hello there") -> EmailRequest:
    return EmailRequest(
        reference=reference or new_reference(),
        to=to,
        subject="Hello",
        body=body,
        html="<p>Hello there</p>",
        from_address="noreply@herald.test",
        reply_to="help@herald.test",
        unsubscribe_url="https://herald.test/unsubscribe",
    )


def stats(control: httpx.Client) -> dict[str, Any]:
    response = control.get("/_stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def set_control(control: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = control.post("/_control", json=fields)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def sender_for(provider: str, mmg: MmgClient, firetext: FiretextClient, ses: SesClient) -> Callable[[str, str], str]:
    if provider == "mmg":
        return lambda to, ref: mmg.send_sms(sms(to, ref))
    if provider == "firetext":
        return lambda to, ref: firetext.send_sms(sms(to, ref))
    return lambda to, ref: ses.send_email(email(to, ref))


GOOD_RECIPIENT = {"mmg": GOOD_SMS, "firetext": GOOD_SMS, "ses": "someone@example.com"}


def signed_ses_post(
    url: str,
    body: bytes,
    *,
    key_id: str = DEV.ses_access_key_id,
    secret: str = DEV.ses_secret_access_key,
    tamper: Callable[[dict[str, str]], None] | None = None,
) -> httpx.Response:
    """POST ``body`` to SendEmail signed with SigV4 as botocore signs it; ``tamper`` may edit the headers."""
    request = AWSRequest(
        method="POST", url=f"{url}{SES_SEND_EMAIL_PATH}", data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(key_id, secret), "ses", "eu-west-2").add_auth(request)
    headers = dict(request.headers.items())
    if tamper is not None:
        tamper(headers)
    return httpx.post(f"{url}{SES_SEND_EMAIL_PATH}", content=body, headers=headers, timeout=5.0)


def status_for_declared_length(simulator: ProviderSimulator, path: str, length: int) -> int:
    """The HTTP status answered to a POST that declares ``length`` bytes of body and sends none."""
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {length}\r\n\r\n".encode())
        status_line = conn.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def ses_body(**overrides: Any) -> bytes:
    body: dict[str, Any] = {
        "FromEmailAddress": "noreply@herald.test",
        "Destination": {"ToAddresses": ["someone@example.com"]},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
        "EmailTags": [{"Name": "notification_id", "Value": "ref-raw"}],
    }
    body.update(overrides)
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


# --- sends and receipts ---------------------------------------------------------------------------


@pytest.mark.usefixtures("control")
@pytest.mark.parametrize(
    ("provider", "recipient", "status", "code"),
    [
        ("mmg", "447700900123", "3", ""),
        ("mmg", "447700900003", "4", ""),
        ("mmg", "07833333333", "4", ""),
        ("mmg", "447700900002", "5", ""),
        ("mmg", "07822222222", "5", ""),
        ("firetext", "447700900123", "0", ""),
        ("firetext", "447700900003", "1", "102"),
        ("firetext", "447700900002", "1", "101"),
        ("ses", "someone@example.com", "Delivery", ""),
        ("ses", "temp-fail@simulator.herald", "Bounce", "Transient"),
        ("ses", "perm-fail@simulator.herald", "Bounce", "Permanent"),
    ],
)
def test_send_is_accepted_and_receipt_arrives_in_provider_vocabulary(
    provider: str,
    recipient: str,
    status: str,
    code: str,
    mmg: MmgClient,
    firetext: FiretextClient,
    ses: SesClient,
    fake_callbacks: FakeCallbacks,
) -> None:
    reference = new_reference()

    provider_id = sender_for(provider, mmg, firetext, ses)(recipient, reference)

    assert provider_id
    if provider == "firetext":
        assert provider_id == reference
    [receipt] = wait_for(lambda: fake_callbacks.receipts_for(reference))
    assert (receipt.provider, receipt.reference, receipt.status, receipt.code) == (
        provider,
        reference,
        status,
        code,
    )


def test_receipt_is_not_posted_before_the_delay(
    mmg: MmgClient, fake_callbacks: FakeCallbacks, control: httpx.Client
) -> None:
    reference = new_reference()
    sent_at = time.monotonic()
    mmg.send_sms(sms(GOOD_SMS, reference))
    assert stats(control)["receipts_pending"] == 1
    wait_for(lambda: fake_callbacks.receipts_for(reference))
    assert time.monotonic() - sent_at >= RECEIPT_DELAY
    assert wait_for(lambda: stats(control)["receipts_posted"] == 1)
    assert stats(control)["receipts_pending"] == 0


@pytest.mark.parametrize(
    ("provider", "recipient"),
    [("mmg", "447700900500"), ("firetext", "447700900500"), ("ses", "provider-error@simulator.herald")],
)
def test_provider_error_recipient_gives_retryable_error_and_no_hand_off(
    provider: str,
    recipient: str,
    mmg: MmgClient,
    firetext: FiretextClient,
    ses: SesClient,
    fake_callbacks: FakeCallbacks,
    control: httpx.Client,
) -> None:
    reference = new_reference()

    with pytest.raises(ProviderError) as caught:
        sender_for(provider, mmg, firetext, ses)(recipient, reference)

    assert caught.value.retryable is True
    assert caught.value.status_code == 500
    assert caught.value.provider == provider
    current = stats(control)
    assert (current["sends"], current["requests"]) == ({}, {reference: 1})
    # Receipts fall due in send order, so once a later good send's receipt is in, no other is coming.
    later = new_reference()
    mmg.send_sms(sms(GOOD_SMS, later))
    wait_for(lambda: fake_callbacks.receipts_for(later))
    assert fake_callbacks.receipts_for(reference) == []
    assert wait_for(lambda: stats(control)["receipts_posted"] == 1)


# --- SES: SESv2 SendEmail, SigV4, size ------------------------------------------------------------


def test_ses_email_names_the_notification_in_a_tag(simulator: ProviderSimulator, control: httpx.Client) -> None:
    response = signed_ses_post(simulator.url, ses_body())
    assert response.status_code == 200
    assert response.json()["MessageId"]
    assert stats(control)["sends"] == {"ref-raw": 1}


def test_ses_email_may_name_the_notification_in_a_header_instead(
    simulator: ProviderSimulator, control: httpx.Client
) -> None:
    content = {
        "Simple": {
            "Subject": {"Data": "s"},
            "Body": {"Html": {"Data": "<p>b</p>"}},
            "Headers": [{"Name": "X-Herald-Notification-Id", "Value": "ref-header"}],
        }
    }
    response = signed_ses_post(simulator.url, ses_body(Content=content, EmailTags=None))
    assert response.status_code == 200
    assert stats(control)["sends"] == {"ref-header": 1}


def strip_authorization(headers: dict[str, str]) -> None:
    del headers["Authorization"]


def change_date(headers: dict[str, str]) -> None:
    headers["X-Amz-Date"] = "20200101T000000Z"


@pytest.mark.parametrize(
    ("signing", "code"),
    [
        ({"tamper": strip_authorization}, "MissingAuthenticationTokenException"),
        ({"key_id": "someone-else"}, "UnrecognizedClientException"),
        ({"secret": "wrong-secret"}, "SignatureDoesNotMatch"),
        ({"tamper": change_date}, "IncompleteSignatureException"),
    ],
    ids=["unsigned", "unknown-key", "wrong-secret", "scope-mismatch"],
)
def test_ses_refuses_requests_not_signed_by_the_configured_key(
    signing: dict[str, Any], code: str, simulator: ProviderSimulator, control: httpx.Client
) -> None:
    response = signed_ses_post(simulator.url, ses_body(), **signing)
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == f"{code}:"
    assert stats(control)["total"] == 0


def test_ses_refuses_a_body_changed_after_signing(simulator: ProviderSimulator, control: httpx.Client) -> None:
    body = ses_body()
    request = AWSRequest(method="POST", url=f"{simulator.url}{SES_SEND_EMAIL_PATH}", data=body)
    SigV4Auth(Credentials(DEV.ses_access_key_id, DEV.ses_secret_access_key), "ses", "eu-west-2").add_auth(request)
    tampered = body.replace(b"someone@example.com", b"another@example.com")
    response = httpx.post(
        f"{simulator.url}{SES_SEND_EMAIL_PATH}", content=tampered, headers=dict(request.headers.items())
    )
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "SignatureDoesNotMatch:"


def test_ses_client_with_wrong_keys_gets_a_permanent_refusal(
    simulator: ProviderSimulator, control: httpx.Client
) -> None:
    with (
        SesClient(simulator.url, access_key_id=DEV.ses_access_key_id, secret_access_key="wrong") as client,
        pytest.raises(ProviderError) as caught,
    ):
        client.send_email(email("someone@example.com"))
    assert caught.value.status_code == 403
    assert caught.value.retryable is False
    assert "SignatureDoesNotMatch" in str(caught.value)


def test_simulator_accepts_other_configured_keys(callbacks: tuple[FakeCallbacks, int]) -> None:
    with (
        ProviderSimulator(
            "127.0.0.1", 0, f"127.0.0.1:{callbacks[1]}", 0.0, ses_access_key_id="AKIA1", ses_secret_access_key="s1"
        ) as sim,
        SesClient(sim.url, access_key_id="AKIA1", secret_access_key="s1") as client,
    ):
        assert client.send_email(email("someone@example.com"))


@pytest.mark.timeout(60)
def test_ses_takes_an_email_of_nearly_40_mb(ses: SesClient, control: httpx.Client) -> None:
    big = "x" * (SES_MAX_MESSAGE_BYTES - 1024)
    reference = new_reference()
    assert ses.send_email(email("someone@example.com", reference, body=big))
    assert stats(control)["sends"] == {reference: 1}


def test_ses_refuses_a_message_over_40_mb_without_reading_past_its_limit(
    simulator: ProviderSimulator, control: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The message limit, checked on a small scale.
    monkeypatch.setattr("herald.providers._sim_sends.SES_MAX_MESSAGE_BYTES", 10)

    def content(text: str) -> dict[str, Any]:
        return {"Simple": {"Subject": {"Data": "subject"}, "Body": {"Text": {"Data": text}}}}

    assert signed_ses_post(simulator.url, ses_body(Content=content("abc"))).status_code == 200
    response = signed_ses_post(
        simulator.url, ses_body(Content=content("abcd"), EmailTags=[{"Name": "notification_id", "Value": "r2"}])
    )
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "MessageRejected:"
    # The request limit: a Content-Length past it is refused before the body is read.
    assert status_for_declared_length(simulator, SES_SEND_EMAIL_PATH, 200 * 1024 * 1024) == 413
    assert stats(control)["total"] == 1


@pytest.mark.parametrize(
    ("overrides", "mentions"),
    [
        ({"Destination": {"ToAddresses": []}}, "ToAddresses"),
        ({"Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {}}}}, "Body"),
        ({"Content": {"Raw": {"Data": "TUlNRQ=="}}}, "Simple"),
        ({"EmailTags": None}, "notification_id"),
        ({"FromEmailAddress": None}, "FromEmailAddress"),
    ],
)
def test_ses_bad_requests_get_400_bad_request_exception(
    overrides: dict[str, Any], mentions: str, simulator: ProviderSimulator, control: httpx.Client
) -> None:
    response = signed_ses_post(simulator.url, ses_body(**overrides))
    assert response.status_code == 400
    assert response.headers["x-amzn-ErrorType"] == "BadRequestException:"
    assert mentions in response.json()["message"]
    assert stats(control)["total"] == 0


# --- de-duplication by reference ------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["mmg", "firetext", "ses"])
def test_a_repeated_request_gets_the_first_answer_and_no_second_receipt(
    provider: str,
    mmg: MmgClient,
    firetext: FiretextClient,
    ses: SesClient,
    fake_callbacks: FakeCallbacks,
    control: httpx.Client,
) -> None:
    send = sender_for(provider, mmg, firetext, ses)
    reference = new_reference()

    first = send(GOOD_RECIPIENT[provider], reference)
    again = send(GOOD_RECIPIENT[provider], reference)

    assert again == first
    current = stats(control)
    assert current["sends"] == {reference: 1}
    assert current["requests"] == {reference: 2}
    assert current["duplicates"] == 1
    assert current["total"] == 1
    wait_for(lambda: stats(control)["receipts_posted"] == 1)
    assert len(fake_callbacks.receipts_for(reference)) == 1


def test_providers_do_not_share_what_they_accepted(
    mmg: MmgClient, firetext: FiretextClient, ses: SesClient, control: httpx.Client
) -> None:
    """The same reference taken by MMG and by Firetext is two text messages: two hand-offs."""
    twice, once, by_email = new_reference(), new_reference(), new_reference()

    mmg.send_sms(sms(GOOD_SMS, twice))
    firetext.send_sms(sms(GOOD_SMS, twice))
    mmg.send_sms(sms(GOOD_SMS, once))
    ses.send_email(email("someone@example.com", by_email))

    current = stats(control)
    assert current["sends"] == {twice: 2, once: 1, by_email: 1}
    assert current["duplicates"] == 0
    assert current["total"] == 4
    assert wait_for(lambda: stats(control)["receipts_posted"] == 4)


def test_a_retry_after_a_lost_answer_is_not_a_second_hand_off(
    simulator: ProviderSimulator, mmg: MmgClient, fake_callbacks: FakeCallbacks, control: httpx.Client
) -> None:
    """The dispatcher gives up mid-hand-off, the provider still holds the message, the re-drive is absorbed."""
    set_control(control, fail_next=1, delay=1.0)
    reference = new_reference()

    with MmgClient(simulator.url, timeout=0.2) as impatient, pytest.raises(ProviderError) as caught:
        impatient.send_sms(sms(GOOD_SMS, reference))
    assert caught.value.retryable is True
    assert caught.value.ambiguous is True
    assert caught.value.status_code is None

    mmg.send_sms(sms(GOOD_SMS, reference))
    current = stats(control)
    assert (current["sends"], current["requests"], current["duplicates"]) == ({reference: 1}, {reference: 2}, 1)
    wait_for(lambda: fake_callbacks.receipts_for(reference))


# --- failure injection ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (502, True), (429, True), (400, False), (403, False)])
def test_injected_failures_map_to_retryable_flag(
    status: int, retryable: bool, mmg: MmgClient, control: httpx.Client
) -> None:
    set_control(control, fail_next=2, status=status)
    reference = new_reference()

    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            mmg.send_sms(sms(GOOD_SMS, reference))
        assert caught.value.retryable is retryable
        assert caught.value.status_code == status
    mmg.send_sms(sms(GOOD_SMS, reference))

    current = stats(control)
    assert (current["sends"], current["requests"]) == ({reference: 1}, {reference: 3})


@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequestsException"), (503, "ServiceUnavailable")])
def test_injected_ses_failures_speak_ses_errors(status: int, code: str, ses: SesClient, control: httpx.Client) -> None:
    set_control(control, fail_next=1, status=status, provider="ses")
    with pytest.raises(ProviderError) as caught:
        ses.send_email(email("someone@example.com"))
    assert caught.value.retryable is True
    assert caught.value.status_code == status
    assert code in str(caught.value)


def test_fail_next_defaults_to_503_and_applies_across_providers(
    mmg: MmgClient, ses: SesClient, control: httpx.Client
) -> None:
    set_control(control, fail_next=1)

    with pytest.raises(ProviderError) as caught:
        ses.send_email(email("someone@example.com"))
    assert caught.value.status_code == 503
    assert caught.value.retryable is True
    mmg.send_sms(sms(GOOD_SMS))

    assert stats(control)["total"] == 1


def test_fail_next_may_name_one_provider(mmg: MmgClient, firetext: FiretextClient, control: httpx.Client) -> None:
    set_control(control, fail_next=1, provider="firetext")
    mmg.send_sms(sms(GOOD_SMS))
    with pytest.raises(ProviderError):
        firetext.send_sms(sms(GOOD_SMS))
    firetext.send_sms(sms(GOOD_SMS))
    assert stats(control)["total"] == 2


def test_delayed_answer_succeeds_for_a_patient_client(mmg: MmgClient, control: httpx.Client) -> None:
    set_control(control, fail_next=1, delay=0.2)
    started = time.monotonic()

    mmg.send_sms(sms(GOOD_SMS))

    assert time.monotonic() - started >= 0.2
    assert stats(control)["total"] == 1


def test_fail_all_with_a_status_refuses_every_send_to_that_provider_until_cleared(
    mmg: MmgClient, firetext: FiretextClient, control: httpx.Client
) -> None:
    answer = set_control(control, fail_all="status", status=502, provider="mmg")
    assert answer["fail_all"] == {"mmg": {"mode": "status", "status": 502}}
    reference = new_reference()

    for _ in range(5):
        with pytest.raises(ProviderError) as caught:
            mmg.send_sms(sms(GOOD_SMS, reference))
        assert (caught.value.status_code, caught.value.retryable) == (502, True)
    firetext.send_sms(sms(GOOD_SMS))

    assert set_control(control, fail_all=False, provider="mmg")["fail_all"] == {}
    mmg.send_sms(sms(GOOD_SMS, reference))
    current = stats(control)
    assert current["sends"][reference] == 1
    assert current["requests"][reference] == 6
    assert current["total"] == 2


def test_fail_all_for_all_providers_defaults_to_503(
    mmg: MmgClient, firetext: FiretextClient, ses: SesClient, control: httpx.Client
) -> None:
    set_control(control, fail_all="status")
    for provider in ("mmg", "firetext", "ses"):
        with pytest.raises(ProviderError) as caught:
            sender_for(provider, mmg, firetext, ses)(GOOD_RECIPIENT[provider], new_reference())
        assert caught.value.status_code == 503
    assert stats(control)["total"] == 0


@pytest.mark.parametrize("provider", ["mmg", "ses"])
def test_fail_all_by_dropping_the_connection(
    provider: str, mmg: MmgClient, firetext: FiretextClient, ses: SesClient, control: httpx.Client
) -> None:
    set_control(control, fail_all="drop", provider=provider)
    with pytest.raises(ProviderError) as caught:
        sender_for(provider, mmg, firetext, ses)(GOOD_RECIPIENT[provider], new_reference())
    assert caught.value.retryable is True
    assert caught.value.status_code is None
    assert stats(control)["total"] == 0


def test_fail_all_by_timing_out_holds_requests_until_cleared(
    simulator: ProviderSimulator, mmg: MmgClient, control: httpx.Client
) -> None:
    set_control(control, fail_all="timeout", provider="mmg")
    reference = new_reference()
    with MmgClient(simulator.url, timeout=0.3) as impatient, pytest.raises(ProviderError) as caught:
        impatient.send_sms(sms(GOOD_SMS, reference))
    assert caught.value.retryable is True
    assert caught.value.ambiguous is True

    held: list[BaseException] = []

    def patient_send() -> None:
        try:
            mmg.send_sms(sms(GOOD_SMS, reference))
        except BaseException as exc:
            held.append(exc)

    sender = threading.Thread(target=patient_send)
    sender.start()
    time.sleep(0.3)
    assert sender.is_alive()
    set_control(control, fail_all=False)
    sender.join(5)
    # Released without an answer, and not handed off.
    assert [type(e) for e in held] == [ProviderError]
    assert stats(control)["total"] == 0
    mmg.send_sms(sms(GOOD_SMS, reference))
    assert stats(control)["sends"] == {reference: 1}


def test_latency_applies_to_every_send(mmg: MmgClient, ses: SesClient, control: httpx.Client) -> None:
    assert set_control(control, latency=0.1)["latency"] == 0.1
    started = time.monotonic()
    mmg.send_sms(sms(GOOD_SMS))
    ses.send_email(email("someone@example.com"))
    assert time.monotonic() - started >= 0.2

    set_control(control, latency=0)
    started = time.monotonic()
    mmg.send_sms(sms(GOOD_SMS))
    assert time.monotonic() - started < 0.1


def test_reset_clears_counters_and_controls(mmg: MmgClient, control: httpx.Client) -> None:
    reference = new_reference()
    mmg.send_sms(sms(GOOD_SMS, reference))
    set_control(control, fail_next=5)
    set_control(control, fail_all="status", latency=1.0)

    control.post("/_reset").raise_for_status()

    assert stats(control) == {
        "sends": {},
        "requests": {},
        "duplicates": 0,
        "total": 0,
        "receipts_posted": 0,
        "receipts_dropped": 0,
        "receipts_pending": 0,
    }
    # What was accepted is forgotten too: the same reference is a new hand-off.
    mmg.send_sms(sms(GOOD_SMS, reference))
    assert stats(control)["sends"] == {reference: 1}


def test_bad_request_from_a_client_is_not_retryable(mmg: MmgClient, control: httpx.Client) -> None:
    with pytest.raises(ProviderError) as caught:
        mmg.send_sms(sms(""))

    assert caught.value.status_code == 400
    assert caught.value.retryable is False
    assert stats(control)["total"] == 0


@pytest.mark.parametrize(
    ("path", "kwargs", "mentions"),
    [
        ("/mmg/send", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, "JSON"),
        ("/mmg/send", {"json": ["a", "list"]}, "JSON object"),
        (
            "/mmg/send",
            {"json": {"reqType": "BULK", "MSISDN": "447700900123", "msg": "hi", "sender": "H"}},
            "cid",
        ),
        ("/firetext/send", {"data": {"from": "H", "message": "hi", "reference": "r"}}, "to"),
        ("/_control", {"json": {"fail_next": -1}}, "fail_next"),
        ("/_control", {"json": {"fail_next": 1, "status": 42}}, "status"),
        ("/_control", {"json": {"status": 503}}, "fail_next, fail_all or latency"),
        ("/_control", {"json": {"fail_all": "sometimes"}}, "fail_all"),
        ("/_control", {"json": {"fail_all": "status", "provider": "sendgrid"}}, "provider"),
        ("/_control", {"json": {"latency": -1}}, "latency"),
        ("/_control", {"json": {"latency": 1, "typo": 2}}, "typo"),
    ],
)
def test_bad_requests_get_400_with_a_json_error(
    path: str, kwargs: dict[str, Any], mentions: str, control: httpx.Client
) -> None:
    response = control.post(path, **kwargs)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request"
    assert mentions in body["message"]
    assert stats(control)["total"] == 0


def test_unknown_path_and_wrong_method(control: httpx.Client) -> None:
    assert control.post("/nowhere", json={}).status_code == 404
    assert control.post("/ses/send", json={}).status_code == 404
    assert control.get("/mmg/send").status_code == 405
    assert control.post("/_stats").status_code == 405


def test_sms_routes_keep_a_1_mib_limit(simulator: ProviderSimulator) -> None:
    assert status_for_declared_length(simulator, "/mmg/send", 2 * 1024 * 1024) == 413


def exchange(simulator: ProviderSimulator, raw: bytes) -> bytes:
    """Everything the simulator answers to ``raw`` on one connection, until it closes it."""
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as conn:
        conn.sendall(raw)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


@pytest.mark.usefixtures("control")
def test_pipelined_requests_are_answered_in_order_and_connection_close_is_honoured(
    simulator: ProviderSimulator,
) -> None:
    form = b"to=447700900123&from=HERALD&message=hi&reference="
    raw = b"".join(
        b"POST /firetext/send HTTP/1.1\r\nHost: sim\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s%s" % (len(form) + 1, form, str(n).encode())
        for n in range(3)
    )
    raw += b"GET /_stats HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n"
    answers = exchange(simulator, raw).split(b"HTTP/1.1 ")[1:]
    assert [a.split(b" ", 1)[0] for a in answers] == [b"200"] * 4
    assert b"Connection: close" in answers[-1]
    assert orjson.loads(answers[-1].split(b"\r\n\r\n", 1)[1])["sends"] == {"0": 1, "1": 1, "2": 1}


def test_a_chunked_body_is_read_and_a_malformed_request_is_refused(
    simulator: ProviderSimulator, control: httpx.Client
) -> None:
    body = orjson.dumps({"MSISDN": GOOD_SMS, "msg": "hi", "sender": "H", "cid": "chunked"})
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    answer = exchange(
        simulator,
        b"POST /mmg/send HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
    )
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert stats(control)["sends"] == {"chunked": 1}
    assert exchange(simulator, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")


# --- receipts: retried through a callbacks outage -------------------------------------------------


def test_receipt_is_retried_until_callbacks_comes_up() -> None:
    servicer = FakeCallbacks()
    # Bound but not yet serving: the simulator's first attempts are refused.
    late = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    callbacks_pb2_grpc.add_CallbacksServicer_to_server(servicer, late)
    port = late.add_insecure_port("127.0.0.1:0")
    reference = new_reference()
    try:
        with (
            ProviderSimulator(
                "127.0.0.1", 0, f"127.0.0.1:{port}", 0.0, receipt_retry_seconds=10, receipt_backoff=0.05
            ) as sim,
            MmgClient(sim.url) as client,
        ):
            client.send_sms(sms(GOOD_SMS, reference))
            time.sleep(0.5)
            assert sim.stats()["receipts_pending"] == 1
            late.start()
            [receipt] = wait_for(lambda: servicer.receipts_for(reference), timeout=5.0)
            assert receipt.status == "3"
            # Counted once callbacks' answer is back, a moment after callbacks has the receipt.
            wait_for(lambda: sim.stats()["receipts_posted"] == 1)
    finally:
        late.stop(grace=None)


def test_receipt_outlives_a_callbacks_outage_with_capped_backoff() -> None:
    """Callbacks goes away for a while and comes back on the same port: every receipt still arrives."""
    servicer = FakeCallbacks()
    server, port = start_callbacks_server(servicer)
    references = [new_reference() for _ in range(20)]
    with (
        ProviderSimulator(
            "127.0.0.1",
            0,
            f"127.0.0.1:{port}",
            0.0,
            receipt_retry_seconds=30,
            receipt_backoff=0.05,
            receipt_max_backoff=0.2,
        ) as sim,
        MmgClient(sim.url) as client,
    ):
        client.send_sms(sms(GOOD_SMS, references[0]))
        wait_for(lambda: servicer.receipts_for(references[0]))
        server.stop(grace=None)
        for reference in references[1:]:
            client.send_sms(sms(GOOD_SMS, reference))
        time.sleep(1.5)  # several capped retries each, far more than the old 5 attempts of 0.2 s
        assert sim.stats()["receipts_dropped"] == 0
        server, _ = start_callbacks_server(servicer, port)
        try:
            wait_for(lambda: all(servicer.receipts_for(r) for r in references), timeout=5.0)
            wait_for(lambda: sim.stats()["receipts_posted"] == 20)
            assert sim.stats()["receipts_pending"] == 0
        finally:
            server.stop(grace=None)


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE])
def test_receipt_refused_by_a_failing_callbacks_is_posted_again(
    code: grpc.StatusCode, mmg: MmgClient, fake_callbacks: FakeCallbacks, control: httpx.Client
) -> None:
    fake_callbacks.refuse[:] = [code, code]
    reference = new_reference()
    mmg.send_sms(sms(GOOD_SMS, reference))
    wait_for(lambda: fake_callbacks.receipts_for(reference))
    assert fake_callbacks.calls == 3
    assert stats(control)["receipts_dropped"] == 0


def test_receipt_callbacks_rejects_is_dropped_at_once(
    mmg: MmgClient, fake_callbacks: FakeCallbacks, control: httpx.Client
) -> None:
    fake_callbacks.refuse[:] = [grpc.StatusCode.INVALID_ARGUMENT]
    mmg.send_sms(sms(GOOD_SMS))
    wait_for(lambda: stats(control)["receipts_dropped"] == 1)
    assert fake_callbacks.calls == 1


def test_receipt_is_dropped_when_callbacks_stays_down_past_the_retry_window() -> None:
    with (
        ProviderSimulator(
            "127.0.0.1", 0, f"127.0.0.1:{free_port()}", 0.0, receipt_retry_seconds=0.3, receipt_backoff=0.05
        ) as sim,
        MmgClient(sim.url) as client,
    ):
        client.send_sms(sms(GOOD_SMS))
        time.sleep(0.15)
        assert sim.stats()["receipts_dropped"] == 0
        wait_for(lambda: sim.stats()["receipts_dropped"] == 1)
        assert sim.stats()["receipts_posted"] == 0
        assert sim.stats()["receipts_pending"] == 0


# --- lifecycle ------------------------------------------------------------------------------------


def test_simulator_picks_a_free_port_and_stops_cleanly(callbacks: tuple[FakeCallbacks, int]) -> None:
    sim = ProviderSimulator("127.0.0.1", 0, f"127.0.0.1:{callbacks[1]}", RECEIPT_DELAY)
    sim.start()
    try:
        assert sim.port > 0
        assert httpx.get(f"{sim.url}/_stats").status_code == 200
    finally:
        sim.stop()
    sim.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/_stats")


def test_stop_releases_requests_held_by_a_timeout_outage(callbacks: tuple[FakeCallbacks, int]) -> None:
    sim = ProviderSimulator("127.0.0.1", 0, f"127.0.0.1:{callbacks[1]}", RECEIPT_DELAY)
    sim.start()
    httpx.post(f"{sim.url}/_control", json={"fail_all": "timeout"}).raise_for_status()
    failures: list[BaseException] = []

    def held_send() -> None:
        with MmgClient(sim.url, timeout=10.0) as client:
            try:
                client.send_sms(sms(GOOD_SMS))
            except ProviderError as exc:
                failures.append(exc)

    sender = threading.Thread(target=held_send)
    sender.start()
    time.sleep(0.2)
    started = time.monotonic()
    sim.stop()
    sender.join(5)
    assert time.monotonic() - started < 3
    assert len(failures) == 1


def test_serve_runs_until_sigterm(callbacks: tuple[FakeCallbacks, int]) -> None:
    """``serve()`` as ``herald provider-sim`` runs it: in its own process, stopped by a signal."""
    script = (
        "import logging, sys\n"
        "from herald.providers.simulator import serve\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        f"serve('127.0.0.1', 0, '127.0.0.1:{callbacks[1]}', {RECEIPT_DELAY})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (http://\S+),", line)
        assert match, line
        with MmgClient(match.group(1)) as client:
            assert client.send_sms(sms(GOOD_SMS))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
