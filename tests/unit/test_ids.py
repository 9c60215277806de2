"""Row ids: UUID version 7 in hex, ordered by the millisecond they were made in, never repeated."""

import time
import uuid

from federation.db import new_id


def test_an_id_is_a_version_7_uuid_in_32_lowercase_hex_digits():
    value = new_id()
    assert len(value) == 32 and value == value.lower()
    parsed = uuid.UUID(hex=value)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_the_id_starts_with_the_millisecond_it_was_made_in():
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert before <= int(value[:12], 16) <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones():
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert first < second


def test_ids_made_in_one_millisecond_are_still_unique():
    values = [new_id() for _ in range(100_000)]
    assert len(set(values)) == len(values)
