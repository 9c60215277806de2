"""The catalogue's search document: one per work, with every library's records and items folded in."""

from __future__ import annotations

import functools
import re
import types
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.members.models import Institution
from library.catalog.models import BibRecordRow, ItemRow, Work
from library.catalog.records import BibRecord
from library.catalog.store import BatchResult, from_json
from search.analysis import index_strings
from search.engine import Document, Field, FieldKind, Schema

INDEX = "catalog"

SCHEMA = Schema(
    fields=(
        Field("title", FieldKind.TEXT, analyzer="name", boost=3.0, default=True, multi=True),
        Field("author", FieldKind.TEXT, analyzer="name", boost=2.0, default=True, multi=True),
        Field("subject", FieldKind.TEXT, analyzer="text", boost=1.0, default=True, multi=True),
        Field("publisher", FieldKind.TEXT, analyzer="text", boost=0.5, multi=True),
        Field("series", FieldKind.TEXT, analyzer="text", boost=0.5, default=True, multi=True),
        Field("isbn", FieldKind.KEYWORD, multi=True),
        # the search page's facets, with facet slots for as many values as most works have (one library or two,
        # one language, ...; the federation has two cities): the embedded engine counts them several times faster
        Field("library", FieldKind.KEYWORD, multi=True, facet_slots=2),
        Field("city", FieldKind.KEYWORD, multi=True, facet_slots=2),
        Field("language", FieldKind.KEYWORD, multi=True, facet_slots=1),
        Field("format", FieldKind.KEYWORD, multi=True, facet_slots=1),
        Field("clc", FieldKind.KEYWORD, multi=True),
        Field("clc_class", FieldKind.KEYWORD, multi=True, facet_slots=1),
        Field("available_at", FieldKind.KEYWORD, multi=True),
        Field("available", FieldKind.BOOLEAN),
        Field("year", FieldKind.INTEGER),
        Field("display", FieldKind.STORED),
    )
)

_CLC_CLASS = re.compile(r"^[A-Z]+")
_READ_CHUNK = 5000  # record ids per read-back query


class _ParsedRecords:
    """The records this process decoded last, by (record id, content hash): the hash is of the stored data itself
    (``store.content_hash``), so a hit is the record as stored now. A copy lent and returned rebuilds its work's
    document without reading and decoding its records' data again; a changed record has a new hash, and misses."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str], BibRecord] = OrderedDict()

    def get(self, key: tuple[str, str]) -> BibRecord | None:
        bib = self._entries.get(key)
        if bib is not None:
            self._entries.move_to_end(key)
        return bib

    def put(self, key: tuple[str, str], bib: BibRecord) -> None:
        self._entries[key] = bib
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


# a few thousand works' records: the circulating part of a collection, at a few kB each
PARSED = _ParsedRecords(8192)


def clc_class(number: str) -> str | None:
    """The top class of a CLC number: I247.5 → I, TP312 → T (the main class is one letter)."""
    m = _CLC_CLASS.match(number.strip().upper())
    return m.group(0)[0] if m else None


def _uniq(values: list[str | None]) -> list[str]:
    """The distinct non-empty values, in order of first appearance."""
    return [v for v in dict.fromkeys(values) if v]


@functools.lru_cache(maxsize=4096)
def _clc_class(number: str) -> str | None:
    return clc_class(number)


_ANALYZERS = {f.name: f.analyzer or "text" for f in SCHEMA.fields if f.kind is FieldKind.TEXT}


def analysed(bib: BibRecord) -> dict[tuple[str, str], tuple[str, str]]:
    """The search analysis of every text ``bib`` brings to its work's document (``build_document``), keyed as
    an engine's ``upsert(..., analysed=...)`` takes it. A parse worker computes it beside parsing, on its own
    core, so the loading process does not."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    names = bib.names
    for field, values in (
        ("title", (bib.title, bib.title_vernacular)),
        ("author", [n.vernacular or n.name for n in names] + [n.name for n in names if n.vernacular]),
        ("subject", bib.subjects),
        ("publisher", (bib.publisher,)),
        ("series", bib.series),
    ):
        analyzer = _ANALYZERS[field]
        for v in values:
            if v:
                out[v, analyzer] = index_strings(v, analyzer)
    return out


