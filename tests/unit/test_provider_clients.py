"""Herald's provider clients: wire format and error mapping.

MMG and Firetext run against httpx.MockTransport (through `ViaHttpx`, a test transport); the real
transport (its failure kinds, framing, TLS, and post_all's requests side by side) against real sockets
on 127.0.0.1. SES goes through boto3, so it
runs against a canned HTTP server on 127.0.0.1 that records what botocore sent and answers what the test says.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from herald.providers import (
    EmailProvider,
    EmailRequest,
    FiretextClient,
    HttpAnswer,
    MmgClient,
    PooledTransport,
    ProviderError,
    SmsProvider,
    SmsRequest,
    TransportFailed,
    post_all,
    send_sms_all,
)
from herald.providers._transport import FailureKind
from herald.providers.ses import SesClient

BASE_URL = "http://provider.test"
RECIPIENT = "447700900123"
BODY = "Your secret code is 123456"
EMAIL_TO = "someone@example.com"
SES_KEY_ID = "test-access-key"
SES_SECRET = "test-secret-key"

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


class ViaHttpx:
    """A provider-client Transport over an httpx transport, so handlers see (and answer) httpx objects."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self._client = httpx.Client(base_url=BASE_URL, transport=transport)

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        response = self._client.post(path, content=body, headers=dict(headers))
        return HttpAnswer(response.status_code, response.content)

    def close(self) -> None:
        self._client.close()


def mmg_with(handler: Handler, **kwargs: Any) -> MmgClient:
    return MmgClient(BASE_URL, transport=ViaHttpx(httpx.MockTransport(handler)), **kwargs)


def firetext_with(handler: Handler, **kwargs: Any) -> FiretextClient:
    return FiretextClient(BASE_URL, transport=ViaHttpx(httpx.MockTransport(handler)), **kwargs)


def send_with(provider: str, handler: Handler) -> str:
    """Send the canned SMS through ``provider``'s client, closing it afterwards."""
    if provider == "mmg":
        with mmg_with(handler) as mmg:
            return mmg.send_sms(SMS)
    with firetext_with(handler) as firetext:
        return firetext.send_sms(SMS)


SUCCESS = {
    "mmg": {"reference": "mmg-id"},
    "firetext": {"code": 0, "description": "SMS successfully queued"},
}
SMS_PROVIDERS = sorted(SUCCESS)


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


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
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
    assert caught.value.ambiguous is False
    assert caught.value.status_code == status
    assert caught.value.provider == provider


class Failing:
    """A Transport whose every request fails in the given way."""

    def __init__(self, failure: TransportFailed) -> None:
        self.failure = failure

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        raise self.failure

    def close(self) -> None:
        pass


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
@pytest.mark.parametrize(("kind", "ambiguous"), [("connect", False), ("timeout", True), ("broken", True)])
def test_transport_failures_are_retryable_and_ambiguous_once_sent(
    provider: str, kind: FailureKind, ambiguous: bool
) -> None:
    failure = TransportFailed(kind, "detail")
    client = MmgClient if provider == "mmg" else FiretextClient
    with client(BASE_URL, transport=Failing(failure)) as sms, pytest.raises(ProviderError) as caught:
        sms.send_sms(SMS)
    assert caught.value.retryable is True
    assert caught.value.ambiguous is ambiguous
    assert caught.value.status_code is None
    assert caught.value.__cause__ is failure


def test_a_batch_of_sms_requests_holds_their_bodies_at_their_size() -> None:
    """A send batch builds all its requests before the first goes out: each body is held at its own
    size, not in orjson's 4 kB buffer (5,000 SMS held 20 MB)."""
    with MmgClient(BASE_URL, transport=Failing(TransportFailed("connect", "unused"))) as sms:
        tracemalloc.start()
        try:
            posts = [sms.sms_post(SMS) for _ in range(1000)]
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(posts[0][2]) < 400
    assert held < 1000 * 1024


