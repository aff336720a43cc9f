"""The protobuf enums of the contracts and the names the database and metrics use for them."""

from __future__ import annotations

from typing import Final

from herald.v1.notifications_pb2 import KeyType, NotificationType

TYPE_NAMES: Final = {NotificationType.SMS: "sms", NotificationType.EMAIL: "email"}
TYPES: Final = {name: value for value, name in TYPE_NAMES.items()}
KEY_TYPE_NAMES: Final = {KeyType.NORMAL: "normal", KeyType.TEAM: "team", KeyType.TEST: "test"}
KEY_TYPES: Final = {name: value for value, name in KEY_TYPE_NAMES.items()}
