"""How the SMS provider clients reach the network: keep-alive HTTP/1.1 connections per provider, and
`post_all`, which takes a batch's requests out side by side from the calling thread.

The transport is the clients' one seam (as httpx's transports are): the default goes over the network,
tests pass one of their own. It knows nothing of providers; it says only what became of a request, in
the three ways the retry rules care about.

Why not an HTTP library: a dispatcher hands thousands of messages a second to providers, and the CPU a
hand-off costs is the dispatcher's ceiling. Through urllib3's pool and 64 hand-off threads a hand-off
cost about 0.3 ms of the send dispatcher's CPU (request building, HTTPResponse machinery, the threads'
hand-overs); here one thread drives every request of a batch with non-blocking sockets and one selector,
and httptools (llhttp, in C) parses the answers.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

# "connect": the request never left, so no provider holds the message; "timeout": it left and no answer
# came in time; "broken": the connection failed mid-request or mid-answer. The last two are ambiguous.
FailureKind = Literal["connect", "timeout", "broken"]


class TransportFailed(Exception):
    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: FailureKind = kind
        self.detail = detail


@dataclass(slots=True)  # not frozen: made once per hand-off, and frozen costs four times as much
class HttpAnswer:
    status: int
    content: bytes


class Transport(Protocol):
    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """POST `body` to `path` (relative to the provider's base URL); raises TransportFailed."""
        ...

    def close(self) -> None: ...


# One request for post_all: the transport, the path, the body and its headers.
HttpPost = tuple[Transport, str, bytes, Mapping[str, str]]
# What became of it, and how long it took (seconds).
Posted = tuple[HttpAnswer | TransportFailed, float]


class PooledTransport:
    """Keep-alive connections to one provider, at most `maxsize` kept idle between batches; never
    retries on its own: whether to send again is the dispatcher's retry schedule's call, and a blind
    retry after the request left could deliver a message twice. `timeout` bounds the connect, and then
    each wait for the answer's next bytes. An https URL is verified against the system's CAs unless
    `tls` says otherwise."""

    def __init__(self, base_url: str, *, timeout: float, maxsize: int, tls: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"a provider URL must be http(s)://host[:port][/path], not {base_url!r}")
        self.timeout = timeout
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._tls = (tls or ssl.create_default_context()) if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = f"{host}:{url.port}" if url.port else host
        self._maxsize = maxsize
        self._idle: list[_Connection] = []

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        [(outcome, _)] = post_all([(self, path, body, headers)], 1)
        if isinstance(outcome, TransportFailed):
            raise outcome
        return outcome

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _encode(self, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {self._prefix}{path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
            f"Content-Length: {len(body)}\r\n{lines}\r\n"
        )
        return head.encode("latin-1") + body

    def _take(self) -> _Connection | None:
        """An idle connection still open (the provider may have closed it meanwhile), or None."""
        while True:
            try:
                conn = self._idle.pop()  # atomic: a client may be used from several threads
            except IndexError:
                return None
            if conn.reusable():
                return conn
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        if len(self._idle) < self._maxsize:
            self._idle.append(conn)
        else:
            conn.close()

    def _connect(self) -> socket.socket:
        """A non-blocking socket with its connect under way, to the first of the host's addresses that
        does not refuse at once; raises OSError when none will even start."""
        error: OSError = ConnectionRefusedError()
        for family, kind, proto, _, address in socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS):
                return sock
            sock.close()
            error = OSError(code, os.strerror(code))
        raise error


_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_raw_recv = socket.socket.recv  # below TLS: an idle connection's check looks at the socket itself


class _Framing:
    """What an answer's headers say of where it ends (httptools calls on_header)."""

    __slots__ = ("chunked", "length")

    def __init__(self) -> None:
        self.length = False
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.length = True
        elif name == b"transfer-encoding":
            # Chunked only when it is the last coding; otherwise the end of the connection ends the body.
            self.chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"


class _Connection:
    """One keep-alive connection and its answer parser (httptools calls the on_* methods)."""

    __slots__ = ("body", "complete", "head", "keep_alive", "parser", "sock", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = HttpResponseParser(self)
        self.body: list[bytes] = []
        # What arrived until the answer's headers were in: read again only if the connection ends first.
        self.head: list[bytes] = []
        self.status = 0  # until the answer's headers are in
        self.keep_alive = False
        self.complete = False

    def feed(self, data: bytes) -> None:
        if not self.status:
            self.head.append(data)
        self.parser.feed_data(data)

    # The parser's state is read in its callbacks: it starts over once an answer is complete.
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    def answer(self) -> HttpAnswer:
        answer = HttpAnswer(self.status, b"".join(self.body))
        self.body = []
        self.head.clear()
        self.status = 0
        self.complete = False
        return answer

    def ends_at_eof(self) -> bool:
        """Whether the end of the connection completes the answer under way: its headers are in and
        declare neither a Content-Length nor chunked encoding. Anything else was cut short. httptools
        cannot tell: it does not expose llhttp_finish (feeding it b"" finishes nothing), and
        should_keep_alive() is False under `Connection: close` whatever the framing, so the headers are
        read again, only on this rare path, rather than paying an on_header call per header per answer."""
        if not self.status:
            return False
        framing = _Framing()
        HttpResponseParser(framing).feed_data(b"".join(self.head))
        return not (framing.length or framing.chunked)

    def reusable(self) -> bool:
        """Idle and still open: nothing to read yet (a closed connection reads as end of file)."""
        try:
            _raw_recv(self.sock, 1, _PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def close(self) -> None:
        self.sock.close()


_CONNECTING, _HANDSHAKE, _SENDING, _READING = range(4)


class _Flight:
    """One request on its way: which, over what, how far it got, and until when it may wait."""

    __slots__ = ("conn", "data", "deadline", "index", "sent", "started", "state", "transport")

    def __init__(self, index: int, transport: PooledTransport, data: bytes, started: float) -> None:
        self.index = index
        self.transport = transport
        self.conn: _Connection | None = None
        self.data = memoryview(data)
        self.state = _SENDING
        self.deadline = started + transport.timeout
        self.started = started
        self.sent = False  # whether any of the request left: a failure after that is ambiguous


class _Exchange:
    """post_all's event loop for the PooledTransport requests of one call."""

    def __init__(self, requests: Sequence[HttpPost], indexes: Sequence[int], results: list[Posted | None]) -> None:
        self._requests = requests
        self._waiting = deque(indexes)
        self._results = results
        self._selector = selectors.DefaultSelector()
        self._flying: dict[int, _Flight] = {}  # by file descriptor

    def run(self, in_flight: int) -> None:
        try:
            while self._waiting or self._flying:
                while self._waiting and len(self._flying) < in_flight:
                    self._start(self._waiting.popleft())
                if not self._flying:
                    continue
                now = time.monotonic()
                wait = min(f.deadline for f in self._flying.values()) - now
                for key, _ in self._selector.select(max(wait, 0.0)):
                    self._advance(key.data)
                now = time.monotonic()
                for flight in [f for f in self._flying.values() if f.deadline <= now]:
                    late: FailureKind = "connect" if flight.state in (_CONNECTING, _HANDSHAKE) else "timeout"
                    self._fail(flight, late, "timed out")
        finally:
            for flight in list(self._flying.values()):
                self._fail(flight, "broken", "abandoned")
            self._selector.close()

    def _start(self, index: int) -> None:
        transport, path, body, headers = self._requests[index]
        assert isinstance(transport, PooledTransport)
        flight = _Flight(index, transport, transport._encode(path, body, headers), time.monotonic())
        conn = transport._take()
        if conn is not None:
            flight.conn = conn
            self._send(flight)
            return
        try:
            flight.conn = _Connection(transport._connect())
        except OSError as exc:
            self._results[index] = (TransportFailed("connect", type(exc).__name__), 0.0)
            return
        flight.state = _CONNECTING
        self._watch(flight, selectors.EVENT_WRITE)

    def _watch(self, flight: _Flight, events: int) -> None:
        assert flight.conn is not None
        fd = flight.conn.sock.fileno()
        if fd in self._flying:
            self._selector.modify(fd, events, flight)
        else:
            self._flying[fd] = flight
            self._selector.register(fd, events, flight)

    def _advance(self, flight: _Flight) -> None:
        if flight.state == _READING:
            self._read(flight)
        elif flight.state == _SENDING:
            self._send(flight)
        elif flight.state == _CONNECTING:
            self._connected(flight)
        else:
            self._handshake(flight)

    def _connected(self, flight: _Flight) -> None:
        conn = flight.conn
        assert conn is not None
        error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._fail(flight, "connect", errno.errorcode.get(error, str(error)))
            return
        flight.deadline = time.monotonic() + flight.transport.timeout
        tls = flight.transport._tls
        if tls is None:
            flight.state = _SENDING
            self._send(flight)
            return
        # The TLS socket keeps the file descriptor: the selector's registration stands.
        conn.sock = tls.wrap_socket(conn.sock, server_hostname=flight.transport._host, do_handshake_on_connect=False)
        flight.state = _HANDSHAKE
        self._handshake(flight)

    def _wait(self, flight: _Flight, would_block: OSError) -> None:
        """Wait for what the socket said it needs: TLS may have to read before it can write."""
        wanted = selectors.EVENT_READ if isinstance(would_block, ssl.SSLWantReadError) else selectors.EVENT_WRITE
        self._watch(flight, wanted)

    def _handshake(self, flight: _Flight) -> None:
        conn = flight.conn
        assert isinstance(conn, _Connection) and isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            self._wait(flight, exc)
            return
        except OSError as exc:
            self._fail(flight, "connect", type(exc).__name__)
            return
        flight.state = _SENDING
        self._send(flight)

    def _send(self, flight: _Flight) -> None:
        conn = flight.conn
        assert conn is not None
        try:
            sent = conn.sock.send(flight.data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError) as exc:
            self._wait(flight, exc)
            return
        except OSError as exc:
            self._fail(flight, "broken" if flight.sent else "connect", type(exc).__name__)
            return
        flight.sent = True
        flight.data = flight.data[sent:]
        if flight.data:
            self._watch(flight, selectors.EVENT_WRITE)
            return
        flight.state = _READING
        flight.deadline = time.monotonic() + flight.transport.timeout
        self._watch(flight, selectors.EVENT_READ)

    def _read(self, flight: _Flight) -> None:
        conn = flight.conn
        assert conn is not None
        try:
            data = conn.sock.recv(65536)
            if data:
                conn.feed(data)
                # TLS may hold decrypted bytes that the selector cannot see.
                while not conn.complete and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                    conn.feed(conn.sock.recv(65536))
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except ssl.SSLWantWriteError:
            self._watch(flight, selectors.EVENT_WRITE)
            return
        except (OSError, HttpParserError) as exc:
            self._fail(flight, "broken", type(exc).__name__)
            return
        if conn.complete:
            self._done(flight, keep=conn.keep_alive)
        elif data:
            flight.deadline = time.monotonic() + flight.transport.timeout
        elif conn.ends_at_eof():
            self._done(flight, keep=False)
        else:
            # Cut short (headers, a declared length or the last chunk missing): a provider may hold the
            # message, so it is "broken", retried at the same provider, not a malformed 2xx.
            self._fail(flight, "broken", "ConnectionClosed")

    def _finish(self, flight: _Flight) -> _Connection:
        conn = flight.conn
        assert conn is not None
        fd = conn.sock.fileno()
        if self._flying.pop(fd, None) is not None:
            self._selector.unregister(fd)
        return conn

    def _done(self, flight: _Flight, *, keep: bool) -> None:
        conn = self._finish(flight)
        self._results[flight.index] = (conn.answer(), time.monotonic() - flight.started)
        if keep:
            flight.transport._give_back(conn)
        else:
            conn.close()

    def _fail(self, flight: _Flight, kind: FailureKind, detail: str) -> None:
        conn = self._finish(flight)
        conn.close()
        self._results[flight.index] = (TransportFailed(kind, detail), time.monotonic() - flight.started)


def post_all(requests: Sequence[HttpPost], in_flight: int) -> list[Posted]:
    """Every request, at most `in_flight` at a time, each with what became of it and how long it took.
    PooledTransport requests go out side by side from this thread; any other transport's (a test's) one
    after another."""
    results: list[Posted | None] = [None] * len(requests)
    pooled: list[int] = []
    for index, (transport, path, body, headers) in enumerate(requests):
        if isinstance(transport, PooledTransport):
            pooled.append(index)
            continue
        started = time.monotonic()
        try:
            outcome: HttpAnswer | TransportFailed = transport.post(path, body, headers)
        except TransportFailed as exc:
            outcome = exc
        results[index] = (outcome, time.monotonic() - started)
    if pooled:
        _Exchange(requests, pooled, results).run(max(in_flight, 1))
    return [r for r in results if r is not None]
