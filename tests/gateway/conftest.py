"""The gateway in front of real ingest, dispatchers, callbacks and the provider simulator, in this process
(as tests/integration/test_flow.py runs the suite), on free ports; started once per test module. The
simulator posts its receipts to the gateway's provider webhooks, as real providers do. Besides: an SNS signer
with a local certificate and a gateway that trusts it, and the webhook tests' notification helpers."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from kombu import Connection
from sqlalchemy import Engine, text

from herald import bootstrap
from herald.crypto import SecretBox
from herald.domain.apikeys import create_token, split_key
from herald.providers._sim_receipts import SnsSigner
from herald.providers.simulator import ProviderSimulator
from herald.queues.topology import ALL_QUEUES, declare_all, queue
from herald.service_layer.admin import Admin, DemoSetup
from herald.settings import Settings
from services.gateway.app import start_gateway
from tests.support import free_port


@dataclass(frozen=True)
class Stack:
    settings: Settings
    base_url: str
    demo: DemoSetup
    admin: Admin
    simulator: ProviderSimulator


@pytest.fixture(scope="module")
def stack(settings: Settings, engine: Engine, broker_url: str) -> Iterator[Stack]:
    with Connection(broker_url) as conn:
        declare_all(conn)
        for name in ALL_QUEUES:
            queue(name)(conn.default_channel).purge()
    ports = {name: free_port() for name in ("ingest", "callbacks", "dispatcher", "gateway")}
    s = replace(
        settings,
        ingest_address=f"127.0.0.1:{ports['ingest']}",
        callbacks_address=f"127.0.0.1:{ports['callbacks']}",
        dispatcher_address=f"127.0.0.1:{ports['dispatcher']}",
        gateway_address=f"127.0.0.1:{ports['gateway']}",
        cache_seconds=0.0,  # templates edited by a test are read at once
    )
    # Receipts as real providers post them: to the gateway's webhooks, SES's signed by the simulator's
    # SNS certificate, which this gateway (alone) trusts.
    sim = ProviderSimulator(
        "127.0.0.1", 0, s.callbacks_address, 0.05, receipts_url=f"http://{s.gateway_address}", receipt_backoff=0.1
    )
    sim.start()
    base = f"http://127.0.0.1:{sim.port}"
    s = replace(s, mmg_url=base, firetext_url=base, ses_url=base, sns_trusted_url_prefix=base)
    stops = [
        bootstrap.start_callbacks(s, engine),
        bootstrap.start_dispatcher(s, engine, bootstrap.ALL_QUEUES_DISPATCHED),
        bootstrap.start_ingest(s, engine),
        start_gateway(s),
    ]
    admin = Admin(engine, SecretBox(s.secret_key))
    # Names are unique per module: the database is shared with the session's other tests.
    yield Stack(s, f"http://127.0.0.1:{ports['gateway']}", admin.demo(f"gateway {uuid.uuid4()}"), admin, sim)
    for stop in reversed(stops):
        stop()
    sim.stop()


class Signer:
    """Signs SNS messages as SNS does (the simulator's SnsSigner), with its certificate served from a local URL."""

    def __init__(self) -> None:
        self._signer = SnsSigner()
        pem = self._signer.pem

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(pem)))
                self.end_headers()
                self.wfile.write(pem)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.cert_url = f"http://127.0.0.1:{self._server.server_address[1]}/SimpleNotificationService-test.pem"

    def sign(self, message: dict[str, str]) -> str:
        return json.dumps(self._signer.sign(message, self.cert_url))

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer]:
    s = Signer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def sns_gateway(stack: Stack) -> Iterator[str]:
    """A gateway that takes the test's local certificate and subscription URLs for SNS's."""
    s = replace(stack.settings, gateway_address=f"127.0.0.1:{free_port()}")
    stop = start_gateway(s, may_fetch=lambda url: url.startswith("http://127.0.0.1:"))
    yield f"http://{s.gateway_address}"
    stop()


def sending(engine: Engine, stack: Stack, kind: str, to: str) -> str:
    """A notification handed to a provider and waiting for its receipt."""
    notification_id = str(uuid.uuid4())
    template = stack.demo.sms_template_id if kind == "sms" else stack.demo.email_template_id
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notifications (id, service_id, template_id, template_version, key_type,"
                ' notification_type, "to", body, status, billable_units, created_at)'
                " VALUES (:id, :s, :t, 1, 'normal', :kind, :to, 'Hi', 'sending', 1, :at)"
            ),
            {"id": notification_id, "s": stack.demo.service_id, "t": template, "kind": kind, "to": to,
             "at": datetime.now(UTC)},
        )  # fmt: skip
    return notification_id


def status_of(stack: Stack, notification_id: str) -> str:
    key = split_key(stack.demo.live_key)
    answer = httpx.get(
        f"{stack.base_url}/v2/notifications/{notification_id}",
        headers={"Authorization": f"Bearer {create_token(key.secret, key.service_id)}"},
    )
    return str(answer.json()["status"])
