"""What the RPC fuzzer sends: one case per (seed, index), built only from the contracts' descriptors.

A case is the raw request bytes plus the call's metadata, and a note that says how it was made, so a
failing case can be reproduced by hand. Every case is derived from `random.Random(f"{seed}:{index}")`
alone: the same seed and index give the same mutation against any cluster (only the cluster's own ids
and keys, in `Seeds`, differ).

Kinds of case:
  valid        a well-formed request with real ids and a good token
  random-bytes bytes from nowhere
  truncated    a valid request cut short
  bit-flip     a valid request with a few bits flipped
  bad-utf8     a string field (or a personalisation key/value) holding invalid UTF-8 on the wire
  id-form      an id in a form Python's uuid.UUID accepts but canonical text is not (urn:uuid:, {...}, ...)
  string       NUL, odd unicode, huge and empty strings in a string field
  struct       personalisation with NaN, infinities, huge numbers, deep nesting, many keys, odd keys,
               a value with no kind set
  token        a valid-looking JWT with bad claims (iat NaN/1e400/string, iss of the wrong type, alg none, ...)
  metadata     authorization and idempotency-key metadata that is missing, doubled or malformed

Metadata values stay printable ASCII: a gRPC client refuses anything else itself, answering INTERNAL
without a server ever seeing the call, which would be counted against the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

Metadata = tuple[tuple[str, str], ...]

KINDS = ("valid", "random-bytes", "truncated", "bit-flip", "bad-utf8", "id-form", "string", "struct", "token",
         "metadata")  # fmt: skip
# How often each kind is drawn: mutations of valid requests dominate, as they reach furthest in.
_WEIGHTS = (10, 6, 8, 8, 10, 12, 12, 14, 14, 6)

_INVALID_UTF8 = (
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",  # a lone surrogate, UTF-8 encoded
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xc0\xaf",  # overlong
    b"abc\x80def",
    b"\xe2\x82",  # truncated sequence
)
_ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",  # right-to-left override
    "\u200b\u200d\ufeff",
    "\U0001f600" * 50,
    "e\u0301\u0301\u0301\u0301",
    "\u2028\u2029\x85",
    "\uffff\ufffe",
    "((name))((code))((",
    "%s%n%x{0}",
    "'; DROP TABLE notifications; --",
    "\t\r\n",
    "Ŵŷ ŵ\u00a0gymraeg",
    "١٢٣٤٥٦٧٨٩",
)
_TOKEN_IAT = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "-1", "0", '"now"', '"1700000000"', "true",
              "null", "[]", "{}", "18446744073709551616", "1.5e9", '"NaN"')  # fmt: skip
_TOKEN_ISS = ("123", "null", "[]", '{"a": 1}', "true", '""', "1e400", "NaN")


@dataclass(frozen=True, slots=True)
class Seeds:
    """The cluster's own ids and secrets the generator fills valid requests with."""

    service_id: str
    live_secret: str
    research_service_id: str
    research_secret: str
    test_secret: str
    admin_secret: str
    sms_template_id: str
    email_template_id: str
    notification_id: str
    task_names: tuple[str, ...]

    @classmethod
    def from_demo(cls, demo: dict[str, str], admin_secret: str, notification_id: str, tasks: list[str]) -> Seeds:
        # Notify's key format: {name}-{service id}-{secret}, sliced from the end as its clients do.
        return cls(
            service_id=demo["live_key"][-73:-37],
            live_secret=demo["live_key"][-36:],
            research_service_id=demo["research_key"][-73:-37],
            research_secret=demo["research_key"][-36:],
            test_secret=demo["test_key"][-36:],
            admin_secret=admin_secret,
            sms_template_id=demo["sms_template_id"],
            email_template_id=demo["email_template_id"],
            notification_id=notification_id,
            task_names=tuple(tasks),
        )


@dataclass(frozen=True, slots=True)
class Target:
    """One RPC as the generator sees it: its path, request type and how callers authenticate."""

    path: str  # /herald.v1.Ingest/SendSms
    request: Descriptor
    auth: str  # "api-key", "admin" or "none"


@dataclass(frozen=True, slots=True)
class Case:
    index: int
    target: Target
    kind: str
    note: str
    payload: bytes
    metadata: Metadata

    def repro(self, seed: int) -> str:
        shown = self.payload[:160].hex() + ("..." if len(self.payload) > 160 else "")
        return f"seed={seed} case={self.index} {self.target.path} [{self.kind}] {self.note} bytes={shown}"