def build_document(
    work: Any,
    records: Sequence[Any],
    items: Sequence[Any],
    cities: dict[str, str],
    bibs: Sequence[BibRecord] | None = None,
) -> Document:
    """The document of ``work`` (``id``, ``title``, ``year``) from its records (``library``, ``deleted``, ``data``)
    and items (``library``, ``status``); ``bibs``: the live records already parsed, in the order of ``records``."""
    if bibs is None:
        bibs = [from_json(r.data) for r in records if not r.deleted]
    libraries = _uniq([r.library for r in records if not r.deleted] + [i.library for i in items])
    available_at = _uniq([i.library for i in items if i.status == "available"])
    titles = _uniq([b.title for b in bibs] + [b.title_vernacular for b in bibs])
    names = [n for b in bibs for n in b.names]
    authors = _uniq([n.vernacular or n.name for n in names]) + _uniq([n.name for n in names if n.vernacular])
    years = [b.year for b in bibs if b.year]
    clc = _uniq([c for b in bibs for c in b.clc])
    isbns = _uniq([i for b in bibs for i in b.isbns])
    year = min(years) if years else work.year
    publishers = _uniq([b.publisher for b in bibs])
    display = {
        "title": work.title,
        "authors": authors[:5],
        "year": year,
        "publisher": publishers[0] if publishers else None,
        "isbns": isbns[:5],
        "libraries": libraries,
        "available_at": available_at,
        "items": len(items),
    }
    return Document(
        id=work.id,
        values={
            "title": titles,
            "author": authors,
            "subject": _uniq([s for b in bibs for s in b.subjects]),
            "publisher": publishers,
            "series": _uniq([s for b in bibs for s in b.series]),
            "isbn": isbns,
            "library": libraries,
            "city": _uniq([cities.get(lib) for lib in libraries]),
            "language": _uniq([b.language for b in bibs]),
            "format": _uniq([b.format for b in bibs]),
            "clc": clc,
            "clc_class": _uniq([_clc_class(c) for c in clc]),
            "available_at": available_at,
            "available": bool(available_at),
            "year": year,
            "display": display,
        },
    )


async def city_map(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(Institution.code, Institution.city).where(Institution.kind == "library"))
    return {code: city for code, city in rows if city}


async def documents(
    session: AsyncSession, work_ids: Sequence[str], batch: BatchResult | None = None
) -> tuple[list[Document], list[str]]:
    """Documents for these works, and the ids of works that no longer have any record (to delete).

    ``batch``: the ``store_batch`` result these works come from. A work the batch created is built from it
    alone (all its records and items are the batch's); for the others only the records the batch did not
    write are read back and decoded. Plain column reads, no ORM objects: this runs for every batch of a load.
    """
    if not work_ids:
        return [], []
    cities = await city_map(session)
    docs, gone = [], []
    created = batch.created if batch is not None else {}
    if batch is not None and created:
        docs, gone = _created_documents(batch, [w for w in work_ids if w in created], cities)
        work_ids = [w for w in work_ids if w not in created]
        if not work_ids:
            return docs, gone
    known = batch.records if batch is not None else {}
    q = select(Work.id, Work.title, Work.year).where(Work.id.in_(work_ids))
    works = {w.id: w for w in await session.execute(q)}
    records: dict[str, list[Any]] = {}
    missing: list[str] = []  # the records to read and decode
    parsed: dict[str, BibRecord] = dict(known)
    q = select(
        BibRecordRow.id, BibRecordRow.work_id, BibRecordRow.library, BibRecordRow.deleted, BibRecordRow.content_hash
    ).where(BibRecordRow.work_id.in_(work_ids))
    for r in await session.execute(q):
        if not r.deleted:
            records.setdefault(r.work_id, []).append(r)
            if r.id not in known:
                bib = PARSED.get((r.id, r.content_hash))
                if bib is None:
                    missing.append(r.id)
                else:
                    parsed[r.id] = bib
    for i in range(0, len(missing), _READ_CHUNK):
        chunk = missing[i : i + _READ_CHUNK]
        q = select(BibRecordRow.id, BibRecordRow.content_hash, BibRecordRow.data).where(BibRecordRow.id.in_(chunk))
        for rid, digest, data in await session.execute(q):
            bib = parsed[rid] = from_json(data)
            PARSED.put((rid, digest), bib)  # keyed by the hash read with the data: the pair is always true
    items: dict[str, list[Any]] = {}
    q = select(ItemRow.work_id, ItemRow.library, ItemRow.status).where(ItemRow.work_id.in_(work_ids))
    for row in await session.execute(q):
        items.setdefault(row.work_id, []).append(row)
    for wid in work_ids:
        work = works.get(wid)
        live = records.get(wid)
        if work is None or not live:
            gone.append(wid)
            continue
        docs.append(build_document(work, live, items.get(wid, ()), cities, [parsed[r.id] for r in live]))
    return docs, gone


def _created_documents(
    batch: BatchResult, work_ids: list[str], cities: dict[str, str]
) -> tuple[list[Document], list[str]]:
    """Documents of works a batch created, from the batch: the same as reading them back (records in the order
    they were inserted)."""
    wanted = set(work_ids)
    live: dict[str, list[BibRecord]] = {}
    for rid, wid in batch.placed.items():
        if wid in wanted:
            bib = batch.records[rid]
            if not bib.deleted:
                live.setdefault(wid, []).append(bib)
    docs, gone = [], []
    for wid in work_ids:
        bibs = live.get(wid)
        if not bibs:
            gone.append(wid)
            continue
        title, year = batch.created[wid]
        work = _Row(id=wid, title=title, year=year)
        records = [_Row(library=batch.library, deleted=False)] * len(bibs)
        items = [_Row(library=lib, status=status) for lib, status in batch.created_items.get(wid, ())]
        docs.append(build_document(work, records, items, cities, bibs))
    return docs, gone


_Row = types.SimpleNamespace
