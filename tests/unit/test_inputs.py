"""Pure tests of herald.domain.inputs: what ingest refuses so that everything it accepts can be stored."""

from __future__ import annotations

import math
import uuid
from typing import Any

import orjson
import pytest
from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain import inputs
from herald.domain.inputs import InputError

ID = "6a9b3b1c-6a4e-4bd3-9e7b-0c2b7a3f1d11"


def _input_error(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InputError) as err:
        call(*args, **kwargs)
    assert str(err.value) == err.value.message
    return err.value.field, err.value.message


def _nested(levels: int) -> dict[str, Any]:
    """An object `levels` deep counting itself: {"a": {"a": ... {}}}."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


# --- ids ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(ID, ID), (ID.upper(), ID), ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000")],
)
def test_canonical_uuid_is_lowercase(value: str, expected: str) -> None:
    assert inputs.canonical_uuid(value, "template_id") == expected


@pytest.mark.parametrize(
    "value",
    [
        f"urn:uuid:{ID}",
        f"{{{ID}}}",
        ID.replace("-", ""),
        "-" + ID,
        ID + "-",
        ID.replace("-", "--", 1),
        "6a9b-3b1c-6a4e-4bd3-9e7b-0c2b-7a3f-1d11",
        ID + "\n",
        " " + ID,
        ID[:-1],
        ID + "0",
        ID[:-1] + "g",
        ID[:-1] + "\x00",
        ID[:-1] + "٣",  # an Arabic-Indic digit: str.isdigit says yes, PostgreSQL says no
        "",
        None,
        1,
    ],
)
def test_other_spellings_of_a_uuid_are_refused(value: Any) -> None:
    assert _input_error(inputs.canonical_uuid, value, "template_id") == (
        "template_id",
        "template_id is not a valid UUID",
    )


def test_uuid_module_accepts_what_canonical_uuid_refuses() -> None:
    """Why the check exists: uuid.UUID reads these, PostgreSQL's uuid type does not."""
    for spelling in (f"urn:uuid:{ID}", f"{{{ID}}}", "-" + ID.replace("-", "") + "-"):
        assert str(uuid.UUID(spelling)) == ID
        with pytest.raises(InputError):
            inputs.canonical_uuid(spelling, "id")


# --- text -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "ref", "Amélie", "😀 emoji", "a" * 1000, "tab\tnew\nline"])
def test_check_text_accepts_storable_text(value: str) -> None:
    inputs.check_text(value, "reference", max_length=1000)


@pytest.mark.parametrize(
    ("value", "max_length", "message"),
    [
        ("a\x00b", None, "reference contains a character that is not allowed (NUL)"),
        ("\x00", None, "reference contains a character that is not allowed (NUL)"),
        ("a\ud800b", None, "reference contains a character that is not allowed (lone surrogate)"),
        ("\udfff", None, "reference contains a character that is not allowed (lone surrogate)"),
        ("é\udc80", None, "reference contains a character that is not allowed (lone surrogate)"),
        ("a" * 1001, 1000, f"reference {'a' * 20}... is too long"),
        ("é" * 11, 10, f"reference {'é' * 11}... is too long"),
    ],
)
def test_check_text_refuses(value: str, max_length: int | None, message: str) -> None:
    assert _input_error(inputs.check_text, value, "reference", max_length=max_length) == ("reference", message)


def test_check_text_counts_characters_not_bytes() -> None:
    inputs.check_text("é" * 10, "reference", max_length=10)


# --- personalisation: what it keeps ---------------------------------------------------------------


def test_struct_numbers_render_as_notifys_json_would() -> None:
    """A Struct holds every number as a double; MessageToDict gives 1234.0 for 1234."""
    given_values = MessageToDict(_struct({"code": 1234, "price": 2.5, "zero": 0, "negative": -7}))
    assert given_values == {"code": 1234.0, "price": 2.5, "zero": 0.0, "negative": -7.0}
    plain = inputs.plain_personalisation(given_values)
    assert plain == {"code": 1234, "price": 2.5, "zero": 0, "negative": -7}
    assert type(plain["code"]) is int
    assert f"Your code is {plain['code']}" == "Your code is 1234"
    assert orjson.dumps(plain, option=orjson.OPT_SORT_KEYS) == b'{"code":1234,"negative":-7,"price":2.5,"zero":0}'


