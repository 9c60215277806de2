"""``federation.bootstrap.bulk_load``: the oldest generation is swept rarely while loads run, as before after."""

from __future__ import annotations

import asyncio
import gc

import pytest

from federation.bootstrap import BULK_THRESHOLD2, bulk_load


@pytest.fixture(autouse=True)
def _threshold():
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_full_sweeps_wait_during_a_load_and_come_back_after():
    with bulk_load():
        assert gc.get_threshold() == (700, 10, BULK_THRESHOLD2)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_loads_restore_when_the_last_ends():
    outer, inner = bulk_load(), bulk_load()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first to start ends first: the other is still loading
    assert gc.get_threshold()[2] == BULK_THRESHOLD2
    inner.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_failed_load_restores_too():
    with pytest.raises(RuntimeError), bulk_load():
        raise RuntimeError("bad file")
    assert gc.get_threshold() == (700, 10, 10)


def test_a_threshold_set_higher_already_is_kept():
    gc.set_threshold(700, 10, 5000)
    with bulk_load():
        assert gc.get_threshold()[2] == 5000
    assert gc.get_threshold() == (700, 10, 5000)


async def test_concurrent_loads_on_one_loop():
    async def load(pause: float) -> int:
        with bulk_load():
            await asyncio.sleep(pause)
            return gc.get_threshold()[2]

    assert await asyncio.gather(load(0.01), load(0.03), load(0.02)) == [BULK_THRESHOLD2] * 3
    assert gc.get_threshold() == (700, 10, 10)
