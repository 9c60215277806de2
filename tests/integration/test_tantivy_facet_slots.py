"""Facet slots (``Field.facet_slots``) in the embedded engine: a slotted field's facets count exactly what the
same values count on a field without slots, whatever the documents hold (no value, one, more than the slots,
the same value twice, the empty string, a value that looks like a slot's own encoding), after updates and
deletes, on the engine's one-call and spread paths alike."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import search.tantivy_engine as te
from search import elastic_engine
from search.common import check_schema
from search.engine import Document, Facet, Field, FieldKind, Schema
from search.query import And, Exact, MatchAll, Node, Not, Term
from search.tantivy_engine import TantivyEngine

INDEX = "slots"
SCHEMA = Schema(
    (
        Field("title", FieldKind.TEXT, analyzer="text", default=True),
        Field("tag", FieldKind.KEYWORD),
        Field("slotted", FieldKind.KEYWORD, multi=True, facet_slots=2),
        Field("plain", FieldKind.KEYWORD, multi=True),
        Field("one", FieldKind.KEYWORD, facet_slots=1),
        Field("one_plain", FieldKind.KEYWORD),
    )
)
VALUES = ["", "=", "=a", "a", "b", "c", "长江", "a b", "d"]
QUERIES: list[Node] = [
    MatchAll(),
    Term("river"),
    Exact("tag", "t1"),
    And((Term("river"), Not(Exact("tag", "t0")))),
    Exact("slotted", "a"),
]


def doc(rng: random.Random, i: int) -> Document:
    values = [rng.choice(VALUES) for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3, 5)))]
    one = rng.choice([None, *VALUES])
    return Document(
        f"d{i}",
        {
            "title": rng.choice(["river town", "mountain road", "river and mountain"]),
            "tag": f"t{i % 3}",
            "slotted": values,
            "plain": values,
            "one": one,
            "one_plain": one,
        },
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[TantivyEngine]:
    engine = TantivyEngine(tmp_path / "search")
    await engine.open(INDEX, SCHEMA)
    yield engine
    await engine.close()


async def assert_alike(engine: TantivyEngine, size: int = 20) -> None:
    for query in QUERIES:
        facets = [Facet("slotted", size), Facet("plain", size), Facet("one", size), Facet("one_plain", size)]
        result = await engine.search(INDEX, query, facets=facets, limit=0)
        assert result.facets["slotted"] == result.facets["plain"], query
        assert result.facets["one"] == result.facets["one_plain"], query
        assert result.total == 0 or result.facets["plain"] or result.facets["one_plain"], query


@pytest.mark.parametrize("spread", [False, True])
async def test_slotted_facets_count_as_the_field_without_slots(
    engine: TantivyEngine, spread: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if spread:
        monkeypatch.setattr(te, "_PARALLEL_FACETS", 1)  # every result set counts as big: groups on the pool
    rng = random.Random(7)
    docs = [doc(rng, i) for i in range(400)]
    assert any(len(set(d.values["slotted"])) > 2 for d in docs)  # some values beyond the slots
    assert any(len(d.values["slotted"]) != len(set(d.values["slotted"])) for d in docs)  # a value twice
    await engine.upsert(INDEX, docs)
    await engine.refresh(INDEX)
    await assert_alike(engine)
    await assert_alike(engine, size=3)  # a cut: by count, then value

    # new values for some documents (beyond the slots, none at all, fewer), and some deleted
    await engine.upsert(INDEX, [doc(rng, i) for i in range(0, 400, 7)])
    every = {"title": "river", "slotted": VALUES, "plain": VALUES}
    await engine.upsert(INDEX, [Document(f"d{i}", every) for i in range(1, 60, 9)])
    await engine.delete(INDEX, [f"d{i}" for i in range(3, 400, 11)])
    await engine.refresh(INDEX)
    await assert_alike(engine)


async def test_values_beyond_the_slots_are_counted(engine: TantivyEngine) -> None:
    docs = [Document(f"d{i}", {"title": "river", "slotted": ["a", "b"][: i % 3]}) for i in range(9)]
    await engine.upsert(INDEX, docs)
    await engine.refresh(INDEX)
    result = await engine.search(INDEX, MatchAll(), facets=[Facet("slotted")], limit=0)
    assert result.facets["slotted"] == [("a", 6), ("b", 3)]  # and no bucket for the empty slots

    await engine.upsert(INDEX, [Document("many", {"title": "sea", "slotted": ["d", "a", "c", "b", "a"]})])
    await engine.refresh(INDEX)
    result = await engine.search(INDEX, MatchAll(), facets=[Facet("slotted")], limit=0)
    assert result.facets["slotted"] == [("a", 7), ("b", 4), ("c", 1), ("d", 1)]
    result = await engine.search(INDEX, Term("sea"), facets=[Facet("slotted", size=2)], limit=0)
    assert result.facets["slotted"] == [("a", 1), ("b", 1)]


def test_facet_slots_are_checked() -> None:
    def schema(field: Field) -> Schema:
        return Schema((field,))

    check_schema(schema(Field("k", FieldKind.KEYWORD, multi=True, facet_slots=8)), lambda _: True, "")
    for bad in (
        Field("k", FieldKind.KEYWORD, facet_slots=-1),
        Field("k", FieldKind.KEYWORD, facet_slots=9),
        Field("k", FieldKind.KEYWORD, facet_slots=True),  # type: ignore[arg-type]
        Field("k", FieldKind.TEXT, facet_slots=1),
        Field("k", FieldKind.INTEGER, facet_slots=1),
    ):
        with pytest.raises(ValueError, match="facet_slots"):
            check_schema(schema(bad), lambda _: True, "")


def test_a_schema_without_slots_is_stored_as_before() -> None:
    """So an index built before slots existed is not started anew by a server that knows them; and
    Elasticsearch, which lays out nothing by them, never starts anew for them."""
    plain = Schema((Field("k", FieldKind.KEYWORD, multi=True),))
    slotted = Schema((Field("k", FieldKind.KEYWORD, multi=True, facet_slots=2),))
    assert te._schema_json(plain) == (  # as written before facet slots existed
        '{"fields": [{"analyzer": null, "boost": 1.0, "default": false, "kind": "keyword", "multi": true, '
        '"name": "k"}], "mapping": 1}'
    )
    assert json.loads(te._schema_json(slotted))["fields"][0]["facet_slots"] == 2
    assert elastic_engine._schema_json(plain) == elastic_engine._schema_json(slotted)
