"""The gateway's request metrics on a real UDP socket: Notify's exact statsd names,
`{environment}.notifications.api.{METHOD}.{module}.{function}.{status}`, a counter and a timer for each
request, and the same request in Prometheus with those labels."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import REGISTRY

from herald import metrics
from herald.domain.apikeys import create_token, split_key
from tests.gateway.conftest import Stack


@pytest.fixture
def statsd_socket() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        metrics.configure("live", "gateway", "127.0.0.1", sock.getsockname()[1], 0, statsd_enabled=True)
        try:
            yield sock
        finally:
            metrics.configure("live", "gateway", "", 8125, 0, statsd_enabled=False)


def received(sock: socket.socket, until: set[str], timeout: float = 10.0) -> list[str]:
    """Statsd lines (`name:value|type`) until a counter and a timer for every name in `until` came, or
    `timeout`."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    wanted = {(name, kind) for name in until for kind in ("c", "ms")}
    while time.monotonic() < deadline and not wanted <= {
        (line.split(":", 1)[0], line.rsplit("|", 1)[-1]) for line in lines
    }:
        try:
            lines.extend(sock.recv(65535).decode().splitlines())
        except TimeoutError:
            continue
    return lines


def bearer(key: str) -> dict[str, str]:
    parts = split_key(key)
    return {"Authorization": f"Bearer {create_token(parts.secret, parts.service_id)}"}


def test_every_route_counts_and_times_under_notifys_name(stack: Stack, statsd_socket: socket.socket) -> None:
    base, demo = stack.base_url, stack.demo
    body = {"phone_number": "07700900111", "template_id": demo.research_sms_template_id,
            "personalisation": {"name": "Ada", "code": "1"}}  # fmt: skip
    labels = {"method": "POST", "module": "notifications", "function": "send_notification", "status": "201"}
    before = REGISTRY.get_sample_value("herald_api_total", labels) or 0.0
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.post("/v2/notifications/sms", json=body, headers=bearer(demo.research_key)).status_code == 201
        assert http.post("/v2/notifications/sms", json={}, headers=bearer(demo.research_key)).status_code == 400
        assert http.get("/v2/templates", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert http.get("/v2/template/x/version/1", headers=bearer(demo.live_key)).status_code == 400
        assert http.post("/notifications/sms/mmg", json={"status": "3"}).status_code == 401
        assert http.get("/_status").status_code == 200

    expected = {
        "live.notifications.api.POST.notifications.send_notification.201",
        "live.notifications.api.POST.notifications.send_notification.400",
        "live.notifications.api.GET.templates.get_templates.403",
        "live.notifications.api.GET.template.get_template_by_id.400",
        "live.notifications.api.POST.notifications_sms_callback.process_mmg_response.401",
        "live.notifications.api.GET.status.show_status.200",
    }
    lines = received(statsd_socket, expected)
    for name in expected:
        assert f"{name}:1|c" in lines, (name, lines)
        [timer] = [line for line in lines if line.startswith(f"{name}:") and line.endswith("|ms")]
        assert float(timer.split(":")[1].removesuffix("|ms")) > 0  # milliseconds, as statsd expects
    # Every request name has Notify's five parts (the simulator's own posts to the webhooks may be among
    # them); ingest runs in this process too, and its RPCs keep the app's prefix.
    names = {line.split(":", 1)[0] for line in lines if line.startswith("live.notifications.api.")}
    assert all(re.fullmatch(r"live\.notifications\.api\.(GET|POST)\.\w+\.\w+\.\d{3}", name) for name in names), names
    assert not [line for line in lines if ".gateway.api.POST." in line or ".gateway.api.GET." in line]
    assert REGISTRY.get_sample_value("herald_api_total", labels) == before + 1
    assert (REGISTRY.get_sample_value("herald_api_seconds_count", labels) or 0) >= 1


def test_other_names_keep_the_apps_prefix(statsd_socket: socket.socket) -> None:
    """Only the request metric leaves the app's prefix: every other name stays `{env}.notifications.{app}.`."""
    with metrics.timed("gateway_statsd_check", kind="x"):
        metrics.incr("gateway_statsd_check", 1, kind="x")
    metrics.incr("gateway_statsd_check", 1, statsd_root=True, kind="y")
    metrics.observe("gateway_statsd_check", 0.001, statsd_root=True, kind="y")
    lines = received(statsd_socket, {"live.notifications.gateway_statsd_check.y"})
    assert "live.notifications.gateway.gateway_statsd_check.x:1|c" in lines
    assert "live.notifications.gateway_statsd_check.y:1|c" in lines
