"""Received text messages end to end, the way real providers and Notify's client reach them: the provider
simulator posts a text to the gateway's inbound webhook as MMG or Firetext (`POST /_inbound`), callbacks
makes it durable, the inbound-sms dispatcher stores it, and Notify's own client lists it through
`GET /v2/received-text-messages`. Bad webhook bodies are 400s with nothing stored."""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from notifications_python_client.authentication import create_jwt_token
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from herald import cli
from herald.db import inbound as inbound_db
from herald.domain import inbound
from tests.gateway.conftest import Stack
from tests.support import wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def client(stack: Stack, key: str) -> Any:
    return NotificationsAPIClient(key, base_url=stack.base_url)  # type: ignore[no-untyped-call]


def new_service(stack: Stack, engine: Engine) -> tuple[str, str, str]:
    """A service of its own with an inbound number of its own: (service id, live key, number)."""
    service_id = stack.admin.create_service(f"inbound {uuid.uuid4()}")
    key = stack.admin.create_api_key(service_id, "live", "normal")
    number = inbound.phone_number(f"07900{random.randrange(100_000, 1_000_000)}", "number")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO inbound_numbers (number, service_id) VALUES (:number, :service_id)"),
            {"number": number, "service_id": service_id},
        )
    return service_id, key, number


def count(engine: Engine, service_id: str) -> int:
    with engine.connect() as conn:
        query = text("SELECT count(*) FROM inbound_sms WHERE service_id = :s")
        return int(conn.execute(query, {"s": service_id}).scalar_one())


def text_in(stack: Stack, provider: str, to: str, sender: str, content: str) -> httpx.Response:
    body = {"provider": provider, "to": to, "from": sender, "text": content}
    return httpx.post(f"{stack.simulator.url}/_inbound", json=body, timeout=30)


@pytest.mark.parametrize("provider", ["mmg", "firetext"])
def test_a_text_to_the_inbound_number_reaches_notify_s_client(stack: Stack, engine: Engine, provider: str) -> None:
    service_id, key, number = new_service(stack, engine)
    local = "0" + number[2:]  # as a person dials it
    content = f"Yes, 50% + 1 more 😀 {provider}"
    before = REGISTRY.get_sample_value("herald_inbound_received_total", {"provider": provider}) or 0.0
    answer = text_in(stack, provider, local, "07700 900 123", content)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": 200, "answer": {"status": "ok"}}
    api = client(stack, key)
    texts = wait_for(lambda: api.get_received_texts()["received_text_messages"] or None, timeout=20)
    [received] = texts
    assert set(received) == {"id", "created_at", "service_id", "notify_number", "user_number", "content"}
    assert (received["service_id"], received["notify_number"]) == (service_id, number)
    assert (received["user_number"], received["content"]) == ("447700900123", content)
    assert TIMESTAMP.match(received["created_at"])
    assert REGISTRY.get_sample_value("herald_inbound_received_total", {"provider": provider}) == before + 1


def test_pages_through_notify_s_iterator_and_links(stack: Stack, engine: Engine) -> None:
    service_id, key, number = new_service(stack, engine)
    start = datetime.now(UTC) - timedelta(hours=1)
    rows = [
        {
            "id": str(uuid.uuid4()),
            "service_id": service_id,
            "notify_number": number,
            "user_number": "447700900123",
            "content": f"text {i}",
            "provider_date": None,
            "provider_reference": None,
            "provider": "mmg",
            "created_at": start + timedelta(seconds=i),
        }
        for i in range(253)
    ]
    with engine.begin() as conn:
        inbound_db.insert_texts(conn, rows)
    api = client(stack, key)
    listed = [t["content"] for t in api.get_received_texts_iterator()]
    assert listed == [f"text {i}" for i in reversed(range(253))]
    base = f"{stack.base_url}/v2/received-text-messages"
    first = api.get_received_texts()
    assert len(first["received_text_messages"]) == 250
    last_id = first["received_text_messages"][-1]["id"]
    assert first["links"] == {"current": base, "next": f"{base}?older_than={last_id}"}
    second = api.get_received_texts(older_than=last_id)
    assert [t["content"] for t in second["received_text_messages"]] == ["text 2", "text 1", "text 0"]
    end = api.get_received_texts(older_than=second["received_text_messages"][-1]["id"])
    assert end == {"received_text_messages": [], "links": {"current": base}}
    assert api.get_received_texts(older_than=str(uuid.uuid4()))["received_text_messages"] == []


def test_another_service_sees_none_of_them(stack: Stack, engine: Engine) -> None:
    service_id, _, number = new_service(stack, engine)
    assert text_in(stack, "mmg", number, "07700900123", "private").status_code == 200
    wait_for(lambda: count(engine, service_id) or None, timeout=20)
    assert client(stack, stack.demo.live_key).get_received_texts()["received_text_messages"] == []


def errors_of(call: Any) -> tuple[int, Any]:
    with pytest.raises(HTTPError) as err:
        call()
    return err.value.status_code, err.value.message


