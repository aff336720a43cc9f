"""Composition root of ingest."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.crypto import SecretBox
from herald.grpcsrv.server import Server, ServiceBinding
from herald.queues import PublisherThread
from herald.service_layer.admin import Admin, PlatformMessages, PlatformTemplates
from herald.service_layer.auth import Authenticator
from herald.service_layer.jobs import Jobs
from herald.service_layer.rules import ServiceRules
from herald.service_layer.senders import Senders
from herald.service_layer.sending import Sender
from herald.settings import Settings
from herald.v1 import admin_pb2_grpc, ingest_pb2_grpc, jobs_pb2_grpc, reads_pb2_grpc
from services.ingest.admin_servicer import AdminServicer
from services.ingest.jobs_servicer import JobsServicer
from services.ingest.reads_servicer import ReadsServicer
from services.ingest.servicer import IngestServicer

SERVICE_NAME = "herald.v1.Ingest"


def build(settings: Settings, engine: Engine) -> tuple[Server, PublisherThread, ServiceRules]:
    publisher = PublisherThread(settings.broker_url)
    rules = ServiceRules.from_settings(settings, engine)
    sender = Sender(
        engine,
        publisher.publish,
        settings.email_domain,
        settings.cache_seconds,
        settings.stale_seconds,
        rules=rules,  # trial mode, team keys, rate and daily limits
        publish_many=publisher.publish_many,
    )
    box = SecretBox(settings.secret_key)
    authenticator = Authenticator(engine, box, settings.admin_secret, settings.cache_seconds, settings.stale_seconds)
    servicer = IngestServicer(authenticator, sender, engine)
    platform = PlatformMessages(engine, sender, PlatformTemplates.from_settings(settings))
    # Plain-http callback URLs only for a local installation (make run), as Notify's local mode.
    admin_use_cases = Admin(engine, box, allow_http_callbacks=settings.environment == "development")
    admin = AdminServicer(authenticator, admin_use_cases, platform, senders=Senders(engine))
    server = Server(
        settings.ingest_address,
        [
            ServiceBinding(servicer, ingest_pb2_grpc.add_IngestServicer_to_server, SERVICE_NAME),
            ServiceBinding(admin, admin_pb2_grpc.add_AdminServicer_to_server, "herald.v1.Admin"),
            ServiceBinding(
                JobsServicer(authenticator, Jobs(engine, sender, rules, publisher.publish)),
                jobs_pb2_grpc.add_JobsServicer_to_server,
                "herald.v1.Jobs",
            ),
            ServiceBinding(
                ReadsServicer(authenticator, engine, settings.sms_rate),
                reads_pb2_grpc.add_ReadsServicer_to_server,
                "herald.v1.Reads",
            ),
        ],
    )
    return server, publisher, rules
