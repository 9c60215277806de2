"""Which card events a run applies: strictly in sequence, each once, never past a hole."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from connectors.social_security.schemas import CardEvent, CardEventPage
from connectors.social_security.service import next_batch

AT = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)


def ev(seq: int) -> CardEvent:
    return CardEvent(seq=seq, type="lost", card_number=f"CQ{seq:07d}", occurred_at=AT)


def seqs(events: list[CardEvent]) -> list[int]:
    return [e.seq for e in events]


@pytest.mark.parametrize(
    ("incoming", "after", "applied", "counts"),
    [
        ([1, 2, 3], 0, [1, 2, 3], {"duplicates": 0, "already_applied": 0, "waiting": 0}),
        ([3, 1, 2], 0, [1, 2, 3], {"duplicates": 0, "already_applied": 0, "waiting": 0}),
        ([1, 1, 2, 2], 0, [1, 2], {"duplicates": 2, "already_applied": 0, "waiting": 0}),
        ([4, 5, 6], 5, [6], {"duplicates": 0, "already_applied": 2, "waiting": 0}),
        ([1, 2, 4, 5], 0, [1, 2], {"duplicates": 0, "already_applied": 0, "waiting": 2}),
        ([2, 3], 0, [], {"duplicates": 0, "already_applied": 0, "waiting": 2}),
        ([], 7, [], {"duplicates": 0, "already_applied": 0, "waiting": 0}),
    ],
)
def test_next_batch(incoming, after, applied, counts):
    batch, got = next_batch([ev(s) for s in incoming], after)
    assert seqs(batch) == applied
    assert got == counts


def test_a_reissue_without_its_new_card_is_a_bad_payload():
    with pytest.raises(ValidationError):
        CardEvent(seq=1, type="reissued", card_number="CQ1", occurred_at=AT)
    with pytest.raises(ValidationError):
        CardEventPage.model_validate({"events": [{"seq": "x"}], "latest_seq": 1})
