"""The provider simulator's HTTP/1.1 server: keep-alive connections on one event loop, parsed by httptools.

The simulator runs beside the pipeline it measures, so a request costs what it must and no more: no
thread per connection, no ``http.server`` parsing, one write per answer. A handler answers at once with
an ``Answer``, or with an awaitable when the answer has to wait (injected latency, a held request); a
connection answers its requests in order, one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Final, cast

import httptools
import orjson

from herald.providers._sim_sends import Answer, error

__all__ = ["Handler", "HttpServer"]

logger = logging.getLogger("herald.providers.simulator")

# (method, path, body, headers keyed by lower-case name) -> the answer, now or later.
Handler = Callable[[str, str, bytes, Mapping[str, str]], Answer | Awaitable[Answer]]

# Idle keep-alive connections are closed after this long, checked every _SWEEP_SECONDS.
IDLE_SECONDS: Final = 60.0
_SWEEP_SECONDS: Final = 10.0
_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request that has already been answered."""


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


def _path(target: bytes) -> str:
    """The path of a request target: origin form (``/a?b``) or, rarely, absolute form (``http://h/a``)."""
    if not target.startswith(b"/"):
        target = httptools.parse_url(target).path or b"/"
    return target.partition(b"?")[0].decode("latin-1")


def encode(answer: Answer, keep_alive: bool) -> bytes:
    """The whole HTTP answer, status line to body."""
    if answer.raw is None:
        body = orjson.dumps(answer.payload)
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            answer.status,
            _REASONS.get(answer.status, b""),
            len(body),
        )
    else:
        body = answer.raw
        head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (
            answer.status,
            _REASONS.get(answer.status, b""),
            len(body),
        )
    for name, value in answer.headers:
        head += f"{name}: {value}\r\n".encode("latin-1")
    if not keep_alive:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


class _Connection(asyncio.Protocol):
    """One client connection: httptools calls the ``on_*`` methods as it parses what arrives."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._target = b""
        self._path = ""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._queue: deque[_Request] = deque()
        self._pending: asyncio.Task[None] | None = None  # the request being answered later, if any
        self._closed = False
        self.last_active = time.monotonic()

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        # A request being answered later goes on (a provider that took a message keeps it even if the
        # client gave up); its answer goes nowhere.
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self.last_active = time.monotonic()
        try:
            self._parser.feed_data(data)
        except _Refused:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Refused):
                logger.exception("provider simulator: unhandled error reading a request")
                self._refuse(500, error("internal_error", "simulator failure"))
        except httptools.HttpParserUpgrade:
            self._refuse(400, error("bad_request", "upgrades are not supported"))
        except httptools.HttpParserError:
            self._refuse(400, error("bad_request", "malformed HTTP request"))

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._target = b""
        self._raw_headers = []
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._path = _path(self._target)
        self._limit = self._server.max_body_bytes(self._path)
        declared = 0
        expect_continue = False
        for name, value in self._raw_headers:
            lowered = name.lower()
            if lowered == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif lowered == b"expect":
                expect_continue = value.lower() == b"100-continue"
        if not 0 <= declared <= self._limit:
            # The body cannot be skipped reliably, so the connection cannot be reused either.
            self._refuse(400 if declared < 0 else 413, error("bad_request", "bad or oversized Content-Length"))
            raise _Refused
        if expect_continue and self._transport is not None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:  # a chunked body names no length up front
            self._refuse(413, error("bad_request", "oversized body"))
            raise _Refused
        self._body.append(body)

    def on_message_complete(self) -> None:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in self._raw_headers}
        method = self._parser.get_method().decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._queue.append(_Request(method, self._path, headers, body, self._parser.should_keep_alive()))
        if self._pending is None:
            self._answer_queued()

    # --- answering ---

    def _answer_queued(self) -> None:
        """Answer the queued requests in order, until one has to wait (it resumes this when answered)."""
        while self._queue and not self._closed:
            request = self._queue.popleft()
            answer = self._server.handle(request.method, request.path, request.body, request.headers)
            if isinstance(answer, Answer):
                self._write(answer, request.keep_alive)
                continue
            self._pending = asyncio.ensure_future(self._answer_later(answer, request.keep_alive))
            return

    async def _answer_later(self, answer: Awaitable[Answer], keep_alive: bool) -> None:
        try:
            self._write(await answer, keep_alive)
        except Exception:
            logger.exception("provider simulator: failed to answer a request")
            self._write(Answer(500, error("internal_error", "simulator failure")), False)
        self._pending = None
        self._answer_queued()

    def _write(self, answer: Answer, keep_alive: bool) -> None:
        if self._closed or self._transport is None:
            return
        if answer.drop:
            self.close()
            return
        self._transport.write(encode(answer, keep_alive))
        if not keep_alive:
            self.close()

    def _refuse(self, status: int, payload: dict[str, str]) -> None:
        self._write(Answer(status, payload), False)

    def close(self) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._queue.clear()
            self._transport.close()


class HttpServer:
    """Serves ``handle`` on a listening socket from the running event loop, until ``close()``."""

    def __init__(self, handle: Handler, max_body_bytes: Callable[[str], int]) -> None:
        self.handle = handle
        self.max_body_bytes = max_body_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        # Benchmarks open many connections at once: a short backlog would refuse some.
        self._server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=1024)
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        idle_since = time.monotonic() - IDLE_SECONDS
        for connection in [c for c in self.connections if c.last_active < idle_since]:
            connection.close()
        self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def close(self) -> None:
        """Stop listening and close every connection (a request held unanswered is dropped)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()


class _ClientConnection(asyncio.Protocol):
    """One keep-alive connection of an ``HttpClient``: one request at a time, its answer's status read."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[int] | None = None
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionResetError("the connection closed before the answer"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            if self._answer is not None and not self._answer.done():
                self._answer.set_exception(exc)
            self.close()

    def on_message_complete(self) -> None:
        self.reusable = self.reusable and self._parser.should_keep_alive()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(self._parser.get_status_code())

    def request(self, raw: bytes) -> asyncio.Future[int]:
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return self._answer

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()


class HttpClient:
    """Posts ready-made HTTP/1.1 requests (``request()`` makes them) to one ``http://host:port`` over
    keep-alive connections, as many as requests go at once, from the running loop. Answers' bodies are
    not read: a provider's webhook only needs to know its post was taken. Much cheaper per post than
    httpx's async client, which cost the simulator milliseconds of CPU per receipt under load."""

    def __init__(self, base_url: str, timeout: float) -> None:
        url = httptools.parse_url(base_url.encode())
        if url.schema != b"http" or not url.host:
            raise ValueError(f"webhooks are posted to http://host[:port], not {base_url!r}")
        self._host = url.host.decode()
        self._port = url.port or 80
        self._prefix = (url.path or b"").decode().rstrip("/")
        self._authority = f"{self._host}:{self._port}"
        self._timeout = timeout
        self._idle: list[_ClientConnection] = []

    def request(self, path: str, content: bytes, headers: Mapping[str, str]) -> bytes:
        head = f"POST {self._prefix}{path} HTTP/1.1\r\nHost: {self._authority}\r\nContent-Length: {len(content)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return head.encode("latin-1") + b"\r\n" + content

    async def post(self, raw: bytes) -> int:
        """The answer's status; raises OSError, TimeoutError or httptools.HttpParserError."""
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                break
        else:
            loop = asyncio.get_running_loop()
            _, connection = await asyncio.wait_for(
                loop.create_connection(_ClientConnection, self._host, self._port), self._timeout
            )
        try:
            status = await asyncio.wait_for(connection.request(raw), self._timeout)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._idle.append(connection)
        return status

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
