"""The HTTP surface itself: bad requests are 400s in Notify's shape, never a 500; ingest away is a 503;
and (hypothesis) no request, however made, gets a 500 or a body outside the OpenAPI document."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from herald.domain.apikeys import create_token, split_key
from services.gateway import openapi
from services.gateway.app import start_gateway
from services.gateway.reading import MAX_BODY_BYTES
from tests.gateway.conftest import Stack
from tests.support import free_port, wait_for

DOCUMENT = openapi.document()


def bearer(key: str) -> dict[str, str]:
    parts = split_key(key)
    return {"Authorization": f"Bearer {create_token(parts.secret, parts.service_id)}"}


def conforms(response: httpx.Response, path: str, method: str) -> None:
    """The body is JSON and valid against what the document says of this operation and status."""
    body = response.json()
    if response.status_code in (404, 405) and "result" in body:  # no route matched (as Notify's app answers)
        schema: dict[str, Any] = {"$ref": "#/components/schemas/RouteError"}
    else:
        responses = DOCUMENT["paths"][path][method]["responses"]
        assert str(response.status_code) in responses, (response.status_code, body)
        schema = responses[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": DOCUMENT["components"]})


def test_malformed_requests_are_notify_400s(stack: Stack) -> None:
    headers = bearer(stack.demo.live_key)
    url = f"{stack.base_url}/v2/notifications/sms"
    invalid_json = {
        "status_code": 400,
        "errors": [{"error": "BadRequestError", "message": "Invalid JSON supplied in POST data"}],
    }
    as_json, as_text = {**headers, "Content-Type": "application/json"}, {**headers, "Content-Type": "text/plain"}
    wrong_types = {"phone_number": 7700900123, "template_id": 5, "personalisation": [], "colour": "red"}
    unexpected = "Additional properties are not allowed (colour was unexpected)"
    required = "phone_number is a required property"
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"content": b"{not json", "headers": as_json}, invalid_json),
        ({"content": b'{"phone_number": "07700900123"}', "headers": as_text}, invalid_json),
        ({"content": b"", "headers": as_json}, invalid_json),
        (
            {"json": wrong_types, "headers": headers},
            {
                "status_code": 400,
                "errors": [
                    {"error": "ValidationError", "message": "phone_number 7700900123 is not of type string"},
                    {"error": "ValidationError", "message": "template_id is not a valid UUID"},
                    {"error": "ValidationError", "message": "personalisation [] is not of type object"},
                    {"error": "ValidationError", "message": unexpected},
                ],
            },
        ),
        (
            {"json": [], "headers": headers},
            {"status_code": 400, "errors": [{"error": "ValidationError", "message": "[] is not of type object"}]},
        ),
        (
            {"json": {"template_id": stack.demo.sms_template_id}, "headers": headers},
            {"status_code": 400, "errors": [{"error": "ValidationError", "message": required}]},
        ),
    ]  # fmt: skip
    for request, expected in cases:
        response = httpx.post(url, **request)
        assert (response.status_code, response.json()) == (400, expected)
        conforms(response, "/v2/notifications/sms", "post")


def test_the_token_is_checked_before_the_body(stack: Stack) -> None:
    response = httpx.post(f"{stack.base_url}/v2/notifications/sms", content=b"{not json")
    assert response.status_code == 401
    assert response.json()["errors"] == [
        {"error": "AuthError", "message": "Unauthorized: authentication token must be provided"}
    ]


def test_a_body_over_10_mb_is_refused_before_it_is_read(stack: Stack) -> None:
    url = f"{stack.base_url}/v2/notifications/sms"
    headers = {**bearer(stack.demo.live_key), "Content-Type": "application/json"}
    declared = httpx.post(url, content=b"x" * (MAX_BODY_BYTES + 1), headers=headers)
    assert declared.status_code == 400
    assert declared.json()["errors"][0]["message"] == f"Request body too large: at most {MAX_BODY_BYTES} bytes"

    def chunks() -> Any:  # no Content-Length: refused once the stream passes the limit
        for _ in range(11):
            yield b" " * (1024 * 1024)

    streamed = httpx.post(url, content=chunks(), headers=headers)
    assert streamed.status_code == 400


def test_an_idempotency_key_makes_a_repeat_the_same_notification(stack: Stack) -> None:
    url = f"{stack.base_url}/v2/notifications/sms"
    body = {"phone_number": "07700900111", "template_id": stack.demo.research_sms_template_id,
            "personalisation": {"name": "x", "code": "1"}}  # fmt: skip
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = httpx.post(url, json=body, headers={**bearer(stack.demo.research_key), **key})
    again = httpx.post(url, json=body, headers={**bearer(stack.demo.research_key), **key})
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    unprintable = httpx.post(url, json=body, headers={**bearer(stack.demo.research_key), "Idempotency-Key": "a\tb"})
    assert (unprintable.status_code, unprintable.json()["errors"][0]["message"]) == (
        400,
        "Idempotency-Key must be printable ASCII",
    )


def test_an_idempotency_key_reused_with_another_request_is_a_400(stack: Stack) -> None:
    url = f"{stack.base_url}/v2/notifications/sms"
    body = {"phone_number": "07700900111", "template_id": stack.demo.research_sms_template_id,
            "personalisation": {"name": "x", "code": "1"}}  # fmt: skip
    headers = {**bearer(stack.demo.research_key), "Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 201
    # Checked against the stored row: wait until the db dispatcher has it.
    wait_for(lambda: httpx.get(f"{stack.base_url}/v2/notifications/{first.json()['id']}", headers=headers).is_success)
    reused = httpx.post(url, json={**body, "phone_number": "07700900222"}, headers=headers)
    assert reused.json() == {
        "status_code": 400,
        "errors": [
            {"error": "BadRequestError", "message": "This idempotency-key was already used for a different request"}
        ],
    }
    assert reused.status_code == 400
    conforms(reused, "/v2/notifications/sms", "post")
    assert httpx.post(url, json=body, headers=headers).json()["id"] == first.json()["id"]


def test_unknown_routes_and_methods_answer_as_notify_does(stack: Stack) -> None:
    missing = httpx.get(f"{stack.base_url}/v2/nothing-here")
    assert missing.status_code == 404 and missing.json()["result"] == "error"
    wrong_method = httpx.delete(f"{stack.base_url}/v2/notifications/sms")
    assert wrong_method.status_code == 405 and wrong_method.json()["result"] == "error"


def test_status_openapi_request_metrics_and_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="services.gateway"):
        assert httpx.get(f"{stack.base_url}/_status").json() == {"status": "ok"}
    [logged] = [vars(r) for r in caplog.records if r.getMessage() == "request"]
    assert {k: logged[k] for k in ("http_method", "route", "status", "path")} == {
        "http_method": "GET",
        "route": "status.show_status",
        "status": 200,
        "path": "/_status",
    }
    assert httpx.get(f"{stack.base_url}/openapi.json").json() == json.loads(json.dumps(DOCUMENT))
    labels = {"method": "GET", "module": "templates", "function": "get_templates", "status": "200"}
    before = REGISTRY.get_sample_value("herald_api_total", labels) or 0.0
    httpx.get(f"{stack.base_url}/v2/templates", headers=bearer(stack.demo.live_key)).raise_for_status()
    assert REGISTRY.get_sample_value("herald_api_total", labels) == before + 1
    assert (REGISTRY.get_sample_value("herald_api_seconds_count", labels) or 0) >= 1


def test_ingest_away_is_a_503_with_a_json_body(stack: Stack) -> None:
    s = replace(stack.settings, ingest_address=f"127.0.0.1:{free_port()}", gateway_address=f"127.0.0.1:{free_port()}")
    stop = start_gateway(s)
    try:
        response = httpx.post(
            f"http://{s.gateway_address}/v2/notifications/sms",
            json={"phone_number": "07700900123", "template_id": stack.demo.sms_template_id},
            headers=bearer(stack.demo.live_key),
            timeout=30,
        )
    finally:
        stop()
    assert response.status_code == 503
    assert response.json()["status_code"] == 503
    # The channel's own text (addresses, socket errors) is not shown.
    assert response.json()["errors"] == [
        {"error": "ServiceUnavailable", "message": "Service temporarily unavailable, try again"}
    ]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for every example (a client per request builds an SSL context each time)."""
    with httpx.Client(timeout=30) as client:
        yield client