def _silent_server(answer: Callable[[socket.socket], None]) -> tuple[str, Callable[[], None]]:
    """A TCP server on 127.0.0.1 that reads a request and then does `answer` to the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                answer(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def stop() -> None:
        listener.close()
        thread.join(5)

    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


def test_pooled_transport_says_connect_when_nothing_listens() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    transport = PooledTransport(f"http://127.0.0.1:{port}", timeout=1.0, maxsize=1)
    with pytest.raises(TransportFailed) as caught:
        transport.post("/mmg/send", b"{}", {})
    assert caught.value.kind == "connect"


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (lambda conn: time.sleep(1.5), "timeout"),
        (lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"), "broken"),
        (lambda conn: None, "broken"),  # closed without a word
    ],
    ids=["no-answer", "cut-mid-answer", "hung-up"],
)
def test_pooled_transport_failures_once_the_request_left(answer: Callable[[socket.socket], None], kind: str) -> None:
    url, stop = _silent_server(answer)
    transport = PooledTransport(url, timeout=0.5, maxsize=1)
    try:
        with pytest.raises(TransportFailed) as caught:
            transport.post("/mmg/send", b"{}", {"Content-Type": "application/json"})
        assert caught.value.kind == kind
    finally:
        transport.close()
        stop()


def test_pooled_transport_keeps_the_base_path_and_reuses_connections() -> None:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(f"{self.path} {self.client_address[1]} {self.headers['X-Test']}")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    transport = PooledTransport(f"http://127.0.0.1:{server.server_address[1]}/base/", timeout=2.0, maxsize=1)
    try:
        answers = [transport.post("/mmg/send", b"{}", {"X-Test": str(n)}) for n in range(2)]
    finally:
        transport.close()
        server.shutdown()
        server.server_close()
    assert answers == [HttpAnswer(200, b"{}")] * 2
    first, second = (line.split() for line in seen)
    assert first[0] == second[0] == "/base/mmg/send"
    assert first[1] == second[1]  # one keep-alive connection
    assert [first[2], second[2]] == ["0", "1"]


def test_pooled_transport_refuses_a_url_without_a_host() -> None:
    with pytest.raises(ValueError, match="provider URL"):
        PooledTransport("mmg.example", timeout=1.0, maxsize=1)


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
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


def test_mmg_answer_without_provider_id_is_not_retryable() -> None:
    with pytest.raises(ProviderError) as caught:
        send_with("mmg", Recorder(httpx.Response(200, json={"ref": "x"})))
    assert caught.value.retryable is False


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
def test_sms_failures_never_reveal_recipient_or_body(provider: str, caplog: pytest.LogCaptureFixture) -> None:
    echoing = Recorder(httpx.Response(400, json={"error": f"bad number {RECIPIENT} {BODY}"}))
    with caplog.at_level(logging.DEBUG, logger="herald.providers"), pytest.raises(ProviderError) as caught:
        send_with(provider, echoing)

    shown = str(caught.value) + caplog.text
    for secret in (RECIPIENT, BODY):
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


# --- post_all and send_sms_all: a batch's requests side by side from one thread -------------------


class _Slow(BaseHTTPRequestHandler):
    """Answers every POST after `delay` seconds with `{"reference": <the request's X-Ref>}`, counting the
    requests it holds at once."""

    protocol_version = "HTTP/1.1"
    delay = 0.3
    lock = threading.Lock()
    holding = 0
    most = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        with cls.lock:
            cls.holding += 1
            cls.most = max(cls.most, cls.holding)
        time.sleep(cls.delay)
        with cls.lock:
            cls.holding -= 1
        body = orjson.dumps({"reference": self.headers["X-Ref"]})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_post_all_sends_side_by_side_at_most_in_flight_at_once() -> None:
    _Slow.most = 0
    with serving(_Slow) as url:
        transport = PooledTransport(url, timeout=5.0, maxsize=4)
        try:
            started = time.monotonic()
            posted = post_all([(transport, "/send", b"{}", {"X-Ref": str(n)}) for n in range(8)], 4)
            took = time.monotonic() - started
        finally:
            transport.close()
    answers = [answer for answer, _ in posted if isinstance(answer, HttpAnswer) and answer.status == 200]
    assert [orjson.loads(answer.content)["reference"] for answer in answers] == [str(n) for n in range(8)]
    assert _Slow.most == 4  # four at once, never more
    assert 0.55 < took < 1.5  # two rounds of 0.3 s, not eight
    assert all(0.25 < seconds < 1.0 for _, seconds in posted)


def test_post_all_keeps_order_across_transports_and_reports_each_failure_alone() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    with serving(_Slow) as url:
        _Slow.delay = 0.0
        good, refused = PooledTransport(url, timeout=2.0, maxsize=2), PooledTransport(closed, timeout=2.0, maxsize=2)
        failing = Failing(TransportFailed("timeout", "detail"))
        try:
            posted = post_all(
                [
                    (good, "/send", b"{}", {"X-Ref": "a"}),
                    (refused, "/send", b"{}", {}),
                    (failing, "/send", b"{}", {}),
                    (good, "/send", b"{}", {"X-Ref": "b"}),
                ],
                8,
            )
        finally:
            _Slow.delay = 0.3
            good.close()
    first, cannot, late, last = (outcome for outcome, _ in posted)
    assert first == HttpAnswer(200, b'{"reference":"a"}') and last == HttpAnswer(200, b'{"reference":"b"}')
    assert isinstance(cannot, TransportFailed) and cannot.kind == "connect"
    assert late is failing.failure


def test_send_sms_all_gives_each_hand_off_its_own_outcome() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if b"447700900999" in request.content:
            return httpx.Response(400, json={"error": "bad number"})
        return httpx.Response(200, json=SUCCESS["mmg"])

    with mmg_with(answer) as mmg:
        bad = SmsRequest(reference="ref-2", to="447700900999", body=BODY, sender="HERALD")
        [(sent, _), (refused, _), (again, _)] = send_sms_all([(mmg, SMS), (mmg, bad), (mmg, SMS)], 2)
    assert sent == again == "mmg-id"
    assert isinstance(refused, ProviderError) and refused.status_code == 400 and refused.retryable is False


def _in_pieces(*pieces: bytes) -> Callable[[socket.socket], None]:
    """An answer sent piece by piece, each after a pause, so that the client reads them one at a time;
    then the server closes the connection."""

    def answer(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n, piece in enumerate(pieces):
            if n:
                time.sleep(0.05)
            conn.sendall(piece)

    return answer


@pytest.mark.parametrize(
    "pieces",
    [
        (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n4\r\n:[]}\r\n0\r\n\r\n',),
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 8\r\n\r\n{"a":[]}',),
        # No length: the end of the connection ends it.
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a":[]}',),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n", b'Content-Type: application/json\r\n\r\n{"a"', b":[]}"),
        (b'HTTP/1.0 200 OK\r\n\r\n{"a":[]}',),
        # Chunked only as the last coding (RFC 9112 6.3): a body of any other coding ends with the connection.
        (b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n{"a":[]}',),
    ],
    ids=["chunked", "length-and-close", "until-closed", "until-closed-in-pieces", "http-1.0", "chunked-not-last"],
)
def test_pooled_transport_reads_answers_of_any_framing(pieces: tuple[bytes, ...]) -> None:
    url, stop = _silent_server(_in_pieces(*pieces))
    transport = PooledTransport(url, timeout=2.0, maxsize=1)
    try:
        assert transport.post("/mmg/send", b"{}", {}) == HttpAnswer(200, b'{"a":[]}')
    finally:
        transport.close()
        stop()


_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    "pieces",
    [
        (_CLOSE + b'Content-Length: 30\r\n\r\n{"reference":',),
        (_CLOSE + b"Content-Length: 30\r\n\r\n",),
        (_CLOSE, b'Content-Length: 30\r\n\r\n{"refer', b'ence":'),
        (b'HTTP/1.0 200 OK\r\nContent-Length: 30\r\n\r\n{"reference":',),
        # Every chunk of a whole JSON object, but not the last chunk that says it is whole.
        (_CLOSE + b'Transfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n4\r\n:[]}\r\n',),
        (_CLOSE + b'Transfer-Encoding: gzip, chunked\r\n\r\na\r\n{"a"',),
        (_CLOSE + b"Transfer-Encoding: chunked\r\n\r\n",),
        (_CLOSE + b"Content-Le",),
        (b"HTTP/1.1 20",),
    ],
    ids=[
        "short-of-its-length",
        "no-body-of-its-length",
        "short-of-its-length-in-pieces",
        "http-1.0-short-of-its-length",
        "no-last-chunk",
        "mid-chunk",
        "no-chunk",
        "mid-headers",
        "mid-status-line",
    ],
)
def test_pooled_transport_says_broken_when_a_closing_answer_is_cut_short(pieces: tuple[bytes, ...]) -> None:
    # `Connection: close` (or HTTP/1.0) makes the end of the connection expected, not the end of the answer.
    url, stop = _silent_server(_in_pieces(*pieces))
    transport = PooledTransport(url, timeout=2.0, maxsize=1)
    try:
        with pytest.raises(TransportFailed) as caught:
            transport.post("/mmg/send", b"{}", {})
        assert caught.value.kind == "broken"
    finally:
        transport.close()
        stop()


def _refusal_over_a_socket(provider: str, answer: bytes) -> ProviderError:
    """What ``provider``'s client makes of ``answer``, sent by a server on 127.0.0.1 that then hangs up."""
    url, stop = _silent_server(lambda conn: conn.sendall(answer))
    client = MmgClient if provider == "mmg" else FiretextClient
    try:
        with client(url, timeout=2.0, max_connections=1) as sms, pytest.raises(ProviderError) as caught:
            sms.send_sms(SMS)
    finally:
        stop()
    return caught.value


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
def test_a_2xx_cut_short_is_retried_at_the_same_provider(provider: str) -> None:
    whole = orjson.dumps(SUCCESS[provider])
    refused = _refusal_over_a_socket(provider, _CLOSE + b"Content-Length: %d\r\n\r\n" % len(whole) + whole[:-1])
    assert refused.retryable is True
    assert refused.ambiguous is True  # the provider may hold it: only it de-duplicates by reference
    assert refused.status_code is None


