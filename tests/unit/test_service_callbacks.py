"""Delivery-status callbacks: what is accepted, what is sent, and what a failure leads to."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from herald.crypto import SecretBox
from herald.db import services as services_db
from herald.queues import Delivery
from herald.queues.topology import DEAD_LETTER, SERVICE_CALLBACK_QUEUE, SERVICE_CALLBACK_RETRY_QUEUE
from herald.service_layer import service_callbacks as sc
from herald.service_layer.errors import InvalidRequest
from herald.v1.queue_pb2 import ServiceCallback, ServiceCallbackBatch

SERVICE = "0b8a6a39-5a48-4c1d-9c33-3f4f1f8d5a11"


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://example.com/callback?x=1", False, None),
        ("https://example.com:8443/callback", False, None),
        ("http://127.0.0.1:8000/callback", True, None),
        ("http://example.com/callback", False, "url must be https"),
        ("not a url", True, "url is not a valid https URL"),
        ("https://", False, "url is not a valid https URL"),
        ("ftp://example.com/", True, "url is not a valid https URL"),
        ("https://example.com:port/", False, "url is not a valid https URL"),
        ("https://exa mple.com/", False, "url is not a valid https URL"),
        ("https://example.com/" + "a" * 2000, False, "url"),
    ],
)
def test_callback_urls(url: str, allow_http: bool, problem: str | None) -> None:
    if problem is None:
        assert sc.check_url(url, allow_http=allow_http) == url
        return
    with pytest.raises(InvalidRequest) as raised:
        sc.check_url(url, allow_http=allow_http)
    [(bad_field, message)] = raised.value.violations
    assert bad_field == "url" and problem in message


@pytest.mark.parametrize(
    ("token", "ok"),
    [("0123456789", True), ("012345678", False), ("", False), ("with space inside", False), ("tab\there12", False)],
)
def test_bearer_tokens_are_at_least_ten_characters_without_spaces(token: str, ok: bool) -> None:
    if ok:
        assert sc.check_token(token) == token
        return
    with pytest.raises(InvalidRequest) as raised:
        sc.check_token(token)
    assert raised.value.violations[0][0] == "bearer_token"


def _callback(**changes: Any) -> ServiceCallback:
    fields: dict[str, Any] = {
        "service_id": SERVICE,
        "id": "5a4a0f0e-9b3c-4a57-8f61-0b0a3b8a1c22",
        "to": "447700900123",
        "status": "delivered",
        "notification_type": "sms",
        "template_id": "6f3a4b2c-1d2e-4f5a-8b9c-0d1e2f3a4b5c",
        "template_version": 3,
    }
    callback = ServiceCallback(**{**fields, **changes})
    callback.created_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC))
    return callback


def test_the_body_is_notifys_with_its_nulls_and_time_format() -> None:
    callback = _callback(reference="ref-7")
    callback.completed_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 9, tzinfo=UTC))
    assert json.loads(sc.callback_body(callback)) == {
        "id": callback.id,
        "reference": "ref-7",
        "to": "447700900123",
        "status": "delivered",
        "created_at": "2026-01-02T03:04:05.600000Z",
        "completed_at": "2026-01-02T03:04:09.000000Z",
        "sent_at": None,
        "notification_type": "sms",
        "template_id": callback.template_id,
        "template_version": 3,
    }
    assert json.loads(sc.callback_body(_callback()))["reference"] is None


def test_the_signature_is_an_hmac_of_the_exact_body() -> None:
    body = sc.callback_body(_callback())
    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert sc.signature("secret", body) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, sc.SENT), (204, sc.SENT), (500, sc.RETRY), (503, sc.RETRY), (429, sc.RETRY), (400, sc.REFUSED)],
)
def test_which_answers_are_retried(status: int, outcome: str) -> None:
    assert sc.classify(status) == outcome


@dataclass
class _Message:
    acknowledged: bool = False

    def ack(self) -> None:
        self.acknowledged = True


@dataclass
class _Publisher:
    published: list[tuple[str, bytes, dict[str, str] | None]] = field(default_factory=list)

    def publish_batch(self, items: Sequence[tuple[str, bytes]], headers: dict[str, str] | None = None) -> None:
        self.published.extend((key, body, headers) for key, body in items)

    def on(self, queue: str) -> list[ServiceCallback]:
        found: list[ServiceCallback] = []
        for key, body, _ in self.published:
            if key == queue:
                batch = ServiceCallbackBatch()
                batch.ParseFromString(body)
                found.extend(batch.callbacks)
        return found


class _Engine:
    @contextmanager
    def connect(self) -> Iterator[None]:
        yield None


def _send(answer: Any, callbacks: list[ServiceCallback], monkeypatch: pytest.MonkeyPatch) -> tuple[_Publisher, int]:
    """Runs one batch through a CallbackSender whose receiver answers with `answer(request)`; returns the
    publisher and how many requests were made."""
    box = SecretBox("test")
    row = services_db.CallbackRow(
        SERVICE, "https://receiver.example/cb", box.encrypt("a-long-token"), box.encrypt("s"), datetime.now(UTC)
    )
    monkeypatch.setattr(services_db, "callbacks", lambda conn, kind, ids: {SERVICE: row})
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return answer(request)  # type: ignore[no-any-return]

    publisher = _Publisher()
    sender = sc.CallbackSender(
        _Engine(),  # type: ignore[arg-type]
        box,
        publisher,
        concurrency=4,
        per_receiver=2,
        cache_seconds=5,
        client=httpx.Client(transport=httpx.MockTransport(handle)),
    )
    body = ServiceCallbackBatch(callbacks=callbacks).SerializeToString()
    delivery = Delivery(SERVICE_CALLBACK_QUEUE, body, False, _Message(), {})
    sender([delivery])
    sender.close()
    assert delivery.message.acknowledged
    return publisher, len(calls)


def test_a_dead_receiver_costs_one_call_per_lane_and_every_callback_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    callbacks = [_callback(id=f"00000000-0000-4000-8000-00000000000{i}") for i in range(6)]
    publisher, calls = _send(refuse, callbacks, monkeypatch)
    assert 1 <= calls <= 2  # at most one per lane (per_receiver): a lane stops calling once the host failed
    retried = publisher.on(SERVICE_CALLBACK_RETRY_QUEUE)
    assert sorted(c.id for c in retried) == sorted(c.id for c in callbacks)
    assert {c.attempt for c in retried} == {1}


def test_the_fifth_retry_failing_gives_up_to_the_dead_letter_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    publisher, calls = _send(lambda request: httpx.Response(500), [_callback(attempt=sc.RETRIES)], monkeypatch)
    assert calls == 1
    assert publisher.on(SERVICE_CALLBACK_RETRY_QUEUE) == []
    [(key, _, headers)] = publisher.published
    assert key == DEAD_LETTER and headers is not None and headers["x-herald-queue"] == SERVICE_CALLBACK_QUEUE


def test_a_refusal_is_not_retried_and_a_success_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    publisher, _ = _send(lambda request: httpx.Response(404), [_callback()], monkeypatch)
    assert [key for key, _, _ in publisher.published] == [DEAD_LETTER]
    publisher, calls = _send(lambda request: httpx.Response(200), [_callback()], monkeypatch)
    assert calls == 1 and publisher.published == []