OPERATIONS = [(path, method) for path, item in DOCUMENT["paths"].items() for method in item]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_known_fields = st.sampled_from(
    ["phone_number", "email_address", "template_id", "personalisation", "reference", "sms_sender_id",
     "email_reply_to_id", "one_click_unsubscribe_url", "sanitise_content_for", "scheduled_for", "content", "postage"]
)  # fmt: skip
_bodies = st.one_of(
    st.dictionaries(_known_fields | st.text(max_size=10), _json_values, max_size=6).map(
        lambda d: json.dumps(d).encode()
    ),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
_segments = st.one_of(
    st.uuids().map(str), st.text(max_size=40), st.integers(min_value=-(2**70), max_value=2**70).map(str)
)
_query_keys = st.sampled_from(["status", "template_type", "reference", "older_than", "include_jobs", "type", "x"])
_query = st.lists(st.tuples(_query_keys, _segments), max_size=4)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    operation=st.sampled_from(OPERATIONS),
    segments=st.tuples(_segments, _segments),
    query=_query,
    body=_bodies,
    content_type=st.sampled_from(["application/json", "text/plain", "application/problem+json", ""]),
    auth=st.sampled_from(["live", "test", "none", "garbage", "latin"]),
)  # fmt: skip
def test_no_request_gets_a_500_or_an_undocumented_body(
    stack: Stack,
    http: httpx.Client,
    operation: tuple[str, str],
    segments: tuple[str, str],
    query: list[tuple[str, str]],
    body: bytes,
    content_type: str,
    auth: str,
) -> None:
    path, method = operation
    url = path.replace("{notification_id}", quote(segments[0], safe="")).replace(
        "{template_id}", quote(segments[0], safe="")
    )
    url = url.replace("{version}", quote(segments[1], safe=""))
    headers = {
        "live": bearer(stack.demo.live_key),
        "test": bearer(stack.demo.test_key),
        "none": {},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "latin": {"Authorization": "Bearer caf\xe9"},
    }[auth]
    if content_type:
        headers = {**headers, "Content-Type": content_type}
    response = http.request(
        method.upper(),
        f"{stack.base_url}{url}",
        params=tuple(query),
        content=body if method == "post" else None,
        headers={key.encode(): value.encode("latin-1") for key, value in headers.items()},
    )
    assert response.status_code != 500, response.text
    conforms(response, path, method)
