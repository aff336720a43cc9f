"""Notify's JSON schemas for the v2 request bodies, checked with Notify's messages.

The shape alone (types, required and unknown properties, ids that are UUIDs): what a recipient, a
reference or personalisation may hold is ingest's to say. Messages are built as Notify builds them
from jsonschema's (app/schema_validation): "{field} {message}" with quotes stripped, every error listed
in the schema's order (properties, then required, then unknown properties). The same definitions give
the OpenAPI document its request schemas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from herald.domain import inputs

STRING, UUID, OBJECT, STRING_LIST, DATETIME, HTTPS_URL, ENUM = (
    "string",
    "uuid",
    "object",
    "string_list",
    "datetime",
    "https_url",
    "enum",
)


@dataclass(frozen=True, slots=True)
class Field:
    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()  # ENUM only
    nullable: bool = False  # Notify's scheduled_for takes null
    description: str = ""


Schema = Mapping[str, Field]

_PERSONALISATION = Field(OBJECT, description="Values for the template's placeholders")
_REFERENCE = Field(STRING, description="Your own identifier, up to 1000 characters")
_SCHEDULED_FOR = Field(
    DATETIME,
    nullable=True,
    description="Hand the message off at this time, at most 24 hours ahead (Notify validates it, then ignores it)",
)

SMS: Final[Schema] = {
    "phone_number": Field(STRING, required=True),
    "template_id": Field(UUID, required=True),
    "personalisation": _PERSONALISATION,
    "reference": _REFERENCE,
    "sms_sender_id": Field(UUID),
    "scheduled_for": _SCHEDULED_FOR,
}
EMAIL: Final[Schema] = {
    "email_address": Field(STRING, required=True),
    "template_id": Field(UUID, required=True),
    "personalisation": _PERSONALISATION,
    "reference": _REFERENCE,
    "email_reply_to_id": Field(UUID),
    "one_click_unsubscribe_url": Field(HTTPS_URL),
    "sanitise_content_for": Field(STRING_LIST, description="Personalisation keys whose values are escaped"),
    "scheduled_for": _SCHEDULED_FOR,
}
LETTER: Final[Schema] = {
    "template_id": Field(UUID, required=True),
    "personalisation": Field(OBJECT, required=True, description="The address lines and the placeholders"),
    "reference": _REFERENCE,
}
PRECOMPILED_LETTER: Final[Schema] = {
    "reference": Field(STRING, required=True),
    "content": Field(STRING, required=True, description="The PDF, base64-encoded"),
    "postage": Field(ENUM, choices=("first", "second", "economy")),
}
PREVIEW: Final[Schema] = {"personalisation": _PERSONALISATION}

_TYPE_NAMES: Final = {STRING: "string", UUID: "string", OBJECT: "object", STRING_LIST: "array", HTTPS_URL: "string"}
_PYTHON_TYPES: Final[Mapping[str, type]] = {STRING: str, OBJECT: dict, STRING_LIST: list, HTTPS_URL: str}
_BAD_DATETIME: Final = (
    "datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601"
)


def _shown(value: Any) -> str:
    """jsonschema shows the instance as Python's repr; Notify strips the quotes."""
    return repr(value).replace("'", "")


def _type_error(name: str, value: Any, type_name: str) -> str:
    return f"{name} {_shown(value)} is not of type {type_name}"


def _field_errors(name: str, field: Field, value: Any) -> list[str]:
    if value is None and field.nullable:
        return []
    if field.kind == UUID:
        # Notify's uuid schema carries a validationMessage, which stands for any error in it, type included.
        try:
            inputs.canonical_uuid(value, name)
        except inputs.InputError:
            return [f"{name} is not a valid UUID"]
        return []
    if field.kind == HTTPS_URL:
        # So is Notify's https_url's ("is not a valid https url").
        return [] if isinstance(value, str) and value.startswith("https") else [f"{name} is not a valid https url"]
    if field.kind == ENUM:
        if value not in field.choices:
            return [f"{name} {_shown(value)} is not one of [{', '.join(field.choices)}]"]
        return []
    if field.kind == DATETIME:
        return [f"{name} {message}" for message in _datetime_errors(value)]
    expected = _PYTHON_TYPES[field.kind]
    if not isinstance(value, expected):
        return [_type_error(name, value, _TYPE_NAMES[field.kind])]
    if isinstance(value, list):
        return [_type_error(name, item, "string") for item in value if not isinstance(item, str)]
    return []


def _datetime_errors(value: Any) -> list[str]:
    if not isinstance(value, str):
        return [f"{_shown(value)} is not of type string, null"]
    try:
        when = parse_datetime(value)
    except ValueError:
        return [_BAD_DATETIME]
    now = datetime.now(UTC)
    if when < now:
        return ["datetime can not be in the past"]
    if when > now + timedelta(hours=24):
        return ["datetime can only be 24 hours in the future"]
    return []


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 time; one without a zone is UTC (Notify's). Raises ValueError."""
    when = datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def errors(body: Any, schema: Schema, *, allow_unknown: bool = False) -> list[str]:
    """Notify's messages for everything wrong with `body`, in Notify's order; empty when it is good.
    `allow_unknown`: the schema does not forbid other properties (Notify's preview schema)."""
    if not isinstance(body, dict):
        return [f"{_shown(body)} is not of type object"]
    found: list[str] = []
    for name, field in schema.items():
        if name in body:
            found.extend(_field_errors(name, field, body[name]))
    found.extend(
        f"{name} is a required property" for name, field in schema.items() if field.required and name not in body
    )
    unknown = [] if allow_unknown else [key for key in body if key not in schema]
    if unknown:
        listed = ", ".join(_shown(key) for key in unknown)
        found.append(
            f"Additional properties are not allowed ({listed} {'was' if len(unknown) == 1 else 'were'} unexpected)"
        )
    return list(dict.fromkeys(found))  # Notify lists each message once


def json_schema(schema: Schema, *, allow_unknown: bool = False) -> dict[str, Any]:
    """The OpenAPI (JSON Schema) form of `schema`."""
    properties: dict[str, Any] = {}
    for name, field in schema.items():
        if field.kind == UUID:
            prop: dict[str, Any] = {"type": "string", "format": "uuid"}
        elif field.kind == ENUM:
            prop = {"type": "string", "enum": list(field.choices)}
        elif field.kind == DATETIME:
            prop = {"type": "string", "format": "date-time"}
        elif field.kind == STRING_LIST:
            prop = {"type": "array", "items": {"type": "string"}}
        elif field.kind == HTTPS_URL:
            prop = {"type": "string", "pattern": "^https"}
        else:
            prop = {"type": _TYPE_NAMES[field.kind]}
        if field.nullable:
            prop["nullable"] = True
        if field.description:
            prop["description"] = field.description
        properties[name] = prop
    required = [name for name, field in schema.items() if field.required]
    out: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": allow_unknown}
    if required:
        out["required"] = required
    return out


def query_errors(query: Sequence[tuple[str, str]], allowed: Sequence[str]) -> list[str]:
    """Unknown query parameters: Notify's query schemas allow no other."""
    unknown = list(dict.fromkeys(key for key, _ in query if key not in allowed))
    if not unknown:
        return []
    listed = ", ".join(unknown)
    return [f"Additional properties are not allowed ({listed} {'was' if len(unknown) == 1 else 'were'} unexpected)"]