# --- wire format -------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(number: int, data: bytes) -> bytes:
    """One wire-format field of type 2 (string, bytes, message); appended last, it wins over earlier values."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _struct_entry(key: bytes, value: bytes) -> bytes:
    # Struct { map<string, Value> fields = 1 }: each entry is { key = 1, value = 2 }.
    return length_delimited(1, length_delimited(1, key) + length_delimited(2, value))


def _string_value(data: bytes) -> bytes:
    return length_delimited(3, data)  # Value.string_value


def nested_struct(depth: int) -> bytes:
    """A Struct nested `depth` levels deep, built on the wire (the Python API refuses to go this deep)."""
    inner = _struct_entry(b"leaf", _string_value(b"x"))
    for _ in range(depth - 1):
        inner = _struct_entry(b"a", length_delimited(5, inner))  # Value.struct_value
    return inner


def nested_list(depth: int) -> bytes:
    inner = _string_value(b"x")
    for _ in range(depth):
        inner = length_delimited(6, length_delimited(1, inner))  # Value.list_value { values = 1 }
    return _struct_entry(b"name", inner)


# --- tokens ------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_token(header_json: str, payload_json: str, secret: str, algorithm: str = "sha256") -> str:
    """An HS256-style JWT over the exact JSON text given, so claims can be what no JSON encoder writes."""
    signing_input = f"{_b64(header_json.encode())}.{_b64(payload_json.encode())}"
    digest = getattr(hashlib, algorithm)
    signature = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def good_token(issuer: str, secret: str) -> str:
    return signed_token('{"alg":"HS256","typ":"JWT"}', json.dumps({"iss": issuer, "iat": int(time.time())}), secret)


def _bad_token(rng: random.Random, issuer: str, secret: str) -> tuple[str, str]:
    header = '{"alg":"HS256","typ":"JWT"}'
    now = str(int(time.time()))
    iss = json.dumps(issuer)
    choice = rng.randrange(9)
    if choice == 0:
        iat = rng.choice(_TOKEN_IAT)
        return f"iat={iat}", signed_token(header, f'{{"iss":{iss},"iat":{iat}}}', secret)
    if choice == 1:
        bad_iss = rng.choice(_TOKEN_ISS)
        return f"iss={bad_iss}", signed_token(header, f'{{"iss":{bad_iss},"iat":{now}}}', secret)
    if choice == 2:
        form = rng.choice(ID_FORMS)
        return f"iss in form {form.__name__}", signed_token(
            header, json.dumps({"iss": form(issuer), "iat": int(now)}), secret
        )
    if choice == 3:
        claims = f'{{"iss":{iss},"iat":{now}}}'
        none_header = '{"alg":"none","typ":"JWT"}'
        return "alg none", f"{_b64(none_header.encode())}.{_b64(claims.encode())}."
    if choice == 4:
        alg = rng.choice(("HS512", "RS256", "ES256", "hs256", ""))
        digest = "sha512" if alg == "HS512" else "sha256"
        return f"alg {alg!r}", signed_token(f'{{"alg":"{alg}","typ":"JWT"}}', f'{{"iss":{iss},"iat":{now}}}', secret,
                                            digest)  # fmt: skip
    if choice == 5:
        payload = rng.choice(("[]", "42", '"text"', "null", f'{{"iss":{iss}}}', f'{{"iat":{now}}}',
                              f'{{"iss":{iss},"iat":{now},"iss":123}}'))  # fmt: skip
        return f"payload {payload}", signed_token(header, payload, secret)
    if choice == 6:
        header_text = rng.choice(("[]", "{}", '{"alg":"HS256","kid":"../../etc/passwd"}', "not json",
                                  '{"alg":"HS256","crit":["exp"]}'))  # fmt: skip
        return f"header {header_text}", signed_token(header_text, f'{{"iss":{iss},"iat":{now}}}', secret)
    if choice == 7:
        shape = rng.choice(("a.b", "a.b.c.d", "...", "x" * 70000, "e30.e30.", "!!!.###.$$$", "a" * 5))
        return f"shape {shape[:20]!r}", shape
    wrong_secret = str(uuid.UUID(int=rng.getrandbits(128)))
    return "signed with another secret", signed_token(header, f'{{"iss":{iss},"iat":{now}}}', wrong_secret)


# --- id forms ----------------------------------------------------------------------------------------


def urn(value: str) -> str:
    return f"urn:uuid:{value}"


def braced(value: str) -> str:
    return f"{{{value}}}"


def extra_hyphens(value: str) -> str:
    bare = value.replace("-", "")
    return "-".join(bare[i : i + 4] for i in range(0, 32, 4))


def no_hyphens(value: str) -> str:
    return value.replace("-", "")


def upper(value: str) -> str:
    return value.upper()


def fullwidth_digits(value: str) -> str:
    return "".join(chr(ord(c) - ord("0") + 0xFF10) if c.isdigit() else c for c in value)


def padded(value: str) -> str:
    return f" {value}\n"


def with_nul(value: str) -> str:
    return f"{value}\x00"


def nil(value: str) -> str:
    return "00000000-0000-0000-0000-000000000000"


def random_uuid_like(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


ID_FORMS: tuple[Callable[[str], str], ...] = (urn, braced, extra_hyphens, no_hyphens, upper, fullwidth_digits, padded,
                                              with_nul, nil, random_uuid_like)  # fmt: skip


# --- requests ----------------------------------------------------------------------------------------


def _fields(descriptor: Any) -> list[FieldDescriptor]:
    return cast(list[FieldDescriptor], list(descriptor.fields))


def _is_struct(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.full_name == "google.protobuf.Struct"


def _is_id_field(name: str) -> bool:
    return name == "id" or name.endswith("_id") or name == "reference"


class Generator:
    def __init__(self, seeds: Seeds, seed: int) -> None:
        self.seeds = seeds
        self.seed = seed

    def case(self, index: int, targets: list[Target]) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        target = rng.choice(targets)
        kind = rng.choices(KINDS, _WEIGHTS)[0]
        valid = self._valid(rng, target)
        # A request without an id field (or a personalisation) gets odd strings instead.
        if (kind == "id-form" and not self._id_fields(valid)) or (kind == "struct" and not self._struct_field(valid)):
            kind = "string"
        metadata = self._metadata(target)
        note = ""
        payload = valid.SerializeToString()
        if kind == "random-bytes":
            payload = rng.randbytes(rng.choice((0, 1, 2, 5, 20, 200, 2000)))
        elif kind == "truncated":
            payload = payload[: rng.randrange(len(payload))] if payload else b"\x0a"
            note = f"cut at {len(payload)}"
        elif kind == "bit-flip":
            flipped = bytearray(payload or b"\x00")
            for _ in range(rng.randint(1, 4)):
                bit = rng.randrange(len(flipped) * 8)
                flipped[bit // 8] ^= 1 << (bit % 8)
            payload = bytes(flipped)
        elif kind == "bad-utf8":
            note, payload = self._bad_utf8(rng, valid, payload)
        elif kind == "id-form":
            note, payload = self._id_form(rng, valid)
        elif kind == "string":
            note, payload = self._odd_string(rng, valid, payload)
        elif kind == "struct":
            note, payload = self._odd_struct(rng, valid)
        elif kind == "token":
            note, metadata = self._token(rng, target, metadata)
        elif kind == "metadata":
            note, metadata = self._odd_metadata(rng, metadata)
        return Case(index, target, kind, note, payload, metadata)

    # valid requests

    def _valid(self, rng: random.Random, target: Target) -> Message:
        message = GetMessageClass(target.request)()
        method = target.path.rsplit("/", 1)[-1]
        for field in _fields(target.request):
            self._fill(rng, message, field, method)
        return message

    def _fill(self, rng: random.Random, message: Message, field: FieldDescriptor, method: str) -> None:
        name = field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            value = self._string_for(rng, name, method)
            if field.is_repeated:
                getattr(message, name).extend([value] if rng.random() < 0.3 else [])
            elif value:
                setattr(message, name, value)
        elif field.type == FieldDescriptor.TYPE_BOOL and not field.is_repeated:
            setattr(message, name, rng.random() < 0.2)
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64) and not field.is_repeated:
            setattr(message, name, rng.choice((0, 0, 1)))
        elif _is_struct(field):
            getattr(message, name).update({"name": "Fuzz", "code": str(rng.randrange(10000))})

    def _string_for(self, rng: random.Random, name: str, method: str) -> str:
        s = self.seeds
        email = "Email" in method
        values: dict[str, str] = {
            "phone_number": rng.choice(("07700900123", "+447700900123", "07700 900 123")),
            "email_address": "fuzz@example.com",
            "template_id": s.email_template_id if email else s.sms_template_id,
            "service_id": s.service_id,
            "id": s.notification_id,
            "notification_id": s.notification_id,
            "provider": rng.choice(("mmg", "firetext", "ses")),
            "status": rng.choice(("3", "0", "Delivery", "Bounce", "4", "1")),
            "code": rng.choice(("", "101", "102", "Permanent", "Transient")),
            "key_type": rng.choice(("normal", "team", "test")),
            "template_type": rng.choice(("sms", "email")),
            "name": f"fuzz {self.seed} {rng.getrandbits(48):x}",
            "content": "Hello ((name)), your code is ((code)).",
            "subject": "Fuzzed subject",
            "sanitise_content_for": "name",
            # Unset: the service's default sender and reply-to (a made-up id is rightly refused).
            "sms_sender_id": "",
            "email_reply_to_id": "",
            "one_click_unsubscribe_url": "https://example.com/unsubscribe",
        }
        if method == "ReportDelivery" and name == "reference":
            return s.notification_id
        if method == "RunTask" and name == "name" and s.task_names:
            return rng.choice(s.task_names)
        if name == "reference":
            return f"fuzz-{rng.getrandbits(32):x}"
        return values.get(name, f"fuzz-{rng.getrandbits(32):x}")

    def _metadata(self, target: Target) -> Metadata:
        if target.auth == "api-key":
            return (("authorization", f"Bearer {good_token(self.seeds.service_id, self.seeds.live_secret)}"),)
        if target.auth == "admin":
            return (("authorization", f"Bearer {good_token('herald-admin', self.seeds.admin_secret)}"),)
        return ()

    # mutations

    @staticmethod
    def _string_fields(valid: Message) -> list[FieldDescriptor]:
        return [f for f in _fields(valid.DESCRIPTOR) if f.type == FieldDescriptor.TYPE_STRING]

    @staticmethod
    def _struct_field(valid: Message) -> FieldDescriptor | None:
        return next((f for f in _fields(valid.DESCRIPTOR) if _is_struct(f)), None)

    def _bad_utf8(self, rng: random.Random, valid: Message, payload: bytes) -> tuple[str, bytes]:
        garbage = rng.choice(_INVALID_UTF8)
        struct = self._struct_field(valid)
        if struct is not None and rng.random() < 0.3:
            in_key = rng.random() < 0.5
            if in_key:
                entry = _struct_entry(garbage, _string_value(b"x"))
            else:
                entry = _struct_entry(b"name", _string_value(garbage))
            valid.ClearField(struct.name)
            where = "key" if in_key else "value"
            return f"{struct.name} {where} {garbage!r}", valid.SerializeToString() + length_delimited(
                struct.number, entry
            )
        fields = self._string_fields(valid)
        if not fields:
            return f"unknown field 15 {garbage!r}", payload + length_delimited(15, garbage)
        field = rng.choice(fields)
        return f"{field.name}={garbage!r}", payload + length_delimited(field.number, garbage)

    def _id_fields(self, valid: Message) -> list[FieldDescriptor]:
        return [f for f in self._string_fields(valid) if _is_id_field(f.name) and not f.is_repeated]

    def _id_form(self, rng: random.Random, valid: Message) -> tuple[str, bytes]:
        field = rng.choice(self._id_fields(valid))
        canonical = getattr(valid, field.name) or self.seeds.notification_id
        try:
            uuid.UUID(canonical)
        except ValueError:
            canonical = self.seeds.notification_id
        form = rng.choice(ID_FORMS)
        value = form(canonical)
        setattr(valid, field.name, value)
        return f"{field.name}={value!r} ({form.__name__})", valid.SerializeToString()

    def _odd_string(self, rng: random.Random, valid: Message, payload: bytes) -> tuple[str, bytes]:
        fields = [f for f in self._string_fields(valid) if not f.is_repeated]
        if not fields:
            return "no string field", payload
        field = rng.choice(fields)
        roll = rng.random()
        if roll < 0.05:
            value = "x" * rng.choice((100_000, 1_000_000))
            shown = f"'x' * {len(value)}"
        elif roll < 0.15:
            value = "((name))" * rng.choice((500, 5000))
            shown = f"'((name))' * {len(value) // 8}"
        else:
            value = rng.choice(_ODD_STRINGS)
            if rng.random() < 0.5:
                value = getattr(valid, field.name) + value
            shown = repr(value)
        setattr(valid, field.name, value)
        return f"{field.name}={shown}", valid.SerializeToString()

    def _odd_struct(self, rng: random.Random, valid: Message) -> tuple[str, bytes]:
        field = self._struct_field(valid)
        assert field is not None
        struct: struct_pb2.Struct = getattr(valid, field.name)
        choice = rng.randrange(8)
        if choice == 7:
            # A Value with no kind set: valid on the wire, and what a flipped length byte produces.
            valid.ClearField(field.name)
            entries = _struct_entry(b"name", _string_value(b"Fuzz")) + _struct_entry(b"code", b"")
            return f"{field.name}['code'] is a Value with no kind", valid.SerializeToString() + length_delimited(
                field.number, entries
            )
        if choice == 0:
            value = rng.choice((float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0, 2.0**64))
            key = rng.choice(("name", "code", "other"))
            struct[key] = value
            return f"{field.name}[{key!r}]={value!r}", valid.SerializeToString()
        if choice == 1:
            depth = rng.choice((10, 44, 45, 46, 60, 99, 100, 101, 200, 1000))
            valid.ClearField(field.name)
            return f"{field.name} nested {depth} deep", valid.SerializeToString() + length_delimited(
                field.number, nested_struct(depth)
            )
        if choice == 2:
            depth = rng.choice((10, 45, 100, 200))
            valid.ClearField(field.name)
            return f"{field.name} lists nested {depth} deep", valid.SerializeToString() + length_delimited(
                field.number, nested_list(depth)
            )
        if choice == 3:
            count = rng.choice((1000, 10_000, 50_000))
            struct.update({f"k{i}": "v" for i in range(count)})
            return f"{field.name} with {count} keys", valid.SerializeToString()
        if choice == 4:
            key = rng.choice(("", "\x00", "((", "a\x00b", "\u202e", "x" * 10_000, "name\n"))
            struct[key] = "v"
            return f"{field.name} key {key[:20]!r}", valid.SerializeToString()
        if choice == 5:
            odd: Any = rng.choice((None, True, [], {}, [1, "a", None], {"x": {"y": float("nan")}}))
            struct["name"] = odd
            return f"{field.name}['name']={odd!r}", valid.SerializeToString()
        text = rng.choice(_ODD_STRINGS) if rng.random() < 0.8 else "y" * 1_000_000
        struct["name"] = text
        return f"{field.name}['name']={text[:40]!r} (len {len(text)})", valid.SerializeToString()

    def _token(self, rng: random.Random, target: Target, metadata: Metadata) -> tuple[str, Metadata]:
        if target.auth == "admin":
            issuer, secret = "herald-admin", self.seeds.admin_secret
        else:
            issuer, secret = self.seeds.service_id, self.seeds.live_secret
        note, token = _bad_token(rng, issuer, secret)
        return f"token {note}", (("authorization", f"Bearer {token}"),)

    def _odd_metadata(self, rng: random.Random, metadata: Metadata) -> tuple[str, Metadata]:
        choice = rng.randrange(6)
        if choice == 0:
            return "no metadata", ()
        if choice == 1:
            return "authorization twice", metadata + metadata
        if choice == 2:
            scheme = rng.choice(("Basic abc", "Bearer", "Bearer ", "bearer  x.y.z", "Token abc", "Bearer x y"))
            return f"authorization {scheme!r}", (("authorization", scheme),)
        if choice == 3:
            key = rng.choice(("", "x" * 300, "a b", "!!!", "k" * 255, "émoji".encode("ascii", "replace").decode()))
            return f"idempotency-key {key[:30]!r}", (*metadata, ("idempotency-key", key))
        if choice == 4:
            return "idempotency-key twice", (*metadata, ("idempotency-key", "one"), ("idempotency-key", "two"))
        return "authorization 60 KB", (("authorization", "Bearer " + "a" * 60_000),)
