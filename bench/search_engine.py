"""Index N generated catalogue records into a bare search engine and time a query mix with two facets.

Prints indexing throughput and p50/p90/p99 latency per query kind. The baseline,
measured in the same run, is the cheapest search there is: ``MatchAll`` with
``limit=1`` and no facets, which is the engine's fixed cost per call (thread
hop, result building).

    .venv/bin/python bench/search_engine.py --docs 5000 --queries 400
    .venv/bin/python bench/search_engine.py --engine elasticsearch --url http://localhost:9200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from search.engine import Document, Facet, Field, FieldKind, Schema
from search.query import And, Exact, MatchAll, Node, Phrase, Range, Term

SCHEMA = Schema(
    (
        Field("title", FieldKind.TEXT, analyzer="name", boost=3.0, default=True),
        Field("author", FieldKind.TEXT, analyzer="name", boost=2.0, default=True, multi=True),
        Field("subjects", FieldKind.TEXT, default=True, multi=True),
        Field("isbn", FieldKind.KEYWORD, multi=True),
        Field("library", FieldKind.KEYWORD, multi=True),
        Field("language", FieldKind.KEYWORD),
        Field("year", FieldKind.INTEGER),
        Field("available", FieldKind.BOOLEAN),
        Field("display", FieldKind.STORED),
    )
)

# common characters of book titles, so that bigrams repeat as in a real catalogue
HAN = (
    "的中国学研究史论文化与新编现代理代社会经济发展管理技术工程教育法律哲学艺术医学"
    "红楼梦三体黑暗森林平凡世界活着围城边城重庆成都四川巴蜀川菜历史地图通近古典小说"
    "诗词集选读本全解程序设计入门实践数据结构算法网络安全城市规划交通旅游自然科学"
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红雪芹慈欣平伯华遥文渝勇"
LATIN = [
    "python",
    "data",
    "science",
    "history",
    "novel",
    "city",
    "guide",
    "modern",
    "theory",
    "practice",
    "world",
    "garden",
    "river",
    "mountain",
]
LIBRARIES = [f"CD-{i:02d}" for i in range(30)] + [f"CQ-{i:02d}" for i in range(30)]
LANGUAGES = ["chi"] * 8 + ["eng", "spa", "fre", "jpn"]


def make_docs(n: int, rng: random.Random) -> list[Document]:
    docs = []
    for i in range(n):
        if rng.random() < 0.8:
            title = "".join(rng.choice(HAN) for _ in range(rng.randint(3, 14)))
        else:
            title = " ".join(rng.choice(LATIN) for _ in range(rng.randint(2, 6))).title()
        authors = [
            rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(2)) for _ in range(rng.randint(1, 2))
        ]
        subjects = ["".join(rng.choice(HAN) for _ in range(rng.randint(2, 4))) for _ in range(rng.randint(1, 3))]
        values: dict[str, Any] = {
            "title": title,
            "author": authors,
            "subjects": subjects,
            "isbn": [f"978{rng.randrange(10**10):010d}"],
            "library": rng.sample(LIBRARIES, rng.randint(1, 4)),
            "language": rng.choice(LANGUAGES),
            "year": rng.randint(1950, 2024),
            "available": rng.random() < 0.8,
            "display": {"title": title, "authors": authors},
        }
        docs.append(Document(f"r{i}", values))
    return docs


def query_mix(docs: list[Document], rng: random.Random) -> list[tuple[str, Callable[[], Node], list[Node]]]:
    def bigram() -> str:
        t = rng.choice(docs).values["title"]
        if not any("\u4e00" <= c <= "\u9fff" for c in t) or len(t) < 2:
            return rng.choice(LATIN)
        i = rng.randrange(len(t) - 1)
        return t[i : i + 2]

    def word3() -> str:
        t = rng.choice(docs).values["title"]
        return t[:3] if len(t) >= 3 else t

    def author() -> str:
        return rng.choice(rng.choice(docs).values["author"])[:2]  # surname and one given character

    return [
        ("term (2 chars)", lambda: Term(bigram()), []),
        ("term (3 chars) + library filter", lambda: Term(word3()), [Exact("library", rng.choice(LIBRARIES))]),
        ("two terms", lambda: And((Term(bigram()), Term(bigram()))), []),
        ("phrase", lambda: Phrase(word3()), []),
        ("author term + year range", lambda: Term(author(), "author"), [Range("year", 1990, 2024)]),
        ("pinyin initials", lambda: Term(rng.choice(["hlm", "santi", "cd", "cq", "lishi", "zgs"])), []),
        ("match all + language filter", lambda: MatchAll(), [Exact("language", rng.choice(LANGUAGES))]),
    ]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def batches(docs: list[Document], size: int) -> AsyncIterator[list[Document]]:
    for i in range(0, len(docs), size):
        yield docs[i : i + size]


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    docs = make_docs(args.docs, rng)
    if args.engine == "tantivy":
        from search.tantivy_engine import TantivyEngine

        tmp = tempfile.TemporaryDirectory()
        engine: Any = TantivyEngine(Path(tmp.name))
    else:
        from search.elastic_engine import ElasticEngine

        engine = ElasticEngine(args.url)
    index = "bench"
    try:
        await engine.open(index, SCHEMA)
        t0 = time.perf_counter()
        for i in range(0, len(docs), 500):
            await engine.upsert(index, docs[i : i + 500])
        await engine.refresh(index)
        upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await engine.rebuild(index, batches(docs, 1000))
        rebuild_s = time.perf_counter() - t0
        print(
            f"{args.engine}: {len(docs)} docs; upsert+refresh {upsert_s:.2f} s ({len(docs) / upsert_s:,.0f}/s), "
            f"rebuild {rebuild_s:.2f} s ({len(docs) / rebuild_s:,.0f}/s); count={await engine.count(index)}"
        )
        facets = [Facet("library", 10), Facet("language", 10)]

        async def timed(query: Node, filters: list[Node], with_facets: bool, limit: int = 20) -> tuple[float, int]:
            start = time.perf_counter()
            result = await engine.search(
                index, query, filters=filters, facets=facets if with_facets else (), limit=limit, highlight=["title"]
            )
            return (time.perf_counter() - start) * 1000, result.total

        for _ in range(20):  # warm up
            await timed(MatchAll(), [], True)
        base = [(await timed(MatchAll(), [], False, limit=1))[0] for _ in range(args.queries)]
        print(
            f"{'baseline: match all, limit 1, no facets':45s} "
            f"p50 {pct(base, 0.5):6.2f} ms  p99 {pct(base, 0.99):6.2f} ms"
        )
        everything: list[float] = []
        for name, make, filters in query_mix(docs, rng):
            times, totals = [], []
            for _ in range(args.queries):
                ms, total = await timed(make(), filters, True)
                times.append(ms)
                totals.append(total)
            everything += times
            print(
                f"{name + ' + 2 facets':45s} p50 {pct(times, 0.5):6.2f} ms  p90 {pct(times, 0.9):6.2f} ms  "
                f"p99 {pct(times, 0.99):6.2f} ms  (mean hits {statistics.mean(totals):,.0f})"
            )
        print(
            f"{'all kinds':45s} p50 {pct(everything, 0.5):6.2f} ms  p90 {pct(everything, 0.9):6.2f} ms  "
            f"p99 {pct(everything, 0.99):6.2f} ms"
        )
        # concurrency: the same mix, 8 searches in flight
        mix = query_mix(docs, rng)
        jobs = [rng.choice(mix) for _ in range(args.queries * 2)]
        sem = asyncio.Semaphore(8)

        async def one(job: tuple[str, Callable[[], Node], list[Node]]) -> float:
            async with sem:
                return (await timed(job[1](), job[2], True))[0]

        t0 = time.perf_counter()
        lat = await asyncio.gather(*(one(j) for j in jobs))
        wall = time.perf_counter() - t0
        print(
            f"{'8 in flight, mixed':45s} p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms  "
            f"{len(jobs) / wall:,.0f} searches/s"
        )
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=300, help="searches per query kind")
    parser.add_argument("--engine", choices=["tantivy", "elasticsearch"], default="tantivy")
    parser.add_argument("--url", default="http://localhost:9200")
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