@pytest.mark.parametrize(
    ("number", "expected"),
    [(2.0**53, 2**53), (-(2.0**53), -(2**53)), (-0.0, 0), (1e300, 1e300), (2.0**53 + 2, 2.0**53 + 2), (0.1, 0.1)],
)
def test_floats_become_ints_only_when_exact(number: float, expected: float) -> None:
    plain = inputs.plain_personalisation({"n": number})["n"]
    assert plain == expected
    assert type(plain) is type(expected)


def test_the_struct_itself_is_walked_as_a_mapping() -> None:
    """Passing the Struct avoids MessageToDict, which raises ValueError (an INTERNAL) on NaN."""
    value = {"name": "Jo", "items": ["a", 1, {"deep": [True, None]}], "code": 1234}
    assert inputs.plain_personalisation(_struct(value)) == value
    with pytest.raises(ValueError):
        MessageToDict(_struct({"n": math.nan}))


def test_json_body_values_are_kept() -> None:
    value = {"s": "x", "i": 12, "f": 1.5, "t": True, "f2": False, "n": None, "l": ["a", ["b"]], "o": {"k": "v"}}
    plain = inputs.plain_personalisation(value)
    assert plain == value
    assert plain is not value


def test_tuples_become_lists_and_huge_integers_their_text() -> None:
    plain = inputs.plain_personalisation({"t": ("a", "b"), "big": 10**30, "edge": 2**64 - 1, "low": -(2**63)})
    assert plain == {"t": ["a", "b"], "big": "1" + "0" * 30, "edge": 2**64 - 1, "low": -(2**63)}
    orjson.dumps(plain)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value = _nested(inputs.MAX_DEPTH)
    assert inputs.plain_personalisation(value) == value


def test_a_large_legitimate_email_personalisation_is_accepted() -> None:
    """The largest email body (2,000,000 bytes) in one value, every character escaped in JSON."""
    body = '"' * 2_000_000
    assert inputs.plain_personalisation({"body": body, "list": ["item"] * 100_000})["body"] is body


# --- personalisation: what it refuses -------------------------------------------------------------

NAN = "personalisation contains a number that is not allowed (NaN)"
NUL = "personalisation contains a character that is not allowed (NUL)"
SURROGATE = "personalisation contains a character that is not allowed (lone surrogate)"
DEEP = f"personalisation is nested more than {inputs.MAX_DEPTH} levels deep"
LARGE = f"personalisation is larger than {inputs.MAX_BYTES} bytes"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"n": math.nan}, NAN),
        ({"n": math.inf}, "personalisation contains a number that is not allowed (Infinity)"),
        ({"n": -math.inf}, "personalisation contains a number that is not allowed (-Infinity)"),
        ({"l": [1, [2, math.nan]]}, NAN),
        ({"o": {"n": math.nan}}, NAN),
        ({"s": "a\x00b"}, NUL),
        ({"a\x00": "b"}, NUL),
        ({"l": ["ok", "\x00"]}, NUL),
        ({"o": {"k\x00": 1}}, NUL),
        ({"s": "\ud800"}, SURROGATE),
        ({"\udc00": "b"}, SURROGATE),
        ({"l": ["é\udfff"]}, SURROGATE),
        (_nested(inputs.MAX_DEPTH + 1), DEEP),
        (_nested(45), DEEP),
        ({"l": [[[[[[[[[[1]]]]]]]]]]}, DEEP),
        ({"s": "x" * (inputs.MAX_BYTES + 1)}, LARGE),
        ({"s": "\x01" * (inputs.MAX_BYTES // 6 + 1)}, LARGE),  # each escaped as \u0001 in JSON
        ({"l": [None] * (inputs.MAX_ENTRIES + 1)}, f"personalisation has more than {inputs.MAX_ENTRIES} entries"),
        ({1: "a"}, "personalisation keys must be strings"),
        ({"b": b"bytes"}, "personalisation contains a value that is not allowed (bytes)"),
        ({"s": {"a", "b"}}, "personalisation contains a value that is not allowed (set)"),
        ({"o": object()}, "personalisation contains a value that is not allowed (object)"),
    ],
)
def test_personalisation_refuses(value: dict[Any, Any], message: str) -> None:
    assert _input_error(inputs.plain_personalisation, value) == ("personalisation", message)


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_struct_with_nan_or_infinity_is_refused(number: float) -> None:
    with pytest.raises(InputError):
        inputs.plain_personalisation(_struct({"n": number}))


def test_deep_struct_is_refused() -> None:
    with pytest.raises(InputError) as err:
        inputs.plain_personalisation(_struct(_nested(45)))
    assert err.value.message == DEEP


def test_ten_thousand_levels_do_not_exhaust_the_stack() -> None:
    value: Any = {}
    for _ in range(10_000):
        value = {"a": [value]}
    assert _input_error(inputs.plain_personalisation, value) == ("personalisation", DEEP)


def test_not_an_object() -> None:
    assert _input_error(inputs.plain_personalisation, ["a"]) == (
        "personalisation",
        "personalisation is not of type object",
    )


# --- the property: storable or InputError, nothing else -------------------------------------------

_any_character = st.characters(exclude_categories=())  # NUL and lone surrogates included
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=_any_character, max_size=20)
)
_json_like = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(_any_character, max_size=8), children, max_size=4)
    ),
    max_leaves=40,
)