@pytest.mark.parametrize("provider", SMS_PROVIDERS)
@pytest.mark.parametrize(
    "answer",
    [
        _CLOSE + b"Content-Length: 17\r\n\r\n<html>oops</html>",
        _CLOSE + b"\r\n<html>oops</html>",
        _CLOSE + b'\r\n{"reference":',  # cut short, but nothing in it says so
        _CLOSE + b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n",
    ],
    ids=["with-length", "until-closed", "until-closed-json-cut", "chunked-not-object"],
)
def test_a_whole_2xx_not_in_the_providers_format_is_malformed(provider: str, answer: bytes) -> None:
    refused = _refusal_over_a_socket(provider, answer)
    assert refused.retryable is False
    assert refused.ambiguous is False
    assert refused.status_code == 200


def test_pooled_transport_speaks_tls_and_checks_the_certificate(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)
    _Slow.delay = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    server.socket = server_side.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}"
    trusting = ssl.create_default_context(cafile=str(cert_file))
    try:
        transport = PooledTransport(url, timeout=2.0, maxsize=2, tls=trusting)
        try:
            posted = post_all([(transport, "/send", b"{}", {"X-Ref": str(n)}) for n in range(3)], 2)
        finally:
            transport.close()
        assert [outcome for outcome, _ in posted] == [
            HttpAnswer(200, orjson.dumps({"reference": str(n)})) for n in range(3)
        ]
        # Without the test's CA the certificate is not trusted: nothing was sent.
        with pytest.raises(TransportFailed) as caught:
            PooledTransport(url, timeout=2.0, maxsize=1).post("/send", b"{}", {"X-Ref": "x"})
        assert caught.value.kind == "connect"
    finally:
        _Slow.delay = 0.3
        server.shutdown()
        server.server_close()


