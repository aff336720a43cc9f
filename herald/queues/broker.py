"""Connections to the broker: the one place that knows each transport's options."""

from __future__ import annotations

from typing import Any

from kombu import Connection

# kombu's redis transport (`make run`'s embedded Valkey) keeps a consumer's unacknowledged messages in a
# hash and, on an idle poll, gives back those older than visibility_timeout. kombu's default is an hour (an
# SQS habit), so a SIGKILLed dispatcher's batch waited that long; a batch is handled in well under a
# second, and a consumer that holds one longer (its database away, a long job being expanded) only sees it
# again, which every stage takes as a harmless redelivery. RabbitMQ (amqp) needs none: it redelivers a
# dead consumer's messages at once.
TRANSPORT_OPTIONS: dict[str, dict[str, Any]] = {"redis": {"visibility_timeout": 60}}

# How long a PublisherThread gathers its callers' items into one broker message when busy (see
# PublisherThread._run). kombu's redis transport has no confirms, so without a wait every unary send became a
# message of its own, costing its consumer a BRPOP and two MULTI/EXEC pipelines (make run's db dispatcher
# fell seconds behind at 400 sends a second). On RabbitMQ a round's confirm round trip gathers the next
# round's items too, but only a millisecond or two of them: at 64 unary callers, gathering 5 ms took ingest
# from 665 to 525 µs of CPU per call and RabbitMQ from 108 to 45 (2 ms: no better; 10 ms: no better than 5).
GATHER_SECONDS: dict[str, float] = {"redis": 0.005, "amqp": 0.005}


def connect(url: str, **kwargs: Any) -> Connection:
    """A kombu Connection to `url` (not yet connected) with its transport's options."""
    return Connection(url, transport_options=dict(TRANSPORT_OPTIONS.get(_scheme(url), {})), **kwargs)


def gather_seconds(url: str) -> float:
    return GATHER_SECONDS.get(_scheme(url), 0.0)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].split("+", 1)[0]
