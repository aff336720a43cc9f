"""Herald's provider clients against the real provider simulator, over HTTP and gRPC on 127.0.0.1."""

from __future__ import annotations

import os
import re
import signal
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
import pytest

from herald.providers import (
    EmailRequest,
    FiretextClient,
    MmgClient,
    ProviderError,
    SesClient,
    SmsRequest,
)
from herald.providers.simulator import ProviderSimulator
from herald.v1 import callbacks_pb2, callbacks_pb2_grpc

pytestmark = pytest.mark.timeout(30)

RECEIPT_DELAY = 0.05
REPO_ROOT = Path(__file__).resolve().parents[2]


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
    """Records every receipt the simulator reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._receipts: list[callbacks_pb2.DeliveryReceipt] = []

    def ReportDelivery(
        self, request: callbacks_pb2.DeliveryReceipt, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        with self._lock:
            self._receipts.append(request)
        return callbacks_pb2.ReportDeliveryResponse(notification_id=request.reference, applied=True)

    def SimulateDelivery(
        self, request: callbacks_pb2.SimulateDeliveryRequest, context: grpc.ServicerContext
    ) -> callbacks_pb2.ReportDeliveryResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the simulator")
        raise AssertionError("unreachable")

    def receipts_for(self, reference: str) -> list[callbacks_pb2.DeliveryReceipt]:
        with self._lock:
            return [r for r in self._receipts if r.reference == reference]

    def clear(self) -> None:
        with self._lock:
            self._receipts.clear()


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
    with SesClient(simulator.url) as client:
        yield client


def new_reference() -> str:
    return str(uuid.uuid4())


def sms(to: str, reference: str | None = None) -> SmsRequest:
    return SmsRequest(reference=reference or new_reference(), to=to, body="Your code is 123456", sender="HERALD")


def email(to: str, reference: str | None = None) -> EmailRequest:
    return EmailRequest(
        reference=reference or new_reference(),
        to=to,
        subject="Hello",
        body="Hello there",
        html="<p>Hello there</p>",
        from_address="noreply@herald.test",
        reply_to="help@herald.test",
    )


def stats(control: httpx.Client) -> dict[str, Any]:
    response = control.get("/_stats")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def sender_for(provider: str, mmg: MmgClient, firetext: FiretextClient, ses: SesClient) -> Callable[[str, str], str]:
    if provider == "mmg":
        return lambda to, ref: mmg.send_sms(sms(to, ref))
    if provider == "firetext":
        return lambda to, ref: firetext.send_sms(sms(to, ref))
    return lambda to, ref: ses.send_email(email(to, ref))


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
    mmg.send_sms(sms("447700900123", reference))
    wait_for(lambda: fake_callbacks.receipts_for(reference))
    assert time.monotonic() - sent_at >= RECEIPT_DELAY
    assert wait_for(lambda: stats(control)["receipts_posted"] == 1)


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
    assert stats(control)["sends"] == {}
    # Receipts fall due in send order, so once a later good send's receipt is in, no other is coming.
    later = new_reference()
    mmg.send_sms(sms("447700900123", later))
    wait_for(lambda: fake_callbacks.receipts_for(later))
    assert fake_callbacks.receipts_for(reference) == []
    assert wait_for(lambda: stats(control)["receipts_posted"] == 1)


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (502, True), (429, True), (400, False), (403, False)])
def test_injected_failures_map_to_retryable_flag(
    status: int, retryable: bool, mmg: MmgClient, control: httpx.Client
) -> None:
    control.post("/_control", json={"fail_next": 2, "status": status}).raise_for_status()
    reference = new_reference()

    for _ in range(2):
        with pytest.raises(ProviderError) as caught:
            mmg.send_sms(sms("447700900123", reference))
        assert caught.value.retryable is retryable
        assert caught.value.status_code == status
    mmg.send_sms(sms("447700900123", reference))

    assert stats(control)["sends"] == {reference: 1}


def test_fail_next_defaults_to_503_and_applies_across_providers(
    mmg: MmgClient, ses: SesClient, control: httpx.Client
) -> None:
    control.post("/_control", json={"fail_next": 1}).raise_for_status()

    with pytest.raises(ProviderError) as caught:
        ses.send_email(email("someone@example.com"))
    assert caught.value.status_code == 503
    assert caught.value.retryable is True
    mmg.send_sms(sms("447700900123"))

    assert stats(control)["total"] == 1


def test_delayed_answer_times_out_after_the_provider_took_the_message(
    simulator: ProviderSimulator, fake_callbacks: FakeCallbacks, control: httpx.Client
) -> None:
    """A dispatcher that gives up mid-hand-off: the provider still holds (and delivers) the message."""
    control.post("/_control", json={"fail_next": 1, "delay": 1.0}).raise_for_status()
    reference = new_reference()

    with MmgClient(simulator.url, timeout=0.2) as impatient, pytest.raises(ProviderError) as caught:
        impatient.send_sms(sms("447700900123", reference))

    assert caught.value.retryable is True
    assert caught.value.status_code is None
    assert stats(control)["sends"] == {reference: 1}
    wait_for(lambda: fake_callbacks.receipts_for(reference))


def test_delayed_answer_succeeds_for_a_patient_client(mmg: MmgClient, control: httpx.Client) -> None:
    control.post("/_control", json={"fail_next": 1, "delay": 0.2}).raise_for_status()
    started = time.monotonic()

    mmg.send_sms(sms("447700900123"))

    assert time.monotonic() - started >= 0.2
    assert stats(control)["total"] == 1


def test_stats_count_hand_offs_per_reference(
    mmg: MmgClient, firetext: FiretextClient, ses: SesClient, control: httpx.Client
) -> None:
    twice, once, by_email = new_reference(), new_reference(), new_reference()

    mmg.send_sms(sms("447700900123", twice))
    firetext.send_sms(sms("447700900123", twice))
    mmg.send_sms(sms("447700900123", once))
    ses.send_email(email("someone@example.com", by_email))

    current = stats(control)
    assert current["sends"] == {twice: 2, once: 1, by_email: 1}
    assert current["total"] == 4
    assert wait_for(lambda: stats(control)["receipts_posted"] == 4)


def test_reset_clears_counters_and_controls(mmg: MmgClient, control: httpx.Client) -> None:
    mmg.send_sms(sms("447700900123"))
    control.post("/_control", json={"fail_next": 5}).raise_for_status()

    control.post("/_reset").raise_for_status()

    assert stats(control) == {"sends": {}, "total": 0, "receipts_posted": 0, "receipts_dropped": 0}
    mmg.send_sms(sms("447700900123"))
    assert stats(control)["total"] == 1


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
        ("/ses/send", {"json": {"Source": "a@b", "Destination": {"ToAddresses": []}}}, "ToAddresses"),
        (
            "/ses/send",
            {
                "json": {
                    "Source": "a@b",
                    "Destination": {"ToAddresses": ["x@y"]},
                    "Message": {"Subject": {"Data": "s"}, "Body": {}},
                    "reference": "r",
                }
            },
            "Body",
        ),
        ("/_control", {"json": {"fail_next": -1}}, "fail_next"),
        ("/_control", {"json": {"status": 42}}, "status"),
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
    assert control.get("/mmg/send").status_code == 405
    assert control.post("/_stats").status_code == 405


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
                "127.0.0.1", 0, f"127.0.0.1:{port}", 0.0, receipt_attempts=8, receipt_backoff=0.05
            ) as sim,
            MmgClient(sim.url) as client,
        ):
            client.send_sms(sms("447700900123", reference))
            time.sleep(0.15)
            late.start()
            [receipt] = wait_for(lambda: servicer.receipts_for(reference), timeout=5.0)
            assert receipt.status == "3"
            assert sim.stats()["receipts_posted"] == 1
    finally:
        late.stop(grace=None)


def test_receipt_is_dropped_when_callbacks_stays_down() -> None:
    # A port that was free a moment ago and has nobody listening on it.
    probe = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = probe.add_insecure_port("127.0.0.1:0")
    probe.stop(grace=None)
    with (
        ProviderSimulator("127.0.0.1", 0, f"127.0.0.1:{port}", 0.0, receipt_attempts=2, receipt_backoff=0.01) as sim,
        MmgClient(sim.url) as client,
    ):
        client.send_sms(sms("447700900123"))
        wait_for(lambda: sim.stats()["receipts_dropped"] == 1)
        assert sim.stats()["receipts_posted"] == 0


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
            assert client.send_sms(sms("447700900123"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
