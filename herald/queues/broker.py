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


def connect(url: str, **kwargs: Any) -> Connection:
    """A kombu Connection to `url` (not yet connected) with its transport's options."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    return Connection(url, transport_options=dict(TRANSPORT_OPTIONS.get(scheme, {})), **kwargs)
