"""The fuzzer's inputs are what they claim to be, and a case is reproducible from its seed and index."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter

import pytest
from google.protobuf import struct_pb2
from google.protobuf.descriptor_pool import Default

from chaos.fuzz import contract_services
from chaos.fuzz_inputs import ID_FORMS, KINDS, Generator, Seeds, Target, nested_struct, signed_token

CANONICAL = "8d5e3f4a-1b2c-4d3e-9f00-123456789abc"


def _seeds() -> Seeds:
    ids = [str(uuid.UUID(int=n)) for n in range(1, 9)]
    return Seeds(
        service_id=ids[0],
        live_secret=ids[1],
        research_service_id=ids[2],
        research_secret=ids[3],
        test_secret=ids[4],
        admin_secret=ids[5],
        sms_template_id=ids[6],
        email_template_id=ids[7],
        notification_id=CANONICAL,
        task_names=("delete-expired",),
    )


def _targets() -> list[Target]:
    pool = Default()
    return [
        Target(f"/{service}/{method}", pool.FindMessageTypeByName(request), "none")
        for service, methods in contract_services().items()
        for method, request in methods
    ]


def test_a_case_depends_only_on_seed_and_index() -> None:
    first, again = Generator(_seeds(), 5), Generator(_seeds(), 5)
    for index in (0, 1, 17, 999):
        a, b = first.case(index, _targets()), again.case(index, _targets())
        if a.kind == "token":  # tokens carry the current time
            continue
        assert (a.target.path, a.kind, a.note, a.payload) == (b.target.path, b.kind, b.note, b.payload)


def test_every_kind_is_drawn_and_every_rpc_targeted() -> None:
    generator = Generator(_seeds(), 1)
    cases = [generator.case(i, _targets()) for i in range(600)]
    assert set(Counter(c.kind for c in cases)) == set(KINDS)
    assert {c.target.path for c in cases} == {t.path for t in _targets()}


@pytest.mark.parametrize("form", ID_FORMS, ids=lambda f: f.__name__)
def test_id_forms_are_not_canonical_text(form: object) -> None:
    assert callable(form)
    assert form(CANONICAL) != CANONICAL


def test_python_accepts_the_forms_postgresql_refuses() -> None:
    # Why these forms matter: uuid.UUID normalises them, so a check with it alone lets them reach SQL.
    for form in ("urn", "braced", "extra_hyphens", "fullwidth_digits"):
        mutated = next(f for f in ID_FORMS if f.__name__ == form)(CANONICAL)
        assert str(uuid.UUID(mutated)) == CANONICAL


def test_nested_struct_is_as_deep_as_asked() -> None:
    parsed = struct_pb2.Struct.FromString(nested_struct(20))
    depth = 1
    while "a" in parsed.fields:
        parsed = parsed.fields["a"].struct_value
        depth += 1
    assert depth == 20
    assert parsed.fields["leaf"].string_value == "x"


def test_signed_tokens_carry_claims_no_json_encoder_writes() -> None:
    token = signed_token('{"alg":"HS256"}', '{"iss":"x","iat":1e400}', "secret")
    payload = token.split(".")[1]
    text = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    assert text == '{"iss":"x","iat":1e400}'
    assert json.loads(text)["iat"] == float("inf")
