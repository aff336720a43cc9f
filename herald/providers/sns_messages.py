"""Amazon SNS's HTTP messages as AWS documents them: which fields a signature covers, in which order, and
the hash of each SignatureVersion. The gateway checks signatures with it; the provider simulator signs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from cryptography.hazmat.primitives import hashes

# The fields signed, in order, by message type (fields a message lacks, e.g. Subject, are left out).
SIGNED_FIELDS: Final = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
# SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA.
HASHES: Final[Mapping[str, Callable[[], hashes.HashAlgorithm]]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class NotSigned(Exception):
    """The message is not signed by SNS (or, to a signer, cannot be)."""


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    fields = SIGNED_FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise NotSigned("unknown message type")
    parts = []
    for name in fields:
        if name in message:
            value = message[name]
            if not isinstance(value, str):
                raise NotSigned(f"{name} is not a string")
            parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()
