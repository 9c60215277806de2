"""Feeds numbered 1, 2, 3, ...: which items to apply now, whatever a partner sends (duplicates, out of order, holes).

Shared by the social-security, housing and transport feeds: apply strictly in sequence
order, drop what is at or below the watermark, stop at a hole until a later run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Numbered(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=Numbered)


def contiguous(items: Iterable[T], after: int) -> tuple[list[T], dict[str, int]]:
    """The items ``after + 1, after + 2, ...`` with no hole, in order; counts of duplicates, items already applied
    and items waiting beyond a hole."""
    counts = {"duplicates": 0, "already_applied": 0, "waiting": 0}
    by_seq: dict[int, T] = {}
    for item in items:
        if item.seq <= after:
            counts["already_applied"] += 1
        elif item.seq in by_seq:
            counts["duplicates"] += 1
        else:
            by_seq[item.seq] = item
    batch: list[T] = []
    expected = after + 1
    while expected in by_seq:
        batch.append(by_seq.pop(expected))
        expected += 1
    counts["waiting"] = len(by_seq)
    return batch, counts
