"""Queue bodies and names: every queue message is a batch (a repeated field 1 of the items), and the
protobuf enums of the contracts map to the names the database and metrics use."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from google.protobuf.internal.encoder import _VarintBytes  # type: ignore[attr-defined]

from herald.v1.notifications_pb2 import KeyType, NotificationType

TYPE_NAMES: Final = {NotificationType.SMS: "sms", NotificationType.EMAIL: "email"}
TYPES: Final = {name: value for value, name in TYPE_NAMES.items()}
KEY_TYPE_NAMES: Final = {KeyType.NORMAL: "normal", KeyType.TEAM: "team", KeyType.TEST: "test"}
KEY_TYPES: Final = {name: value for value, name in KEY_TYPE_NAMES.items()}

_FIELD_1: Final = b"\x0a"  # field 1, wire type 2 (length-delimited): a repeated message's every item


def pack(items: Iterable[bytes]) -> bytes:
    """Serialised items as one NotificationBatch / ReceiptBatch, without parsing them again: a repeated
    message field is just its items' bytes, each behind a tag and its length."""
    return b"".join(_FIELD_1 + _VarintBytes(len(item)) + item for item in items)
