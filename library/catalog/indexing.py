"""The catalogue's search document: one per work, with every library's records and items folded in."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.members.models import Institution
from library.catalog.models import BibRecordRow, ItemRow, Work
from library.catalog.store import from_json
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
        Field("library", FieldKind.KEYWORD, multi=True),
        Field("city", FieldKind.KEYWORD, multi=True),
        Field("language", FieldKind.KEYWORD, multi=True),
        Field("format", FieldKind.KEYWORD, multi=True),
        Field("clc", FieldKind.KEYWORD, multi=True),
        Field("clc_class", FieldKind.KEYWORD, multi=True),
        Field("available_at", FieldKind.KEYWORD, multi=True),
        Field("available", FieldKind.BOOLEAN),
        Field("year", FieldKind.INTEGER),
        Field("display", FieldKind.STORED),
    )
)

_CLC_CLASS = re.compile(r"^[A-Z]+")


def clc_class(number: str) -> str | None:
    """The top class of a CLC number: I247.5 → I, TP312 → T (the main class is one letter)."""
    m = _CLC_CLASS.match(number.strip().upper())
    return m.group(0)[0] if m else None


def _uniq(values: Iterable[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        if v:
            seen.setdefault(v, None)
    return list(seen)


def build_document(
    work: Work, records: Sequence[BibRecordRow], items: Sequence[Any], cities: dict[str, str]
) -> Document:
    bibs = [from_json(r.data) for r in records if not r.deleted]
    libraries = _uniq([r.library for r in records if not r.deleted] + [i.library for i in items])
    available_at = _uniq(i.library for i in items if i.status == "available")
    titles = _uniq([b.title for b in bibs] + [b.title_vernacular for b in bibs])
    authors = _uniq(n.vernacular or n.name for b in bibs for n in b.names) + _uniq(
        n.name for b in bibs for n in b.names if n.vernacular
    )
    years = [b.year for b in bibs if b.year]
    clc = _uniq(c for b in bibs for c in b.clc)
    display = {
        "title": work.title,
        "authors": authors[:5],
        "year": min(years) if years else work.year,
        "publisher": next((b.publisher for b in bibs if b.publisher), None),
        "isbns": _uniq(i for b in bibs for i in b.isbns)[:5],
        "libraries": libraries,
        "available_at": available_at,
        "items": len(items),
    }
    return Document(
        id=work.id,
        values={
            "title": titles,
            "author": authors,
            "subject": _uniq(s for b in bibs for s in b.subjects),
            "publisher": _uniq(b.publisher for b in bibs),
            "series": _uniq(s for b in bibs for s in b.series),
            "isbn": _uniq(i for b in bibs for i in b.isbns),
            "library": libraries,
            "city": _uniq(cities.get(lib) for lib in libraries),
            "language": _uniq(b.language for b in bibs),
            "format": _uniq(b.format for b in bibs),
            "clc": clc,
            "clc_class": _uniq(clc_class(c) for c in clc),
            "available_at": available_at,
            "available": bool(available_at),
            "year": min(years) if years else work.year,
            "display": display,
        },
    )


async def city_map(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(Institution.code, Institution.city).where(Institution.kind == "library"))
    return {code: city for code, city in rows if city}


async def documents(session: AsyncSession, work_ids: Sequence[str]) -> tuple[list[Document], list[str]]:
    """Documents for these works, and the ids of works that no longer have any record (to delete)."""
    if not work_ids:
        return [], []
    cities = await city_map(session)
    works = {w.id: w for w in (await session.execute(select(Work).where(Work.id.in_(work_ids)))).scalars()}
    records: dict[str, list[BibRecordRow]] = {}
    for r in (await session.execute(select(BibRecordRow).where(BibRecordRow.work_id.in_(work_ids)))).scalars():
        records.setdefault(r.work_id, []).append(r)
    items: dict[str, list[Any]] = {}
    q = select(ItemRow.work_id, ItemRow.library, ItemRow.status).where(ItemRow.work_id.in_(work_ids))
    for row in await session.execute(q):
        items.setdefault(row.work_id, []).append(row)
    docs, gone = [], []
    for wid in work_ids:
        work = works.get(wid)
        live = [r for r in records.get(wid, ()) if not r.deleted]
        if work is None or not live:
            gone.append(wid)
            continue
        docs.append(build_document(work, live, items.get(wid, ()), cities))
    return docs, gone