def _storable(value: Any) -> bool:
    """No NUL or surrogate anywhere in orjson's output, which PostgreSQL text would then hold."""
    text = orjson.dumps(value).decode()
    return "\\u0000" not in text and "\x00" not in text


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(_any_character, max_size=8), _json_like, max_size=6))
def test_any_json_like_input_is_made_storable_or_refused(value: dict[str, Any]) -> None:
    try:
        plain = inputs.plain_personalisation(value)
    except InputError as err:
        assert err.field == "personalisation"
        return
    assert _storable(plain)  # orjson.dumps raises on a surrogate and on nesting deeper than 254
    assert orjson.loads(orjson.dumps(plain)) == plain  # and writes NaN as null, which would not round-trip


@settings(max_examples=100, deadline=None)
@given(_json_like.filter(lambda v: isinstance(v, dict)))
def test_any_struct_is_made_storable_or_refused(value: dict[str, Any]) -> None:
    try:
        struct = _struct(value)
    except (ValueError, TypeError):
        return  # protobuf itself refuses it (an integer beyond a double, a surrogate): never reaches ingest
    try:
        plain = inputs.plain_personalisation(struct)
    except InputError:
        return
    assert _storable(plain)
    assert orjson.loads(orjson.dumps(plain)) == plain


def test_a_struct_value_with_no_kind_is_refused_not_a_crash() -> None:
    """Protobuf's Struct raises ValueError on reading a Value whose kind is unset (found by the fuzzer)."""
    struct = Struct()
    struct.update({"name": "Ada"})
    struct.fields["code"].Clear()
    with pytest.raises(inputs.InputError) as refused:
        inputs.plain_personalisation(struct)
    assert (refused.value.field, refused.value.message) == (
        "personalisation",
        "personalisation has a value that is not set",
    )


# Structs whose only possible refusal is a Value left without a kind (_UNSET), so that the order in which
# the two readings meet refusals cannot matter.
_UNSET = object()
_struct_text = st.text(max_size=8).filter(lambda text: "\x00" not in text)
_struct_tree = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | _struct_text | st.just(_UNSET),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_struct_text, children, max_size=4),
    max_leaves=20,
)


def _set(target: struct_pb2.Value, value: Any) -> None:
    if value is _UNSET:
        return
    if isinstance(value, dict):
        target.struct_value.Clear()  # marks it set, even when empty
        for key, item in value.items():
            _set(target.struct_value.fields[key], item)
    elif isinstance(value, list):
        target.list_value.Clear()
        for item in value:
            _set(target.list_value.values.add(), item)
    else:
        holder = struct_pb2.Struct()
        holder.update({"v": value})
        target.CopyFrom(holder.fields["v"])


def _through_protobuf(value: Any) -> Any:
    """A Struct read through protobuf's own Mapping and Sequence views."""
    if isinstance(value, Struct):
        return {key: _through_protobuf(item) for key, item in value.items()}
    if isinstance(value, struct_pb2.ListValue):
        return [_through_protobuf(item) for item in value]
    return value


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_struct_text, _struct_tree, max_size=5), reparsed=st.booleans())
def test_a_struct_is_read_as_protobufs_own_views_read_it(value: dict[str, Any], reparsed: bool) -> None:
    # The walk reads a Struct's fields directly; the result, key order included, must not change.
    struct = Struct()
    for key, item in value.items():
        _set(struct.fields[key], item)
    if reparsed:  # as ingest receives it: parsed from the wire
        struct = Struct.FromString(struct.SerializeToString())
    try:
        expected = inputs.plain_personalisation(_through_protobuf(struct))
    except ValueError:  # protobuf refuses to read a Value with no kind
        assert _input_error(inputs.plain_personalisation, struct) == (
            "personalisation",
            "personalisation has a value that is not set",
        )
        return
    assert orjson.dumps(inputs.plain_personalisation(struct)) == orjson.dumps(expected)