# --- SES through boto3, against a canned server ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


@dataclass(slots=True)
class Canned:
    """What the server answers: a status, headers and body; or hang ``delay`` s first; or hang up."""

    status: int = 200
    body: bytes = b'{"MessageId": "ses-id"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang_up: bool = False


class CannedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.answer = Canned()
        self.seen: list[Seen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CannedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CannedServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        answer = self.server.answer
        if answer.delay:
            time.sleep(answer.delay)
        if answer.hang_up:
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in {"Content-Type": "application/json", **answer.headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def canned_server() -> Iterator[CannedServer]:
    server = CannedServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def canned(canned_server: CannedServer) -> CannedServer:
    canned_server.answer = Canned()
    canned_server.seen.clear()
    return canned_server


@pytest.fixture(scope="module")
def ses(canned_server: CannedServer) -> Iterator[SesClient]:
    with SesClient(canned_server.url, access_key_id=SES_KEY_ID, secret_access_key=SES_SECRET, timeout=0.5) as client:
        yield client


def ses_error(status: int, code: str, message: str = "refused") -> Canned:
    return Canned(status, orjson.dumps({"message": message}), {"x-amzn-ErrorType": f"{code}:"})


def test_ses_sends_sesv2_send_email_signed_and_returns_message_id(ses: SesClient, canned: CannedServer) -> None:
    assert ses.name == "ses"
    assert ses.send_email(EMAIL) == "ses-id"

    [seen] = canned.seen
    assert (seen.method, seen.path) == ("POST", "/v2/email/outbound-emails")
    authorization = seen.headers["authorization"]
    assert authorization.startswith(f"AWS4-HMAC-SHA256 Credential={SES_KEY_ID}/")
    assert "/eu-west-2/ses/aws4_request" in authorization
    assert "x-amz-date" in seen.headers
    assert seen.json() == {
        "FromEmailAddress": "noreply@herald.test",
        "Destination": {"ToAddresses": [EMAIL_TO]},
        "Content": {
            "Simple": {
                "Subject": {"Data": "Subject", "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": BODY, "Charset": "UTF-8"},
                    "Html": {"Data": f"<p>{BODY}</p>", "Charset": "UTF-8"},
                },
                "Headers": [{"Name": "X-Herald-Notification-Id", "Value": "ref-2"}],
            }
        },
        "EmailTags": [{"Name": "notification_id", "Value": "ref-2"}],
    }


def test_ses_reply_to_unsubscribe_and_plain_text(ses: SesClient, canned: CannedServer) -> None:
    ses.send_email(
        EmailRequest(
            reference="r",
            to=EMAIL_TO,
            subject="s",
            body="b",
            html="",
            from_address="noreply@herald.test",
            reply_to="help@herald.test",
            unsubscribe_url="https://herald.test/unsubscribe/r",
        )
    )
    sent = canned.seen[0].json()
    assert sent["ReplyToAddresses"] == ["help@herald.test"]
    assert sent["Content"]["Simple"]["Body"] == {"Text": {"Data": "b", "Charset": "UTF-8"}}
    assert sent["Content"]["Simple"]["Headers"] == [
        {"Name": "X-Herald-Notification-Id", "Value": "r"},
        {"Name": "List-Unsubscribe", "Value": "<https://herald.test/unsubscribe/r>"},
        {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"},
    ]
    assert "ConfigurationSetName" not in sent


def test_ses_names_the_configuration_set_and_region(canned: CannedServer) -> None:
    with SesClient(
        canned.url,
        region_name="eu-west-1",
        access_key_id=SES_KEY_ID,
        secret_access_key=SES_SECRET,
        configuration_set_name="herald-events",
    ) as client:
        client.send_email(EMAIL)
    [seen] = canned.seen
    assert seen.json()["ConfigurationSetName"] == "herald-events"
    assert "/eu-west-1/ses/aws4_request" in seen.headers["authorization"]


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "MessageRejected", False),
        (400, "BadRequestException", False),
        (400, "AccountSuspendedException", False),
        (400, "SendingPausedException", False),
        (400, "MailFromDomainNotVerifiedException", False),
        (403, "SignatureDoesNotMatch", False),
        (404, "NotFoundException", False),
        (400, "Throttling", True),
        (429, "TooManyRequestsException", True),
        (500, "InternalFailure", True),
        (503, "ServiceUnavailable", True),
    ],
)
def test_ses_errors_map_to_retryable_flag_without_botocore_retrying(
    status: int, code: str, retryable: bool, ses: SesClient, canned: CannedServer
) -> None:
    canned.answer = ses_error(status, code)
    with pytest.raises(ProviderError) as caught:
        ses.send_email(EMAIL)
    assert caught.value.retryable is retryable
    assert caught.value.ambiguous is False
    assert caught.value.status_code == status
    assert caught.value.provider == "ses"
    assert code in str(caught.value)
    # The dispatcher's retry schedule decides when to send again, not botocore.
    assert len(canned.seen) == 1


