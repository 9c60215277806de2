"""Row ids: UUID version 7 in hex, ordered by the millisecond they were made in, never repeated."""

import concurrent.futures
import os
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


def test_ids_made_in_many_threads_at_once_are_unique():
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(20_000)], range(8)))
    values = [v for b in batches for v in b]
    assert len(set(values)) == len(values) == 160_000


def test_a_forked_child_does_not_repeat_its_parents_ids():
    new_id()  # the parent has random bytes in hand when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent, then out without running anything else
        os.close(read)
        os.write(write, "".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    parent = {new_id()[12:] for _ in range(50)}
    with os.fdopen(read, "rb") as f:
        text = f.read().decode()
    os.waitpid(pid, 0)
    child = {text[i + 12 : i + 32] for i in range(0, len(text), 32)}
    assert len(child) == 50 and not parent & child


def test_the_random_bits_come_from_the_system_in_bulk(monkeypatch):
    """One system call per id would release the GIL at every id (the loading process makes several per
    record) and hand it to whichever thread waits."""
    calls = []
    real = os.urandom

    def counting(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    values = [new_id() for _ in range(10_000)]
    assert len(set(values)) == 10_000
    assert 0 < len(calls) <= 10_000 // 200
