"""Settings: read once from the environment into one immutable object."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    environment: str = "development"
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/herald"
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    # quorum (replicated; the default) or classic (one node, and `make run`'s in-process broker).
    queue_type: str = "quorum"
    # Encrypts API key secrets at rest (Fernet key material is derived from it).
    secret_key: str = "dev-only-secret-key-change-me"
    # Signs admin tokens (services, keys, templates through the Admin RPCs).
    admin_secret: str = "dev-only-admin-secret-change-me-in-production"
    ingest_address: str = "127.0.0.1:50051"
    callbacks_address: str = "127.0.0.1:50052"
    scheduler_address: str = "127.0.0.1:50053"
    dispatcher_address: str = "127.0.0.1:50054"
    # The REST gateway (Notify's v2 API over HTTP), in front of ingest.
    gateway_address: str = "127.0.0.1:6012"
    # Passwords (HTTP Basic; the user name is not checked) the providers' receipt webhooks on the gateway
    # require: put them in the callback URL each provider is given (https://herald:<password>@host/...).
    mmg_callback_credential: str = "dev-only-mmg-callback-credential"
    firetext_callback_credential: str = "dev-only-firetext-callback-credential"
    ses_callback_credential: str = "dev-only-ses-callback-credential"
    # Besides Amazon SNS's own https://sns.*.amazonaws.com, the gateway fetches SNS signing certificates
    # and SubscribeURLs only under this prefix: the provider simulator's URL in `make run` and tests.
    # Empty in production.
    sns_trusted_url_prefix: str = ""
    # Where the provider simulator posts delivery receipts in each provider's format, as real providers
    # do: the gateway's base URL (http://host:port). Empty: to callbacks' ReportDelivery over gRPC, for
    # runs with no gateway (bench, chaos).
    sim_receipts_url: str = ""
    metrics_port: int = 0  # 0: no Prometheus HTTP endpoint
    statsd_enabled: bool = False  # HERALD_STATSD_ENABLED: the one switch for sending statsd
    statsd_host: str = ""
    statsd_port: int = 8125
    mmg_url: str = "http://127.0.0.1:6011"
    firetext_url: str = "http://127.0.0.1:6011"
    # SES's endpoint_url for boto3 (empty: AWS's own endpoint for ses_region). The dev keys are the ones
    # the provider simulator accepts; empty keys leave boto3 to find credentials itself (e.g. an IAM role).
    ses_url: str = "http://127.0.0.1:6011"
    ses_region: str = "eu-west-2"
    ses_access_key_id: str = "herald-dev-access-key"
    ses_secret_access_key: str = "herald-dev-secret-key"
    # SES configuration set whose event destination carries receipts back (empty: none).
    ses_configuration_set: str = ""
    sms_provider: str = "mmg"
    # SMS providers and their weights in rotation (herald.providers.rotation); weight 0 is a standby.
    sms_provider_weights: str = "mmg=50,firetext=50"
    # A provider goes out of rotation for provider_cooldown_seconds when its recent error ratio or mean
    # answer time (seconds) reaches these.
    provider_error_threshold: float = 0.5
    provider_latency_threshold: float = 5.0
    provider_cooldown_seconds: float = 60.0
    email_domain: str = "notifications.herald.local"
    retention_days: int = 7
    # Pounds per SMS fragment, reported as Notify reports it (cost_details.sms_rate, cost_in_pounds).
    sms_rate: float = 0.0227
    # How long ingest trusts what it read of a service, its API keys and its templates: a revoked key
    # takes at most this long to be refused, an edited template this long to be used.
    cache_seconds: float = 5.0
    db_batch_size: int = 500
    db_batch_linger: float = 0.005
    prefetch: int = 1000
    # Provider hand-offs (or simulated receipts) a send dispatcher has in flight at once.
    send_concurrency: int = 64
    # The seed's retry schedule in seconds (10 s, 1 min, 5 min, 1 h, 4 h), then technical-failure.
    # Tests and benchmarks compress it; the default is the seed's.
    retry_delays: str = "10,60,300,3600,14400"
    # Delivery-status callbacks to services: a failed call waits this long on service-callbacks-retry,
    # five times (Notify's 300 s); a dispatcher POSTs this many at once, at most the second number per
    # receiver (host), so that one slow receiver holds few of them.
    callback_retry_seconds: float = 300.0
    callback_concurrency: int = 32
    callback_receiver_concurrency: int = 4
    # How fast one job processor expands a job's rows onto bulk-* (0: as fast as the broker confirms). A
    # job paced below what the machine can carry leaves room for single sends on the same cores.
    job_rows_per_second: float = 1000.0
    # A claimed hand-off that has no outcome after this long (its dispatcher died) is re-driven.
    send_lease_seconds: float = 60.0
    # How often the scheduler re-publishes retries that have fallen due and leases that ran out.
    sweep_seconds: int = 2
    # During a database outage ingest keeps serving what it read of a service, its keys and templates
    # for at most this long, so accepted sends keep flowing to the queue.
    stale_seconds: float = 3600.0
    # Redis shared by ingest replicas for rate limits and daily counts (empty: counted in the process,
    # right for one replica only, as `make run`).
    redis_url: str = ""
    # How long a send waits for Redis before it is let through unlimited (fail-open, as Notify) and Redis is
    # left alone for a second: short, so that sends do not queue behind an unanswering Redis.
    redis_timeout: float = 0.25
    # False: ingest skips the rate and daily limits (trial mode and team keys still apply). An operator's
    # switch for benchmarks and debugging (`make bench` compares the two), never for a deployment.
    limits_enabled: bool = True
    # The platform's own service and its templates (sign-in codes, invitations), made by migration 0003.
    notify_service_id: str = "d6aa2c68-a2d9-4437-ab19-3ae8eb202553"
    sms_code_template_id: str = "36fb0730-6259-4da1-8a80-c8de22ad4246"
    email_verification_template_id: str = "ece42649-22a8-4d06-b87f-d52d5d3f0a27"
    invitation_template_id: str = "4f46df42-f795-4cc4-83bb-65ca312f49cc"
    password_reset_template_id: str = "474e9242-823b-4f99-813d-ed392e7f1201"
    log_level: str = "INFO"

    def callback_credentials(self) -> dict[str, str]:
        """The receipt webhooks' password for each provider."""
        return {
            "mmg": self.mmg_callback_credential,
            "firetext": self.firetext_callback_credential,
            "ses": self.ses_callback_credential,
        }

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """HERALD_<FIELD> for every field, e.g. HERALD_DATABASE_URL."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"HERALD_{f.name.upper()}")
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return replace(cls(**values), **overrides)