def test_bad_list_requests_are_notify_s_errors(stack: Stack) -> None:
    api = client(stack, stack.demo.live_key)
    assert errors_of(lambda: api.get_received_texts(older_than="not-a-uuid")) == (
        400,
        [{"error": "ValidationError", "message": "older_than is not a valid UUID"}],
    )
    key = stack.demo.live_key
    token = create_jwt_token(key[-36:], key[-73:-37])  # type: ignore[no-untyped-call]
    answer = httpx.get(
        f"{stack.base_url}/v2/received-text-messages?page=2", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        {"error": "ValidationError", "message": "Additional properties are not allowed (page was unexpected)"}
    ]
    stranger = client(stack, f"stranger-{uuid.uuid4()}-{uuid.uuid4()}")
    assert errors_of(lambda: stranger.get_received_texts())[0] == 403


def post_webhook(stack: Stack, provider: str, body: bytes, content_type: str, password: str = "") -> httpx.Response:
    credential = password or stack.settings.callback_credentials()[provider]
    return httpx.post(
        f"{stack.base_url}/notifications/sms/receive/{provider}",
        content=body,
        headers={"Content-Type": content_type},
        auth=("herald", credential),
        timeout=30,
    )


def mmg(**fields: object) -> bytes:
    body: dict[str, object] = {"MSISDN": "447700900123", "Number": "447700900999", "Message": "hi", "ID": "m-1"}
    return orjson.dumps({k: v for k, v in (body | fields).items() if v is not None})


def test_a_text_to_a_number_no_service_owns_is_answered_ok_and_dropped(stack: Stack) -> None:
    before = REGISTRY.get_sample_value("herald_inbound_unknown_number_total", {"provider": "mmg"}) or 0.0
    number = inbound.phone_number(f"07900{random.randrange(100_000, 1_000_000)}", "number")
    answer = post_webhook(stack, "mmg", mmg(Number=number), "application/json")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    wait_for(
        lambda: (
            (REGISTRY.get_sample_value("herald_inbound_unknown_number_total", {"provider": "mmg"}) or 0) > before
            or None
        ),
        timeout=20,
    )


@pytest.mark.parametrize(
    ("provider", "body", "content_type", "message"),
    [
        ("mmg", b"{not json", "application/json", "MMG inbound SMS failed: invalid JSON"),
        ("mmg", b"[1, 2]", "application/json", "MMG inbound SMS failed: invalid JSON"),
        ("mmg", mmg(MSISDN=None), "application/json", ["MMG inbound SMS failed: MSISDN missing"]),
        (
            "mmg",
            mmg(Number="", ID=None, Message=None),
            "application/json",
            [
                "MMG inbound SMS failed: Number missing",
                "MMG inbound SMS failed: ID missing",
                "MMG inbound SMS failed: Message missing",
            ],
        ),
        ("mmg", mmg(Message=["a list"]), "application/json", "MMG inbound SMS failed: Message is not text"),
        ("mmg", mmg(DateRecieved="yesterday"), "application/json", "provider_date is not a date and time"),
        ("mmg", mmg(Message="nul+%00+inside"), "application/json", "content"),
        (
            "firetext",
            b"source=447700900123&destination=447700900999&time=2026-06-01+10%3A00%3A00",
            "application/x-www-form-urlencoded",
            ["Firetext inbound SMS failed: message missing"],
        ),
        (
            "firetext",
            b"source=447700900123&destination=447700900999&message=%FF&time=2026-06-01+10%3A00%3A00",
            "application/x-www-form-urlencoded",
            "Firetext inbound SMS failed: not UTF-8",
        ),
    ],
)
def test_bad_webhook_bodies_are_400_and_nothing_is_kept(
    stack: Stack, provider: str, body: bytes, content_type: str, message: str | list[str]
) -> None:
    before = REGISTRY.get_sample_value("herald_inbound_received_total", {"provider": provider}) or 0.0
    answer = post_webhook(stack, provider, body, content_type)
    assert answer.status_code == 400, answer.text
    said = answer.json()
    assert said["result"] == "error"
    if isinstance(message, list):
        assert said["message"] == message
    else:
        assert message in said["message"]
    assert (REGISTRY.get_sample_value("herald_inbound_received_total", {"provider": provider}) or 0.0) == before


def test_a_post_without_the_provider_s_credential_is_401(stack: Stack) -> None:
    answer = post_webhook(stack, "firetext", b"source=1&destination=2&message=x&time=x", "text/plain", "wrong")
    assert answer.status_code == 401
    assert httpx.post(f"{stack.base_url}/notifications/sms/receive/mmg", content=mmg()).status_code == 401


def test_herald_provider_sim_inbound_sends_one_the_real_way(
    stack: Stack, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    service_id, key, number = new_service(stack, engine)
    argv = ["provider-sim", "inbound", "--simulator", stack.simulator.url, "--to", number, "--from", "07700900123"]
    assert cli.main([*argv, "--text", "from the CLI", "--provider", "firetext"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"status": 200, "answer": {"status": "ok"}}
    api = client(stack, key)
    [received] = wait_for(lambda: api.get_received_texts()["received_text_messages"] or None, timeout=20)
    assert (received["service_id"], received["content"]) == (service_id, "from the CLI")
    assert cli.main(["provider-sim", "inbound", "--simulator", stack.simulator.url, "--to", number]) == 2
