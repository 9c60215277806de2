"""The engine contract: what every :class:`search.engine.Engine` does, tested the same way on each engine.

Rankings are asserted only where the shared analysis makes them unambiguous
(see ``corpus.py``); everything else is asserted as sets, counts and orders of
fields. The tests at the end, marked "tantivy only", check what the embedded
engine promises beyond the contract (its directory, its writer).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from search.analysis import index_strings
from search.engine import Document, Engine, Facet, Field, FieldKind, QueryError, Result, Schema, Sort, SortOrder
from search.query import And, Exact, MatchAll, Node, Not, Or, Phrase, Range, Term
from tests.contract.corpus import BY_ID, DOCS, IDS, SCHEMA, as_list, facet_counts, ids_where

ALL = 100  # a page size that holds the whole corpus


def ids(result: Result) -> list[str]:
    return [h.id for h in result.hits]


async def found(engine: Engine, index: str, query: Node, **kwargs: object) -> set[str]:
    result = await engine.search(index, query, limit=ALL, **kwargs)
    assert result.total == len(result.hits)
    return set(ids(result))


# ------------------------------------------------------------------------------------------- basics


async def test_open_is_idempotent_and_count_counts(loaded: Engine, index: str) -> None:
    await loaded.open(index, SCHEMA)
    assert await loaded.count(index) == len(DOCS)
    result = await loaded.search(index, MatchAll(), limit=ALL)
    assert result.total == len(DOCS)
    assert set(ids(result)) == IDS


async def test_empty_index(engine: Engine, index: str) -> None:
    await engine.open(index, SCHEMA)
    assert await engine.count(index) == 0
    result = await engine.search(index, Term("红楼梦"), facets=[Facet("library")])
    assert (result.total, result.hits) == (0, [])
    assert result.facets == {"library": []}


async def test_hits_carry_stored_fields(loaded: Engine, index: str) -> None:
    result = await loaded.search(index, Exact("isbn", "9787020002207"))
    assert ids(result) == ["hlm"]
    hit = result.hits[0]
    assert hit.stored == {"display": BY_ID["hlm"].values["display"]}
    assert hit.highlights == {}


# ------------------------------------------------------------------------------------------- finding the work


@pytest.mark.parametrize(
    ("query", "first"),
    [
        (Term("红楼梦"), "hlm"),
        (Term("紅樓夢"), "hlm"),  # traditional query, simplified record first
        (Term("hlm"), "hlm"),  # pinyin initials
        (Term("honglou"), "hlm"),  # pinyin
        (Term("honglou meng"), "hlm"),
        (And((Term("honglou"), Term("meng"))), "hlm"),
        (Term("楼梦"), "hlm"),  # two characters inside the title
        (Exact("isbn", "9787020002207"), "hlm"),
        (Term("Garcia Marquez"), "cien"),  # accents folded
        (And((Term("Garcia"), Term("Marquez"))), "cien"),
        (Term("GARCÍA"), "cien"),
        (Term("Bronte"), "jane"),
        (Term("Brontë"), "jane"),
        (Term("三体"), "santi"),
        (Term("liucixin"), "santi"),  # the author's pinyin; shortest title first
        (Term("Python"), "python-en"),
        (Exact("isbn", "9787536692930"), "santi"),
    ],
    ids=repr,
)
async def test_expected_first(loaded: Engine, index: str, query: Node, first: str) -> None:
    result = await loaded.search(index, query)
    assert result.hits, query
    assert result.hits[0].id == first, ids(result)


async def test_hongloumeng_family(loaded: Engine, index: str) -> None:
    family = {"hlm", "hlm-trad", "hlm-study"}
    for text in ("红楼梦", "紅樓夢", "hlm", "honglou", "楼梦", "红楼"):
        assert await found(loaded, index, Term(text)) == family, text
    # 红 alone is in 红星照耀中国, 梦 alone in 梦的解析: a bigram needs both characters together
    assert await found(loaded, index, Term("红")) == family | {"redstar"}
    assert await found(loaded, index, Term("梦")) == family | {"dream"}


async def test_traditional_and_simplified_are_one(loaded: Engine, index: str) -> None:
    assert await found(loaded, index, Term("紅樓夢研究")) == await found(loaded, index, Term("红楼梦研究"))
    assert await found(loaded, index, Term("中國", "subjects")) == ids_where(
        lambda v: any("中国" in s for s in v["subjects"])
    ) | {"hlm-trad"}


async def test_scores_are_descending(loaded: Engine, index: str) -> None:
    result = await loaded.search(index, Or((Term("红楼梦"), Term("三体"))), limit=ALL)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)


async def test_nothing_matches_nothing(loaded: Engine, index: str) -> None:
    for query in (Term("zzzzqqq"), Term("!!!"), Term(""), Phrase(""), Phrase("。。"), Term("龘")):
        result = await loaded.search(index, query)
        assert (result.total, result.hits) == (0, []), query


# ------------------------------------------------------------------------------------------- phrases and booleans


async def test_phrase_versus_terms(loaded: Engine, index: str) -> None:
    both = {"santi-2", "santi-comic", "santi-essays"}
    assert await found(loaded, index, And((Term("三体"), Term("黑暗")))) == both
    assert await found(loaded, index, Term("三体 黑暗")) == both  # one Term: all tokens, in one field
    assert await found(loaded, index, Phrase("三体 黑暗")) == {"santi-comic"}  # 三体：黑暗森林
    assert await found(loaded, index, Phrase("三体：黑暗森林")) == {"santi-comic"}
    assert await found(loaded, index, Phrase("黑暗 三体")) == set()
    assert await found(loaded, index, Phrase("黑暗森林")) == {"santi-2", "santi-comic"}


async def test_phrase_latin_and_fielded(loaded: Engine, index: str) -> None:
    assert await found(loaded, index, Phrase("años de soledad")) == {"cien"}
    assert await found(loaded, index, Phrase("de soledad años")) == set()
    assert await found(loaded, index, Phrase("python crash", "title")) == {"python-en"}
    assert await found(loaded, index, Phrase("python crash", "author")) == set()
    assert await found(loaded, index, Phrase("python")) == {"python-zh", "python-en", "python-fluent"}


async def test_phrase_does_not_run_across_values(loaded: Engine, index: str) -> None:
    # hlm's authors are [曹雪芹, 高鹗]: 芹 and 高 are neighbours only across two values
    assert await found(loaded, index, Phrase("曹雪芹", "author")) == {"hlm", "hlm-trad"}
    assert await found(loaded, index, Phrase("芹高", "author")) == set()
    assert await found(loaded, index, Phrase("芹 高", "author")) == set()


async def test_and_or_not(loaded: Engine, index: str) -> None:
    santi = {"santi", "santi-2", "santi-3", "santi-comic", "santi-essays"}
    hlm = {"hlm", "hlm-trad", "hlm-study"}
    assert await found(loaded, index, Term("三体")) == santi
    assert await found(loaded, index, Or((Term("三体"), Term("红楼梦")))) == santi | hlm
    assert await found(loaded, index, And((Term("三体"), Not(Term("黑暗"))))) == {"santi", "santi-3"}
    assert await found(loaded, index, And((MatchAll(), Not(Exact("language", "chi"))))) == ids_where(
        lambda v: v["language"] != "chi"
    )
    assert await found(loaded, index, Not(Exact("language", "chi"))) == ids_where(lambda v: v["language"] != "chi")
    assert await found(loaded, index, And((Or((Term("三体"), Term("红楼梦"))), Exact("available", False)))) == {
        "santi-2",
        "hlm-trad",
    }
    assert await found(loaded, index, Or((Term("三体"), Not(Exact("language", "chi"))))) == santi | ids_where(
        lambda v: v["language"] != "chi"
    )
    assert await found(loaded, index, And((Term("三体"), Not(Term("三体"))))) == set()


async def test_fielded_terms(loaded: Engine, index: str) -> None:
    liu = {"santi", "santi-2", "santi-3", "santi-comic"}
    assert await found(loaded, index, Term("刘慈欣", "author")) == liu
    assert await found(loaded, index, Term("刘慈欣", "title")) == set()
    assert await found(loaded, index, Term("刘慈欣")) == liu
    assert await found(loaded, index, Term("三体", "title")) == {
        "santi",
        "santi-2",
        "santi-3",
        "santi-comic",
        "santi-essays",
    }
    assert await found(loaded, index, Term("三体", "author")) == set()
    assert await found(loaded, index, Term("caoxueqin", "author")) == {"hlm", "hlm-trad"}
    # publisher is searchable by name only: it is not a default field
    assert await found(loaded, index, Term("重庆出版社")) == set()
    assert await found(loaded, index, Term("重庆出版社", "publisher")) == {
        "santi",
        "santi-2",
        "santi-3",
        "santi-comic",
    }


async def test_exact_filters(loaded: Engine, index: str) -> None:
    cqu = ids_where(lambda v: "CQ-CQU" in v["library"])
    assert await found(loaded, index, MatchAll(), filters=[Exact("library", "CQ-CQU")]) == cqu
    assert await found(loaded, index, Exact("library", "CQ-CQU")) == cqu
    assert await found(loaded, index, MatchAll(), filters=[Exact("language", "spa")]) == {"cien", "quijote"}
    assert await found(loaded, index, Term("三体"), filters=[Exact("library", "CD-PL")]) == {
        "santi",
        "santi-2",
        "santi-comic",
    }
    assert await found(loaded, index, Term("三体"), filters=[Exact("library", "CD-PL"), Exact("available", True)]) == {
        "santi",
        "santi-comic",
    }
    assert await found(loaded, index, MatchAll(), filters=[Exact("library", "cq-cqu")]) == set()  # keywords as is
    assert await found(loaded, index, Exact("year", 2008)) == {"santi", "santi-2"}
    assert await found(loaded, index, Exact("available", False)) == ids_where(lambda v: not v["available"])
    assert await found(loaded, index, Exact("city", "chongqing")) == ids_where(lambda v: "chongqing" in v["city"])


async def test_filters_do_not_change_scores(loaded: Engine, index: str) -> None:
    plain = await loaded.search(index, Term("三体"), limit=ALL)
    filtered = await loaded.search(index, Term("三体"), filters=[Exact("language", "chi")], limit=ALL)
    assert [(h.id, pytest.approx(h.score)) for h in filtered.hits] == [(h.id, h.score) for h in plain.hits]


async def test_range_year(loaded: Engine, index: str) -> None:
    def years(lo: int | None, hi: int | None) -> set[str]:
        return ids_where(lambda v: "year" in v and (lo is None or v["year"] >= lo) and (hi is None or v["year"] <= hi))

    assert await found(loaded, index, Range("year", 2000, 2010)) == years(2000, 2010)
    assert await found(loaded, index, Range("year", gte=2011)) == years(2011, None)
    assert await found(loaded, index, Range("year", lte=1900)) == {"jane", "quijote"}
    assert await found(loaded, index, Range("year", 2008, 2008)) == {"santi", "santi-2"}
    assert await found(loaded, index, Range("year", 2010, 2000)) == set()
    assert await found(loaded, index, Term("三体"), filters=[Range("year", gte=2010)]) == {
        "santi-3",
        "santi-comic",
        "santi-essays",
    }
    assert await found(loaded, index, MatchAll(), filters=[Range("decade", 1980, 1989)]) == years(1980, 1989)


# ------------------------------------------------------------------------------------------- facets


async def test_facet_counts_for_a_filtered_query(loaded: Engine, index: str) -> None:
    facets = [Facet("library"), Facet("language"), Facet("decade"), Facet("available"), Facet("city")]
    result = await loaded.search(index, MatchAll(), filters=[Exact("language", "chi")], facets=facets, limit=0)
    chi = ids_where(lambda v: v["language"] == "chi")
    assert result.total == len(chi)
    assert result.hits == []
    for facet in facets:
        assert result.facets[facet.field] == facet_counts(facet.field, chi), facet.field


async def test_facet_counts_follow_query_and_filters(loaded: Engine, index: str) -> None:
    result = await loaded.search(
        index,
        Or((Term("三体"), Term("红楼梦"), Term("Python"))),
        filters=[Range("year", gte=1980)],
        facets=[Facet("library"), Facet("clc"), Facet("year"), Facet("format")],
    )
    matched = {"santi", "santi-2", "santi-3", "santi-comic", "santi-essays", "hlm", "hlm-study"}
    matched |= {"python-zh", "python-en", "python-fluent"}
    assert result.total == len(matched)
    for name in ("library", "clc", "year", "format"):
        assert result.facets[name] == facet_counts(name, matched), name
    assert result.facets["clc"] == [("I", 7), ("TP", 3)]


async def test_facet_size_cuts_by_count_then_value(loaded: Engine, index: str) -> None:
    result = await loaded.search(index, MatchAll(), facets=[Facet("library", size=2), Facet("decade", size=3)])
    assert result.facets["library"] == facet_counts("library", IDS, size=2)
    assert result.facets["decade"] == facet_counts("decade", IDS, size=3)
    assert result.facets["library"] == [("CD-PL", 14), ("CQ-PL", 14)]  # a tie: by value
    assert result.facets["decade"] == [("2010", 8), ("2000", 6), ("1980", 4)]  # 1980 and 1990 tie: numeric order


# ------------------------------------------------------------------------------------------- sort and paging


@pytest.mark.parametrize("order", [SortOrder.FIELD_ASC, SortOrder.FIELD_DESC])
async def test_sort_by_year(loaded: Engine, index: str, order: SortOrder) -> None:
    sort = Sort(order, "year")
    result = await loaded.search(index, MatchAll(), sort=sort, limit=ALL)
    years = [BY_ID[i].values.get("year") for i in ids(result)]
    assert years[-1] is None  # the record without a year comes last either way
    present = [y for y in years if y is not None]
    assert present == sorted(present, reverse=order is SortOrder.FIELD_DESC)
    again = await loaded.search(index, MatchAll(), sort=sort, limit=ALL)
    assert ids(again) == ids(result)  # stable, ties included
    pages: list[str] = []
    for offset in range(0, len(DOCS), 4):
        page = await loaded.search(index, MatchAll(), sort=sort, offset=offset, limit=4)
        assert page.total == len(DOCS)
        pages += ids(page)
    assert pages == ids(result)
    filtered = await loaded.search(index, Term("三体"), sort=sort, limit=ALL)
    fy = [BY_ID[i].values["year"] for i in ids(filtered)]
    assert fy == sorted(fy, reverse=order is SortOrder.FIELD_DESC)


@pytest.mark.parametrize("query", [MatchAll(), Term("小说", "subjects"), Or((Term("中国"), Term("python")))], ids=repr)
async def test_paging(loaded: Engine, index: str, query: Node) -> None:
    everything = await loaded.search(index, query, limit=ALL)
    assert everything.total == len(everything.hits) > 5
    seen: list[str] = []
    for offset in range(0, everything.total + 3, 3):
        page = await loaded.search(index, query, offset=offset, limit=3)
        assert page.total == everything.total
        assert len(page.hits) == max(0, min(3, everything.total - offset))
        seen += ids(page)
    assert len(seen) == len(set(seen)) == everything.total
    assert set(seen) == set(ids(everything))


async def test_limit_zero_and_offset_past_the_end(loaded: Engine, index: str) -> None:
    result = await loaded.search(index, Term("三体"), limit=0, facets=[Facet("language")])
    assert (result.total, result.hits, result.facets) == (5, [], {"language": [("chi", 5)]})
    result = await loaded.search(index, Term("三体"), offset=50, limit=10)
    assert (result.total, result.hits) == (5, [])


async def test_deep_paging_is_refused(loaded: Engine, index: str) -> None:
    with pytest.raises(QueryError):
        await loaded.search(index, MatchAll(), offset=10_000, limit=1)
    with pytest.raises(QueryError):
        await loaded.search(index, MatchAll(), offset=-1)
    with pytest.raises(QueryError):
        await loaded.search(index, MatchAll(), limit=-1)


# ------------------------------------------------------------------------------------------- writes


async def test_refresh_makes_writes_visible(engine: Engine, index: str) -> None:
    await engine.open(index, SCHEMA)
    await engine.upsert(index, DOCS[:3])
    await engine.refresh(index)
    assert await engine.count(index) == 3
    assert await found(engine, index, Term("红楼梦")) == {d.id for d in DOCS[:3]}
    await engine.upsert(index, [BY_ID["santi"]])
    await engine.refresh(index)
    assert await engine.count(index) == 4
    assert await found(engine, index, Term("三体")) == {"santi"}


async def test_upsert_replaces(loaded: Engine, index: str) -> None:
    changed = Document(
        "santi", {**BY_ID["santi"].values, "title": "三体（典藏版）", "year": 2022, "library": ["CD-PL"]}
    )
    await loaded.upsert(index, [changed])
    await loaded.refresh(index)
    assert await loaded.count(index) == len(DOCS)
    assert await found(loaded, index, Term("典藏")) == {"santi"}
    assert await found(loaded, index, Range("year", 2022, 2022)) == {"santi"}
    assert "santi" not in await found(loaded, index, Exact("library", "CQ-PL"))
    result = await loaded.search(index, Exact("library", "CQ-CQU"), facets=[Facet("library")])
    assert "santi" not in ids(result)


async def test_same_id_twice_keeps_the_last(engine: Engine, index: str) -> None:
    await engine.open(index, SCHEMA)
    first = Document("x", {"title": "第一版", "year": 2001})
    second = Document("x", {"title": "第二版", "year": 2002})
    await engine.upsert(index, [first, second])
    await engine.refresh(index)
    assert await engine.count(index) == 1
    assert await found(engine, index, Term("第二版")) == {"x"}
    assert await found(engine, index, Term("第一版")) == set()
    await engine.upsert(index, [first])
    await engine.upsert(index, [second])
    await engine.upsert(index, [first])
    await engine.refresh(index)
    assert await engine.count(index) == 1
    assert await found(engine, index, Exact("year", 2001)) == {"x"}


async def test_delete(loaded: Engine, index: str) -> None:
    await loaded.delete(index, ["hlm", "santi", "no-such-id"])
    await loaded.refresh(index)
    assert await loaded.count(index) == len(DOCS) - 2
    assert await found(loaded, index, Term("红楼梦")) == {"hlm-trad", "hlm-study"}
    assert await found(loaded, index, Exact("isbn", "9787020002207")) == set()
    result = await loaded.search(index, MatchAll(), facets=[Facet("language")])
    assert result.facets["language"] == facet_counts("language", IDS - {"hlm", "santi"})
    await loaded.delete(index, [])
    await loaded.upsert(index, [BY_ID["hlm"]])  # back again
    await loaded.refresh(index)
    assert await found(loaded, index, Exact("isbn", "9787020002207")) == {"hlm"}


async def test_concurrent_writers(engine: Engine, index: str) -> None:
    await engine.open(index, SCHEMA)
    docs = [Document(f"c{i}", {"title": f"并发 {i}", "year": 1900 + i}) for i in range(200)]
    await asyncio.gather(*(engine.upsert(index, docs[i : i + 10]) for i in range(0, 200, 10)))
    await engine.delete(index, [f"c{i}" for i in range(0, 200, 2)])
    await engine.refresh(index)
    assert await engine.count(index) == 100
    assert await found(engine, index, Range("year", 1900, 1909)) == {f"c{i}" for i in range(1, 10, 2)}


def analysed_ahead(docs: Sequence[Document]) -> dict[tuple[str, str], tuple[str, str]]:
    """``index_strings`` of every TEXT value of ``docs``, as a parse worker computes them ahead of an upsert."""
    out = {}
    for d in docs:
        for f in SCHEMA.fields:
            if f.kind is FieldKind.TEXT:
                for v in as_list(d.values.get(f.name)):
                    out[v, f.analyzer or "text"] = index_strings(v, f.analyzer or "text")
    return out


@pytest.mark.parametrize(
    "query",
    [
        Term("红楼梦"),
        Term("hlm"),
        Term("honglou meng"),
        Term("楼梦"),
        Term("Garcia Marquez"),
        Phrase("红楼梦"),
        Term("曹雪芹", field="author"),
        Term("小说", field="subjects"),
        Or((Term("三体"), Term("Brontë"))),
    ],
)
async def test_values_analysed_ahead_index_alike(loaded: Engine, index: str, query: Node) -> None:
    ahead = index + "-ahead"
    await loaded.open(ahead, SCHEMA)
    await loaded.upsert(ahead, DOCS, analysed=analysed_ahead(DOCS))
    await loaded.refresh(ahead)
    fields = ["title", "author"]
    analysed = await loaded.search(ahead, query, limit=ALL, highlight=fields)
    plain = await loaded.search(index, query, limit=ALL, highlight=fields)
    assert plain.total > 0
    assert [(h.id, h.stored, h.highlights) for h in analysed.hits] == [
        (h.id, h.stored, h.highlights) for h in plain.hits
    ]
    assert [h.score for h in analysed.hits] == pytest.approx([h.score for h in plain.hits])


async def test_values_analysed_ahead_are_taken_as_given(engine: Engine, index: str) -> None:
    """The engine indexes what it is handed for a value (the caller vouches for it) and analyses the others."""
    await engine.open(index, SCHEMA)
    doc = Document("x", {"title": "Alpha", "subjects": ["Beta", "Gamma"], "display": {"t": "Alpha"}})
    await engine.upsert(
        index, [doc], analysed={("Alpha", "name"): ("zzahead", "zzahead"), ("Beta", "name"): ("q", "q")}
    )
    await engine.refresh(index)
    assert await found(engine, index, Term("zzahead")) == {"x"}
    assert await found(engine, index, Term("alpha")) == set()
    assert await found(engine, index, Term("beta")) == {"x"}  # analysed with its own analyzer ("text"): no match
    assert await found(engine, index, Term("gamma", field="subjects")) == {"x"}
    result = await engine.search(index, Term("zzahead"))
    assert result.hits[0].stored == {"display": {"t": "Alpha"}}


async def batches(docs: Sequence[Document], size: int, pause: float = 0.0) -> AsyncIterator[list[Document]]:
    for i in range(0, len(docs), size):
        if pause:
            await asyncio.sleep(pause)
        yield list(docs[i : i + size])


async def test_rebuild_swaps_while_searches_answer(loaded: Engine, index: str) -> None:
    new_docs = [
        Document(d.id, {**d.values, "title": d.values["title"] + " 新版"}) for d in DOCS if d.id not in ("hlm", "cien")
    ] + [Document("new-only", {"title": "新书", "language": "chi", "year": 2024})]
    seen: list[tuple[int, int]] = []
    done = asyncio.Event()

    async def searcher() -> None:
        while not done.is_set():
            result = await loaded.search(index, MatchAll(), facets=[Facet("language")], limit=5)
            seen.append((result.total, await loaded.count(index)))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(searcher())
    await asyncio.sleep(0.02)
    await loaded.rebuild(index, batches(new_docs, 5, pause=0.02))
    await asyncio.sleep(0.02)
    done.set()
    await task
    assert seen[0] == (len(DOCS), len(DOCS))
    assert seen[-1] == (len(new_docs), len(new_docs))
    assert {total for total, _ in seen} <= {len(DOCS), len(new_docs)}  # never empty or half-built
    assert await loaded.count(index) == len(new_docs)
    assert await found(loaded, index, Exact("isbn", "9787020002207")) == set()
    assert await found(loaded, index, Term("新版")) == {d.id for d in new_docs[:-1]}
    assert await found(loaded, index, Term("新书")) == {"new-only"}
    # the rebuilt index takes writes as before
    await loaded.upsert(index, [BY_ID["hlm"]])
    await loaded.refresh(index)
    assert await found(loaded, index, Exact("isbn", "9787020002207")) == {"hlm"}


async def test_rebuild_to_empty_and_failed_rebuild(loaded: Engine, index: str) -> None:
    async def boom() -> AsyncIterator[list[Document]]:
        yield DOCS[:2]
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        await loaded.rebuild(index, boom())
    assert await loaded.count(index) == len(DOCS)  # the old index still serves
    assert await found(loaded, index, MatchAll()) == IDS
    await loaded.rebuild(index, batches([], 10))
    assert await loaded.count(index) == 0


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query": Term("x", "nope")},
        {"query": Phrase("x", "nope")},
        {"query": Exact("nope", "x")},
        {"query": Range("nope", 1, 2)},
        {"query": And((Term("三体"), Not(Exact("nope", "x"))))},
        {"query": MatchAll(), "filters": [Exact("nope", "x")]},
        {"query": MatchAll(), "facets": [Facet("nope")]},
        {"query": MatchAll(), "sort": Sort(SortOrder.FIELD_ASC, "nope")},
        {"query": MatchAll(), "highlight": ["nope"]},
    ],
    ids=repr,
)
async def test_unknown_field_is_a_query_error(loaded: Engine, index: str, kwargs: dict) -> None:
    with pytest.raises(QueryError):
        await loaded.search(index, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query": Range("title", 1, 2)},  # range on text
        {"query": Exact("title", "红楼梦")},  # exact on text
        {"query": Term("CD-PL", "library")},  # terms are for text fields
        {"query": Term("x", "display")},  # stored fields are never searched
        {"query": Range("year", "abc", None)},
        {"query": MatchAll(), "facets": [Facet("title")]},
        {"query": MatchAll(), "sort": Sort(SortOrder.FIELD_DESC, "title")},
        {"query": MatchAll(), "sort": Sort(SortOrder.FIELD_DESC, None)},
        {"query": MatchAll(), "highlight": ["year"]},
    ],
    ids=repr,
)
async def test_wrong_use_of_a_field_is_a_query_error(loaded: Engine, index: str, kwargs: dict) -> None:
    with pytest.raises(QueryError):
        await loaded.search(index, **kwargs)


def _deep(depth: int) -> Node:
    node: Node = Term("三体")
    for i in range(depth):
        node = And((node, MatchAll())) if i % 2 else Or((node, Term("x")))
    return node


ODD: list[Node] = [
    Term("红" * 10_000),
    Term("".join(chr(0x4E00 + random.Random(7).randrange(20_000)) for _ in range(10_000))),
    Term("a" * 10_000),
    Term("红楼梦 " * 2_000),
    Phrase("红楼梦" * 3_000),
    Phrase("a " * 5_000),
    Term("\x00\ud800\uffff\u200b"),
    Term("🙂🙂"),
    Term('*:?"\\()[]{}^~AND OR NOT'),
    Term(""),
    Term("   "),
    Phrase("！！"),
    And(()),
    Or(()),
    Not(MatchAll()),
    Not(Not(Term("三体"))),
    And((Not(Term("三体")), Not(Term("红楼梦")))),
    Or((Not(Term("三体")), Not(Term("红楼梦")))),
    And((MatchAll(), MatchAll())),
    _deep(60),
    _deep(5_000),
    Exact("year", "1982"),
    Exact("year", "x"),
    Exact("year", 10**30),
    Exact("available", "yes"),
    Exact("library", None),
    Exact("library", 42),
    Range("year"),
    Range("year", -(10**30), 10**30),
    Range("year", 1982.5, None),
    Term(None),  # type: ignore[arg-type]
    Term(123),  # type: ignore[arg-type]
    Term("x", 5),  # type: ignore[arg-type]
    And(None),  # type: ignore[arg-type]
    "三体",  # type: ignore[list-item]
    None,  # type: ignore[list-item]
]


def _label(q: object) -> str:
    try:
        return repr(q)[:50]
    except RecursionError:
        return "deep"


@pytest.mark.parametrize("query", ODD, ids=_label)
async def test_odd_queries_raise_only_query_errors(loaded: Engine, index: str, query: Node) -> None:
    try:
        result = await loaded.search(index, query, facets=[Facet("language")], highlight=["title"])
    except QueryError:
        return
    assert result.total >= len(result.hits)
    assert result.total <= len(DOCS)


async def test_odd_filters_raise_only_query_errors(loaded: Engine, index: str) -> None:
    for f in ODD[:25]:
        try:
            result = await loaded.search(index, MatchAll(), filters=[f])
        except QueryError:
            continue
        assert result.total <= len(DOCS)


async def test_empty_and_negative_trees_mean_what_they_say(loaded: Engine, index: str) -> None:
    assert await found(loaded, index, Not(MatchAll())) == set()
    assert await found(loaded, index, Not(Not(Term("三体")))) == await found(loaded, index, Term("三体"))
    assert await found(loaded, index, Or(())) == set()
    assert await found(loaded, index, And(())) == IDS


# ------------------------------------------------------------------------------------------- highlights


async def test_highlight_title(loaded: Engine, index: str) -> None:
    result = await loaded.search(index, Term("红楼梦"), highlight=["title"], limit=ALL)
    marks = {h.id: h.highlights for h in result.hits}
    assert marks["hlm"] == {"title": ["<em>红楼梦</em>"]}
    assert marks["hlm-trad"] == {"title": ["<em>紅樓夢</em>：脂硯齋重評石頭記"]}
    assert marks["hlm-study"] == {"title": ["<em>红楼梦</em>研究"]}


async def test_highlight_kinds(loaded: Engine, index: str) -> None:
    async def marks(query: Node, field: str = "title", doc: str | None = None) -> list[str]:
        result = await loaded.search(index, query, highlight=[field, "author"], limit=ALL)
        hit = next(h for h in result.hits if doc is None or h.id == doc)
        return hit.highlights.get(field, [])

    assert await marks(Term("hlm"), doc="hlm") == ["<em>红楼梦</em>"]
    assert await marks(Term("楼梦"), doc="hlm") == ["红<em>楼梦</em>"]
    assert await marks(Term("Garcia Marquez"), "author") == ["Gabriel <em>García</em> <em>Márquez</em>"]
    assert await marks(Phrase("三体 黑暗")) == ["<em>三体：黑暗</em>森林（插图本）"]
    assert await marks(Term("liucixin"), "author", doc="santi") == ["<em>刘慈欣</em>"]
    assert await marks(Term("Eyre")) == ["Jane <em>Eyre</em>"]
    result = await loaded.search(index, And((Term("三体"), Not(Term("黑暗")))), highlight=["title"], limit=ALL)
    assert {h.id: h.highlights["title"] for h in result.hits} == {
        "santi": ["<em>三体</em>"],
        "santi-3": ["<em>三体</em>Ⅲ 死神永生"],
    }
    result = await loaded.search(index, Exact("isbn", "9787020002207"), highlight=["title"])
    assert result.hits[0].highlights == {}


# ------------------------------------------------------------------------------------------- tantivy only


@pytest.fixture
async def tantivy_root(tmp_path: Path) -> Path:
    return tmp_path / "tantivy-own"


async def test_tantivy_reopens_from_disk(tantivy_root: Path) -> None:
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root)
    await engine.open("books", SCHEMA)
    await engine.upsert("books", DOCS)
    await engine.close()  # close commits
    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        assert await engine.count("books") == len(DOCS)
        assert (await engine.search("books", Term("红楼梦"))).hits[0].id == "hlm"
        await engine.rebuild("books", batches(DOCS[:5], 2))
        versions = [p.name for p in (tantivy_root / "books").iterdir() if p.is_dir()]
        assert len(versions) == 1
        assert (tantivy_root / "books" / "CURRENT").read_text().strip() == versions[0]
    finally:
        await engine.close()
    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        assert await engine.count("books") == 5
        # a changed schema starts an empty version, to be rebuilt
        other = Schema((*SCHEMA.fields, Field("extra", FieldKind.KEYWORD)))
        await engine.close()
        engine = TantivyEngine(tantivy_root)
        await engine.open("books", other)
        assert await engine.count("books") == 0
        with pytest.raises(ValueError):
            await engine.open("books", SCHEMA)
    finally:
        await engine.close()


async def test_tantivy_writes_during_rebuild_are_kept(tantivy_root: Path) -> None:
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        await engine.upsert("books", DOCS)
        await engine.refresh("books")
        gate = asyncio.Event()

        async def source() -> AsyncIterator[list[Document]]:
            yield DOCS[:10]
            await gate.wait()
            yield DOCS[10:]

        rebuild = asyncio.create_task(engine.rebuild("books", source()))
        await asyncio.sleep(0.05)
        late = Document("late", {"title": "重建时写入", "year": 2025})
        changed = Document("hlm", {**BY_ID["hlm"].values, "year": 2025})
        await engine.upsert("books", [late, changed])
        await engine.delete("books", ["santi"])
        await engine.refresh("books")
        assert await found(engine, "books", Range("year", 2025, 2025)) == {"late", "hlm"}  # live index already
        gate.set()
        await rebuild
        assert await engine.count("books") == len(DOCS)  # +late -santi
        assert await found(engine, "books", Range("year", 2025, 2025)) == {"late", "hlm"}
        assert await found(engine, "books", Exact("isbn", "9787536692930")) == set()
    finally:
        await engine.close()


async def test_tantivy_rebuild_writes_one_segment_per_budget(tantivy_root: Path) -> None:
    """Every search visits every segment (terms, then each facet's counts), so a rebuilt index is written by one
    thread into as few segments as its budget allows: at 1M works, seven segments searched 1.65x slower than one."""
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        many = [Document(f"b{i}", {"title": f"第{i}册 volume {i}", "year": 1900 + i % 120}) for i in range(3000)]

        async def source() -> AsyncIterator[list[Document]]:
            for start in range(0, len(many), 500):
                yield many[start : start + 500]

        await engine.rebuild("books", source())
        assert await engine.count("books") == len(many)
        assert engine._state("books").version.searcher.num_segments == 1
    finally:
        await engine.close()


async def test_tantivy_commits_without_refresh(tantivy_root: Path) -> None:
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root, commit_interval=0.05, commit_every=5)
    try:
        await engine.open("books", SCHEMA)
        await engine.upsert("books", DOCS[:2])
        for _ in range(100):
            if await engine.count("books") == 2:
                break
            await asyncio.sleep(0.02)
        assert await engine.count("books") == 2  # the interval commit
        await engine.upsert("books", DOCS[2:10])
        assert await engine.count("books") in (2, 10)
        for _ in range(100):
            if await engine.count("books") == 10:
                break
            await asyncio.sleep(0.02)
        assert await engine.count("books") == 10
    finally:
        await engine.close()


async def test_tantivy_rejects_bad_documents(tantivy_root: Path) -> None:
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        for values in (
            {"nope": 1},
            {"year": "1982"},
            {"year": True},
            {"available": 1},
            {"title": ["a", "b"]},
            {"title": 5},
            {"display": {1, 2}},
            {"display": {"price": float("nan")}},  # stored JSON is strict, as Elasticsearch's
        ):
            with pytest.raises(ValueError):
                await engine.upsert("books", [Document("bad", values)])
        with pytest.raises(ValueError):
            await engine.upsert("books", [Document("", {})])
        with pytest.raises(KeyError):
            await engine.search("unopened", MatchAll())
        with pytest.raises(ValueError):
            await engine.open("../escape", SCHEMA)
        await engine.upsert("books", [Document("ok", {"title": "好", "display": [1, "x", None]})])
        await engine.refresh("books")
        assert (await engine.search("books", Term("好"))).hits[0].stored == {"display": [1, "x", None]}
    finally:
        await engine.close()
    with pytest.raises(RuntimeError):
        await engine.search("books", MatchAll())


async def test_tantivy_keeps_integers_beyond_64_bits_exact(tantivy_root: Path) -> None:
    from search.tantivy_engine import TantivyEngine

    engine = TantivyEngine(tantivy_root)
    try:
        await engine.open("books", SCHEMA)
        display = {"n": 2**64, "m": -(2**63) - 1, "ok": 2**63 - 1, "f": 0.12345678901234567890}
        await engine.upsert("books", [Document("big", {"title": "好", "display": display})])
        await engine.refresh("books")
        assert (await engine.search("books", Term("好"))).hits[0].stored == {"display": display}
    finally:
        await engine.close()


def test_tantivy_marks_a_source_orjson_would_not_read_exactly() -> None:
    from search.tantivy_engine import _source, _source_bytes

    usual = {"display": {"isbns": ["9787020002207"], "year": 1982, "items": 12345678}}
    assert _source_bytes(usual).startswith(b"{")  # read by orjson
    for value in (2**64, -(2**63) - 1, "a barcode of 19 digits: 1234567890123456789"):
        raw = _source_bytes({"display": {"v": value}})
        assert raw.startswith(b"J{") and _source(raw) == {"display": {"v": value}}


def test_tantivy_reads_a_source_written_before_it_was_strict() -> None:
    from search.tantivy_engine import _source

    assert _source(b'{"display":{"price":NaN},"title":["\xe5\xa5\xbd"]}')["title"] == ["好"]
    assert _source(b'{"display":[1,"x",null]}') == {"display": [1, "x", None]}
    assert _source(None) == _source(b"") == {}


async def test_tantivy_keeps_the_event_loop_free(tantivy_root: Path) -> None:
    from search import analysis
    from search.tantivy_engine import TantivyEngine

    analysis.warm()  # as the service does when it starts: the tables' one-time load is not the engine's to hide

    engine = TantivyEngine(tantivy_root)
    docs = [
        Document(f"d{i}", {"title": f"第{i}卷 红楼梦研究文集 {i}", "author": ["俞平伯"], "year": 1900 + i % 100})
        for i in range(3000)
    ]
    gaps: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def ticker() -> None:
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    try:
        await engine.open("books", SCHEMA)
        task = asyncio.create_task(ticker())
        await engine.upsert("books", docs)
        await engine.refresh("books")
        await engine.search("books", Term("红楼梦"), facets=[Facet("year")])
        stop.set()
        await task
        assert await engine.count("books") == 3000
        print(f"longest event-loop stall: {max(gaps) * 1000:.1f} ms")
        assert max(gaps) < 0.25, max(gaps)  # analysis runs in a thread: only GIL switches stall the loop
    finally:
        await engine.close()


def test_corpus_is_sane() -> None:
    assert len(DOCS) == len(IDS) == 30
    for d in DOCS:
        for f in SCHEMA.fields:
            if not f.multi:
                assert not isinstance(d.values.get(f.name), list) or f.kind is FieldKind.STORED
        assert all(isinstance(v, str) for v in as_list(d.values["library"]))


async def test_keyword_analysed_text_keeps_spaces(engine: Engine) -> None:
    from search.engine import Document, Field, FieldKind, Schema
    from search.query import Phrase, Term

    schema = Schema(fields=(Field("code", FieldKind.TEXT, analyzer="keyword", default=True),))
    await engine.open("kw", schema)
    await engine.upsert("kw", [Document("a", {"code": "New York"}), Document("b", {"code": "York"})])
    await engine.refresh("kw")
    assert ids(await engine.search("kw", Term("new york", "code"))) == ["a"]
    assert ids(await engine.search("kw", Phrase("NEW YORK", "code"))) == ["a"]
    assert ids(await engine.search("kw", Term("york", "code"))) == ["b"]