def test_ses_slow_answer_is_retryable_and_ambiguous(ses: SesClient, canned: CannedServer) -> None:
    canned.answer = Canned(delay=1.0)
    with pytest.raises(ProviderError) as caught:
        ses.send_email(EMAIL)
    assert caught.value.retryable is True
    assert caught.value.ambiguous is True
    assert caught.value.status_code is None


def test_ses_hang_up_is_retryable_and_ambiguous(ses: SesClient, canned: CannedServer) -> None:
    canned.answer = Canned(hang_up=True)
    with pytest.raises(ProviderError) as caught:
        ses.send_email(EMAIL)
    assert caught.value.retryable is True
    assert caught.value.ambiguous is True


def test_ses_refused_connection_is_retryable_and_not_ambiguous() -> None:
    probe = CannedServer()
    url = probe.url
    probe.server_close()  # nobody listens there now
    with (
        SesClient(url, access_key_id=SES_KEY_ID, secret_access_key=SES_SECRET) as client,
        pytest.raises(ProviderError) as caught,
    ):
        client.send_email(EMAIL)
    assert caught.value.retryable is True
    assert caught.value.ambiguous is False


@pytest.mark.parametrize(
    "answer",
    [Canned(body=b"<html>oops</html>"), Canned(body=b'{"MessageId": ""}'), Canned(body=b'["not", "an", "object"]')],
    ids=["not-json", "empty-id", "not-object"],
)
def test_ses_malformed_success_is_not_retryable(answer: Canned, ses: SesClient, canned: CannedServer) -> None:
    canned.answer = answer
    with pytest.raises(ProviderError) as caught:
        ses.send_email(EMAIL)
    assert caught.value.retryable is False


