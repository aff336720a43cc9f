"""Notification ids made many at a time are the same kind of id as uuid.uuid4()'s."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from herald.domain.ids import random_uuids


@given(st.integers(min_value=0, max_value=300))
def test_each_id_is_a_version_4_uuid_written_as_str_uuid_writes_it(n: int) -> None:
    ids = random_uuids(n)
    assert len(ids) == n
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_ids_do_not_repeat_within_or_across_calls() -> None:
    ids = random_uuids(5_000) + random_uuids(5_000)
    assert len(set(ids)) == len(ids)


def test_every_bit_outside_the_version_and_variant_varies() -> None:
    """Randomness reaches each of the 122 free bits: none is stuck at 0 or at 1 over many ids."""
    values = [uuid.UUID(text).int for text in random_uuids(2_000)]
    fixed = (0xF << 76) | (0x3 << 62)  # the version nibble and the variant's two bits
    ones = 0
    zeros = 0
    for value in values:
        ones |= value
        zeros |= ~value
    free = ((1 << 128) - 1) & ~fixed
    assert ones & free == free
    assert zeros & free == free
