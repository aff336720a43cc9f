"""What ingest may accept: only values that can later be stored and sent. Pure, no I/O; runs on every send.

PostgreSQL refuses what Python allows: a NUL character or a lone surrogate in text, `uuid.UUID`'s
looser spellings of an id (`urn:uuid:...`, `{...}`, hyphens anywhere), and orjson refuses NaN,
infinities and deep nesting. A value refused here is INVALID_ARGUMENT naming its field; a value let
through and refused later would be a message accepted and never stored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from google.protobuf.struct_pb2 import ListValue, Struct, Value

# Personalisation limits, each above anything a real Notify request can use (so they never refuse
# one) and below what would break storage or the broker (RabbitMQ 4's default max_message_size is 16 MiB,
# and the message also carries the rendered body and HTML).
MAX_DEPTH = 10  # the object itself is level 1, a list value level 2: all that Notify's templates render.
# An email body is at most 2,000,000 bytes; a value written with every character escaped takes two bytes
# per character in JSON, so 5,000,000 bytes always holds the personalisation of the largest email.
MAX_BYTES = 5_000_000
# Keys and list items at every level; each takes at least two bytes of JSON, so MAX_BYTES already implies
# 2,500,000: this bounds the time spent walking a request, not what it may say.
MAX_ENTRIES = 1_000_000

_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Floats from a protobuf Struct (every number is a double) become ints when they are exactly one, so
# "((code))" with 1234 renders "1234" as Notify's JSON would, not "1234.0". Beyond 2**53 a float no
# longer holds the integer the caller wrote, and stays a float.
_EXACT_INTEGER = 2**53
# orjson serialises integers in [-2**63, 2**64); a larger one (only a Python caller can send it) becomes
# its decimal text, which renders the same.
_INT_MIN, _INT_END = -(2**63), 2**64
# Upper bound on the JSON bytes of one entry beyond its strings' characters: quotes, colon, comma and
# the longest number orjson writes ("-1.2345678901234567e-308"). Each character takes at most 6 bytes.
_ENTRY_BYTES, _CHAR_BYTES = 32, 6


class InputError(Exception):
    """A request field that cannot be accepted; `message` is the text the caller sees."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def canonical_uuid(value: str, field: str) -> str:
    """The id in PostgreSQL's and Notify's canonical text: 36 characters, hyphenated, lowercase."""
    if type(value) is not str or _CANONICAL_UUID.fullmatch(value) is None:
        raise InputError(field, f"{field} is not a valid UUID")
    return value.lower()


def check_text(value: str, field: str, *, max_length: int | None = None) -> None:
    """Refuse what PostgreSQL text cannot hold (NUL, lone surrogates) and, if given, more than
    `max_length` characters (as Notify's schemas count them)."""
    _check_characters(value, field)
    if max_length is not None and len(value) > max_length:
        raise InputError(field, f"{field} {value[:20]}... is too long")


def plain_personalisation(value: Mapping[str, Any] | Struct) -> dict[str, Any]:
    """A copy of `value` made of dict, list, str, int, float, bool and None, that orjson can serialise
    and PostgreSQL can store, or InputError.

    `value` is what MessageToDict gives for a google.protobuf.Struct, the Struct itself (it is a
    Mapping and its lists are Sequences, and walking it directly avoids MessageToDict, which raises
    ValueError on NaN), or a decoded JSON body. Iterative, so no nesting can exhaust the stack.
    """
    # A Struct is a registered Mapping; named first because the abstract class's check costs more.
    if type(value) is not dict and type(value) is not Struct and not isinstance(value, Mapping):
        raise InputError("personalisation", "personalisation is not of type object")
    try:
        return _walk(value)
    except ValueError:
        # A google.protobuf.Value with no kind set: protobuf's Struct refuses to read it.
        raise InputError("personalisation", "personalisation has a value that is not set") from None


