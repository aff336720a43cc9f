"""Helpers shared by the integration and end-to-end tests."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from kombu import Connection
from sqlalchemy import Engine

from herald import bootstrap
from herald.clients import IngestClient
from herald.domain import statuses as st
from herald.domain.apikeys import create_admin_token, create_token, split_key
from herald.grpcsrv.errors import field_violations
from herald.netports import free_port as free_port  # the tests' one way to pick a port
from herald.providers.simulator import ProviderSimulator
from herald.queues.topology import queue
from herald.settings import Settings
from herald.v1.queue_pb2 import NotificationBatch, NotificationMessage

T = TypeVar("T")

# The admin secret the integration tests' Admin servers (tests/integration/conftest.py) check.
ADMIN_SECRET = "admin-test-secret-long-enough-for-hs256"


def process_alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped, is not), read from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def bearer(key: str, now: float | None = None) -> list[tuple[str, str]]:
    """gRPC metadata authenticating as the API key `key` (a token issued at `now`, else now)."""
    parts = split_key(key)
    return [("authorization", f"Bearer {create_token(parts.secret, parts.service_id, now)}")]


def admin_bearer() -> list[tuple[str, str]]:
    """gRPC metadata authenticating as the platform's admin (ADMIN_SECRET)."""
    return [("authorization", f"Bearer {create_admin_token(ADMIN_SECRET)}")]


def refused(call: Callable[..., object]) -> tuple[grpc.StatusCode, list[tuple[str, str]]]:
    """The status code and field violations of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code(), field_violations(caught.value)


def final_status(client: IngestClient, notification_id: str, timeout: float = 20.0) -> str:
    """Follows a notification until its status is final (NOT_FOUND until the db dispatcher stored it)."""
    status = client.follow(notification_id, timeout, interval=0.02)
    if status not in st.FINAL:
        raise AssertionError(f"{notification_id} still {status} after {timeout}s")
    return status


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 in front of a real server (PostgreSQL, RabbitMQ), so that a test can
    take the server away from the services under test without stopping it for anyone else.

    `cut()` acts as a stopped server would: every open connection is reset and new ones are refused.
    `restore()` listens again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._listening = threading.Event()
        self._accepter: threading.Thread | None = None
        self.port = 0
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self.port = int(listener.getsockname()[1])
        self._listener = listener
        self._listening.set()
        self._accepter = threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy", daemon=True)
        self._accepter.start()

    def cut(self) -> None:
        self._listening.clear()
        if self._accepter is not None:
            self._accepter.join()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            doomed, self._connections = self._connections, set()
        for sock in doomed:
            _reset(sock)

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while self._listening.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # one side went away (or was cut): the other goes too
        with self._lock:
            self._connections.difference_update((source, sink))
        _reset(source)
        _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Closes with a reset, as a dying server's kernel would, and wakes any thread blocked on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed
    sock.close()


@dataclass(frozen=True, slots=True)
class Stack:
    """Herald's services in this process, with the provider simulator they send to."""

    settings: Settings
    simulator: ProviderSimulator

    def control(self, **fields: object) -> None:
        """POST /_control to the simulator (fail_next, fail_all, latency, ...)."""
        httpx.post(f"{self.simulator.url}/_control", json=fields, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.simulator.url}/_stats", timeout=5).json())


@contextmanager
def running_stack(
    settings: Settings,
    engine: Engine,
    *,
    ingest_engine: Engine | None = None,
    ingest_broker_url: str = "",
    scheduler: bool = False,
    receipt_delay: float = 0.05,
) -> Iterator[Stack]:
    """Callbacks, every dispatcher role and ingest (and the scheduler if asked) on free ports, on `engine`.
    Ingest may have a database and a broker of its own (a TcpProxy's), so that a test can cut them."""
    s = replace(
        settings,
        ingest_address=f"127.0.0.1:{free_port()}",
        callbacks_address=f"127.0.0.1:{free_port()}",
        dispatcher_address=f"127.0.0.1:{free_port()}",
        scheduler_address=f"127.0.0.1:{free_port()}",
    )
    simulator = ProviderSimulator("127.0.0.1", 0, s.callbacks_address, receipt_delay)
    simulator.start()
    s = replace(s, mmg_url=simulator.url, firetext_url=simulator.url, ses_url=simulator.url)
    stops = [
        bootstrap.start_callbacks(s, engine),
        bootstrap.start_dispatcher(s, engine, bootstrap.ALL_QUEUES_DISPATCHED),
        bootstrap.start_ingest(replace(s, broker_url=ingest_broker_url or s.broker_url), ingest_engine or engine),
    ]
    if scheduler:
        stops.append(bootstrap.start_scheduler(s, engine))
    try:
        yield Stack(s, simulator)
    finally:
        for stop in reversed(stops):
            stop()
        simulator.stop()


def queue_depth(broker_url: str, name: str) -> int:
    """Messages ready on a queue (unacknowledged ones in a consumer's hands are not counted)."""
    with Connection(broker_url) as conn:
        return int(queue(name)(conn.default_channel).queue_declare(passive=True).message_count)


def held_messages(broker_url: str, name: str) -> int:
    """Messages on a queue, ready or held unacknowledged by a consumer (rabbitmqctl sees both)."""
    vhost = Connection(broker_url).virtual_host
    listing = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "-p", vhost, "name", "messages"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
    return int(counts[name])


def take_items(broker_url: str, name: str, items: Callable[[bytes], Sequence[T]]) -> list[T]:
    """Every item waiting on a queue, taken off it, in order; `items` decodes one message's batch."""
    out: list[T] = []
    with Connection(broker_url) as conn:
        q = queue(name)(conn.default_channel)
        while (message := q.get(no_ack=True)) is not None:
            out.extend(items(message.body))
    return out


def take_queued(broker_url: str, name: str) -> list[NotificationMessage]:
    """Every notification waiting on a db-* or send-* queue, taken off it."""
    return take_items(broker_url, name, lambda body: NotificationBatch.FromString(body).notifications)


@dataclass
class Receiver:
    """A service's callback receiver: records every request and answers each with the next of `answers`
    (then 200)."""

    url: str
    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def http_receiver(path: str) -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 taking POSTs at `path` (its query included in the URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    recorded = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with recorded.lock:
                recorded.requests.append((dict(self.headers.items()), body))
                status = recorded.answers.pop(0) if recorded.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()