def test_ses_without_credentials_is_not_retryable(canned: CannedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with (
        SesClient(canned.url, access_key_id="", secret_access_key="") as client,
        pytest.raises(ProviderError) as caught,
    ):
        client.send_email(EMAIL)
    assert caught.value.retryable is False
    assert canned.seen == []


def test_ses_failures_never_reveal_recipient_or_body(
    ses: SesClient, canned: CannedServer, caplog: pytest.LogCaptureFixture
) -> None:
    canned.answer = ses_error(400, "MessageRejected", f"Email address is not verified: {EMAIL_TO} {BODY}")
    with caplog.at_level(logging.DEBUG, logger="herald.providers"), pytest.raises(ProviderError) as caught:
        ses.send_email(EMAIL)

    shown = str(caught.value) + caplog.text
    for secret in (EMAIL_TO, BODY):
        assert secret not in shown
    assert "ref-2" in caplog.text


def test_clients_satisfy_the_provider_protocols() -> None:
    transport = ViaHttpx(httpx.MockTransport(Recorder(httpx.Response(200))))
    sms_providers: list[SmsProvider] = [
        MmgClient(BASE_URL, transport=transport),
        FiretextClient(BASE_URL, transport=transport),
    ]
    email_provider: EmailProvider = SesClient(BASE_URL)
    assert [p.name for p in sms_providers] == ["mmg", "firetext"]
    assert email_provider.name == "ses"
    for client in [*sms_providers, email_provider]:
        assert isinstance(client, MmgClient | FiretextClient | SesClient)
        client.close()