def _walk(value: Mapping[str, Any] | Struct) -> dict[str, Any]:
    root: dict[str, Any] = {}
    pending: list[tuple[Any, dict[str, Any] | list[Any], int]] = [(value, root, 1)]
    entries = 0
    chars = 0
    while pending:
        source, target, depth = pending.pop()
        # Struct's and ListValue's Mapping and Sequence methods are Python: their fields are read in C.
        kind = type(source)
        if kind is Struct:
            source = source.fields
        elif kind is ListValue:
            source = source.values
        # Counted before the walk, so a huge container is refused without being copied.
        entries += len(source)
        if entries > MAX_ENTRIES:
            raise InputError("personalisation", f"personalisation has more than {MAX_ENTRIES} entries")
        if isinstance(target, dict):
            for key, item in source.items() if kind is not Struct else _struct_items(source):
                if type(key) is not str:
                    raise InputError("personalisation", "personalisation keys must be strings")
                # The usual key and value (ASCII, no NUL) are checked without a call.
                if "\x00" in key or not key.isascii():
                    _check_characters(key, "personalisation")
                if type(item) is str:
                    if "\x00" in item or not item.isascii():
                        _check_characters(item, "personalisation")
                    target[key] = item
                    chars += len(key) + len(item)
                else:
                    target[key], size = _plain(item, depth, pending)
                    chars += len(key) + size
        else:
            for item in source if kind is not ListValue else map(_struct_value, source):
                plain, size = _plain(item, depth, pending)
                target.append(plain)
                chars += size
        if chars > MAX_BYTES:
            raise _too_large()
    # Serialise only when the bound says it might be too large: exact, and skipped for every usual request.
    if chars * _CHAR_BYTES + (entries + 1) * _ENTRY_BYTES > MAX_BYTES and len(orjson.dumps(root)) > MAX_BYTES:
        raise _too_large()
    return root


def _struct_items(fields: Mapping[str, Value]) -> list[tuple[str, Any]]:
    """A Struct's entries as its `items()` gives them (all read first), from its map of Values: a third
    cheaper. `_struct_value` is written out, which saves another tenth on every request."""
    items = []
    for key in fields:
        value = fields[key]
        kind = value.WhichOneof("kind")
        if kind is None:
            raise ValueError("Value not set")
        items.append((key, None if kind == "null_value" else getattr(value, kind)))
    return items


def _struct_value(value: Value) -> Any:
    """What Struct and ListValue read from a Value, in C calls: the field that is set, or ValueError when
    none is."""
    kind = value.WhichOneof("kind")
    if kind is None:
        raise ValueError("Value not set")
    return None if kind == "null_value" else getattr(value, kind)


def _plain(item: Any, depth: int, pending: list[tuple[Any, dict[str, Any] | list[Any], int]]) -> tuple[Any, int]:
    """One value made plain, and its characters; a container is created empty and queued to be filled."""
    kind = type(item)
    if kind is str:
        _check_characters(item, "personalisation")
        return item, len(item)
    if kind is float:
        return _number(item), 0
    if kind is bool or item is None:
        return item, 0
    if kind is int:
        return (item, 0) if _INT_MIN <= item < _INT_END else _big_integer(item)
    if kind is dict or kind is list:
        return _container(item, kind is dict, depth, pending), 0
    # The slow path: a Struct or ListValue (walked as they are), tuples, and subclasses of the plain types.
    if isinstance(item, str):
        return _plain(str(item), depth, pending)
    if isinstance(item, int):
        return _plain(int(item), depth, pending)
    if isinstance(item, float):
        return _plain(float(item), depth, pending)
    if isinstance(item, Mapping):
        return _container(item, True, depth, pending), 0
    if isinstance(item, Sequence) and not isinstance(item, bytes | bytearray | memoryview):
        return _container(item, False, depth, pending), 0
    raise InputError("personalisation", f"personalisation contains a value that is not allowed ({kind.__name__})")


def _container(
    item: Any, is_mapping: bool, depth: int, pending: list[tuple[Any, dict[str, Any] | list[Any], int]]
) -> dict[str, Any] | list[Any]:
    if depth >= MAX_DEPTH:
        raise InputError("personalisation", f"personalisation is nested more than {MAX_DEPTH} levels deep")
    container: dict[str, Any] | list[Any] = {} if is_mapping else []
    pending.append((item, container, depth + 1))
    return container


def _number(value: float) -> float | int:
    if not math.isfinite(value):
        name = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        raise InputError("personalisation", f"personalisation contains a number that is not allowed ({name})")
    if value.is_integer() and -_EXACT_INTEGER <= value <= _EXACT_INTEGER:
        return int(value)
    return value


def _big_integer(value: int) -> tuple[str, int]:
    try:
        text = str(value)
    except ValueError:  # more digits than Python will write (sys.get_int_max_str_digits)
        raise _too_large() from None
    return text, len(text)


def _check_characters(value: str, field: str) -> None:
    if "\x00" in value:
        raise InputError(field, f"{field} contains a character that is not allowed (NUL)")
    # An ASCII string (known without scanning) cannot hold a surrogate; others are checked by encoding.
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InputError(field, f"{field} contains a character that is not allowed (lone surrogate)") from None


def _too_large() -> InputError:
    return InputError("personalisation", f"personalisation is larger than {MAX_BYTES} bytes")
