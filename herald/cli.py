"""`herald`: run any service, the whole suite, the provider simulator, migrations and a few admin tasks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from functools import partial

import grpc

from herald import admin_cli, bootstrap, jobs_cli
from herald.clients import IngestClient
from herald.domain import statuses as st
from herald.queues.topology import use_queue_type
from herald.settings import Settings


def _send(args: argparse.Namespace, settings: Settings) -> int:
    client = IngestClient(args.target or settings.ingest_address, args.key)
    personalisation = json.loads(args.personalisation) if args.personalisation else {}
    try:
        if args.command == "send-sms":
            answer = client.send_sms(args.to, args.template, personalisation)
        else:
            answer = client.send_email(args.to, args.template, personalisation)
    except grpc.RpcError as exc:
        print(f"refused: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(f"accepted {answer.id}")
    return _follow(client, answer.id, args.wait) if args.wait else 0


def _follow(client: IngestClient, notification_id: str, wait: float) -> int:
    last = client.follow(notification_id, wait, lambda status: print(f"  {status}"), interval=0.1)
    if last == st.DELIVERED:
        return 0
    if last in st.FINAL:
        return 2
    print(f"still {last} after {wait:.0f}s", file=sys.stderr)
    return 3


def _status(args: argparse.Namespace, settings: Settings) -> int:
    client = IngestClient(args.target or settings.ingest_address, args.key)
    n = client.get_notification(args.id)
    print(f"{n.id} {n.status} version={n.template.version} body={n.body!r}")
    return 0


def _dead_letter(args: argparse.Namespace, settings: Settings) -> int:
    from herald.queues import ConfirmingPublisher
    from herald.queues.deadletter import browse, replay

    if args.action == "list":
        with browse(settings.broker_url) as letters:
            rows = [{"queue": d.queue, "reason": d.reason, "ids": list(d.ids)} for d in letters]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(f"{len(rows)} dead letter(s)")
            for row in rows:
                ids = row["ids"]
                shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
                print(f"  {row['queue']:<14} {row['reason']:<12} {len(ids):>5} item(s)  {shown}")
        return 0
    publisher = ConfirmingPublisher(settings.broker_url)
    try:
        sent = replay(settings.broker_url, publisher, set(args.id) if args.id else None)
    finally:
        publisher.close()
    print(f"replayed {sent} dead letter(s)")
    return 0


def _inbound(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    if not args.to or not args.sender:
        print("inbound needs --to and --from", file=sys.stderr)
        return 2
    url = (args.simulator or settings.mmg_url).rstrip("/") + "/_inbound"
    body = {"provider": args.provider, "to": args.to, "from": args.sender, "text": args.text}
    try:
        answer = httpx.post(url, json=body, timeout=15)
    except httpx.HTTPError as exc:
        print(f"the simulator at {url} did not answer: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(answer.json() if answer.headers.get("content-type") == "application/json" else answer.text))
    return 0 if answer.status_code == 200 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="herald", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ingest", help="the gRPC front door")
    sub.add_parser("callbacks", help="delivery receipts")
    sub.add_parser("scheduler", help="periodic tasks")
    sub.add_parser("gateway", help="Notify's v2 REST API, in front of ingest")
    dispatcher = sub.add_parser("dispatcher", help="queue workers")
    dispatcher.add_argument("--queues", required=True, help="comma-separated, e.g. db-sms,send-sms")
    sub.add_parser("run", help="local suite, a process per service, on embedded PostgreSQL and broker")
    sim = sub.add_parser("provider-sim", help="the provider simulator (MMG, Firetext, SES)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=6011)
    sim.add_argument("--receipt-delay", type=float, default=0.5)
    # `herald provider-sim inbound`: someone texts an inbound number; the running simulator posts it to
    # the gateway as the provider would.
    sim.add_argument("action", nargs="?", choices=["serve", "inbound"], default="serve")
    sim.add_argument("--to", help="inbound: the service's inbound number")
    sim.add_argument("--from", dest="sender", help="inbound: the sender's number")
    sim.add_argument("--text", default="", help="inbound: what they wrote")
    sim.add_argument("--provider", choices=["mmg", "firetext"], default="mmg", help="inbound: who posts it")
    sim.add_argument("--simulator", help="inbound: the running simulator's URL (default: HERALD_MMG_URL)")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"])
    demo = sub.add_parser("demo", help="create a demo service, keys and templates; prints them as JSON")
    demo.add_argument("--suffix", default=str(int(time.time())))
    for name in ("send-sms", "send-email"):
        send = sub.add_parser(name, help=f"{name.replace('-', ' ')} through ingest")
        send.add_argument("--key", required=True, help="API key")
        send.add_argument("--to", required=True)
        send.add_argument("--template", required=True)
        send.add_argument("--personalisation", help="JSON object")
        send.add_argument("--wait", type=float, default=30.0, help="follow the status for up to N seconds (0: don't)")
        send.add_argument("--target", help="ingest address")
    dead = sub.add_parser("dead-letter", help="what could never be handled: list it, or send it back to its queue")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("--id", action="append", help="replay only the letters holding this id (repeatable)")
    dead.add_argument("--json", action="store_true", help="list as JSON")
    status = sub.add_parser("status", help="a notification's status")
    status.add_argument("--key", required=True)
    status.add_argument("--target")
    status.add_argument("id")
    admin_cli.register(sub)
    jobs_cli.register(sub)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    use_queue_type(settings.queue_type)

    if args.command == "ingest":
        bootstrap.serve("ingest", settings, bootstrap.start_ingest)
    elif args.command == "callbacks":
        bootstrap.serve("callbacks", settings, bootstrap.start_callbacks)
    elif args.command == "scheduler":
        bootstrap.serve("scheduler", settings, bootstrap.start_scheduler)
    elif args.command == "gateway":
        from services.gateway.app import serve as serve_gateway

        serve_gateway(settings)
    elif args.command == "dispatcher":
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        bootstrap.serve("dispatcher", settings, partial(bootstrap.start_dispatcher, queues=queues))
    elif args.command == "run":
        from herald.devstack import run

        run()
    elif args.command == "provider-sim" and args.action == "inbound":
        return _inbound(args, settings)
    elif args.command == "provider-sim":
        from herald import logs
        from herald.providers.simulator import serve

        logs.configure("provider-sim", settings.log_level)
        serve(
            args.host,
            args.port,
            settings.callbacks_address,
            args.receipt_delay,
            ses_access_key_id=settings.ses_access_key_id,
            ses_secret_access_key=settings.ses_secret_access_key,
            receipts_url=settings.sim_receipts_url,
            callback_credentials=settings.callback_credentials(),
        )
    elif args.command == "db":
        from herald.db.engine import upgrade

        upgrade(settings.database_url)
        print("database at head")
    elif args.command == "demo":
        from dataclasses import asdict

        from herald.crypto import SecretBox
        from herald.db.engine import make_engine
        from herald.service_layer.admin import Admin

        setup = Admin(make_engine(settings.database_url), SecretBox(settings.secret_key)).demo(args.suffix)
        print(json.dumps(asdict(setup), indent=2))
    elif args.command in ("send-sms", "send-email"):
        return _send(args, settings)
    elif args.command == "status":
        return _status(args, settings)
    elif args.command == "dead-letter":
        return _dead_letter(args, settings)
    elif args.command in admin_cli.COMMANDS:
        return admin_cli.run(args, settings)
    elif args.command in jobs_cli.COMMANDS:
        return jobs_cli.run(args, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
