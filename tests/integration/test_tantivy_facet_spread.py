"""Facets of a big result set: counted in groups on the facet pool when the search is alone, in one call beside
other searches. Either way the counts are the corpus's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import search.tantivy_engine as te
from search.engine import Facet
from search.query import MatchAll
from search.tantivy_engine import TantivyEngine
from tests.contract.corpus import DOCS, SCHEMA, facet_counts

INDEX = "catalogue"
FACETS = [Facet("library"), Facet("language"), Facet("decade"), Facet("available"), Facet("city")]


@pytest.fixture
async def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TantivyEngine]:
    monkeypatch.setattr(te, "_PARALLEL_FACETS", 1)  # every result set counts as big
    engine = TantivyEngine(tmp_path / "search")
    await engine.open(INDEX, SCHEMA)
    await engine.upsert(INDEX, DOCS)
    await engine.refresh(INDEX)
    yield engine
    await engine.close()


@pytest.fixture
def handed_over(engine: TantivyEngine, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each facet group handed to the facet pool."""
    groups: list[Any] = []
    submit = engine._facet_pool.submit

    def counted(fn: Any, *args: Any) -> Any:
        groups.append(args[-1])
        return submit(fn, *args)

    monkeypatch.setattr(engine._facet_pool, "submit", counted)
    return groups


def expected() -> dict[str, Any]:
    return {f.field: facet_counts(f.field, [d.id for d in DOCS]) for f in FACETS}


async def test_alone_the_groups_go_to_the_facet_pool(engine: TantivyEngine, handed_over: list[Any]) -> None:
    result = await engine.search(INDEX, MatchAll(), facets=FACETS, limit=3)
    assert len(handed_over) == te._FACET_GROUPS - 1
    assert result.facets == expected()
    # the library facet's columns (one slot and the values beyond it) are counted in one group: each group runs
    # the query again
    library = [{key for key in group if key.startswith("f0")} for group in handed_over]
    assert all(keys in (set(), {"f0s0", "f0m"}) for keys in library)


async def test_beside_other_searches_one_call_counts_them_all(engine: TantivyEngine, handed_over: list[Any]) -> None:
    results = await asyncio.gather(*(engine.search(INDEX, MatchAll(), facets=FACETS, limit=3) for _ in range(6)))
    # the first found the engine idle and spread its groups; the five started beside it did not
    assert len(handed_over) == te._FACET_GROUPS - 1
    assert all(r.facets == expected() for r in results)
    assert engine._searching == 0
