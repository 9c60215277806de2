"""Searching the union catalogue: user syntax in, works with holdings and facets out."""

from __future__ import annotations

import dataclasses
from typing import Any

from stdnum import isbn as stdisbn

from federation.services import Services
from library.catalog import indexing
from library.catalog.errors import BadQuery
from search.engine import Facet, QueryError, Result, Sort, SortOrder
from search.parser import ParserConfig, QuerySyntaxError, parse
from search.query import And, Exact, MatchAll, Node, Not, Or, Range, Term

FACETS = ("library", "city", "language", "format", "clc_class", "year", "available")
HIGHLIGHT = ("title", "author")


def normalise_isbn(value: str) -> str:
    """Any valid ISBN-10 or ISBN-13 → ISBN-13; ValueError otherwise (the parser then treats it as text)."""
    try:
        return stdisbn.to_isbn13(stdisbn.validate(value))
    except Exception as e:  # stdnum raises its own ValidationError family
        raise ValueError(str(e)) from None


PARSER = ParserConfig(
    text_fields=frozenset({"title", "author", "subject", "publisher", "series"}),
    exact_fields={
        "isbn": normalise_isbn,
        "library": str.upper,
        "language": str.lower,
        "format": str.lower,
        "clc": str.upper,
        "city": str,
    },
    range_fields={"year": int},
    aliases={
        "ti": "title",
        "au": "author",
        "su": "subject",
        "pub": "publisher",
        "lang": "language",
        "题名": "title",
        "书名": "title",
        "作者": "author",
        "责任者": "author",
        "主题": "subject",
        "出版社": "publisher",
        "丛书": "series",
        "分类": "clc",
        "年": "year",
    },
    max_length=1000,
    max_clauses=64,
)


def rewrite(node: Node) -> Node:
    """Catalogue meaning on top of the generic tree: ISBNs typed as text, CLC top classes."""
    if isinstance(node, Term) and node.field is None:
        try:
            return Or((Exact("isbn", normalise_isbn(node.text)), node))
        except ValueError:
            return node
    if isinstance(node, Exact) and node.field == "clc":
        value = str(node.value)
        if len(value) == 1 and value.isalpha():
            return Exact("clc_class", value)
    if isinstance(node, And):
        return And(tuple(rewrite(n) for n in node.items))
    if isinstance(node, Or):
        return Or(tuple(rewrite(n) for n in node.items))
    if isinstance(node, Not):
        return Not(rewrite(node.item))
    return node


@dataclasses.dataclass(frozen=True)
class SearchRequest:
    q: str = ""
    libraries: tuple[str, ...] = ()
    cities: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    clc_classes: tuple[str, ...] = ()
    year_from: int | None = None
    year_to: int | None = None
    available: bool | None = None
    sort: str = "relevance"  # relevance, year_asc, year_desc
    offset: int = 0
    limit: int = 20
    facets: tuple[str, ...] = FACETS


def _any(field: str, values: tuple[str, ...]) -> Node:
    return Exact(field, values[0]) if len(values) == 1 else Or(tuple(Exact(field, v) for v in values))


def filters_of(req: SearchRequest) -> list[Node]:
    out: list[Node] = []
    for field, values in (
        ("library", tuple(v.upper() for v in req.libraries)),
        ("city", req.cities),
        ("language", tuple(v.lower() for v in req.languages)),
        ("format", tuple(v.lower() for v in req.formats)),
        ("clc_class", tuple(v.upper() for v in req.clc_classes)),
    ):
        if values:
            out.append(_any(field, values))
    if req.year_from is not None or req.year_to is not None:
        out.append(Range("year", req.year_from, req.year_to))
    if req.available and req.libraries:
        # "available now" together with libraries means a copy on the shelf at one of them
        out.append(_any("available_at", tuple(v.upper() for v in req.libraries)))
    elif req.available is not None:
        out.append(Exact("available", req.available))
    return out


async def ensure_index(svc: Services) -> None:
    if not svc.extras.get("catalog.index_open"):
        await svc.search.open(indexing.INDEX, indexing.SCHEMA)
        svc.extras["catalog.index_open"] = True


async def search(svc: Services, req: SearchRequest) -> Result:
    try:
        tree = parse(req.q, PARSER) if req.q.strip() else MatchAll()
    except QuerySyntaxError as e:
        raise BadQuery(f"{e.reason} (at position {e.position})") from None
    tree = rewrite(tree)
    sort = Sort()
    if req.sort == "year_asc":
        sort = Sort(SortOrder.FIELD_ASC, "year")
    elif req.sort == "year_desc":
        sort = Sort(SortOrder.FIELD_DESC, "year")
    await ensure_index(svc)
    try:
        return await svc.search.search(
            indexing.INDEX,
            tree,
            filters=filters_of(req),
            facets=[Facet(f, 50 if f == "year" else 20) for f in req.facets],
            sort=sort,
            offset=req.offset,
            limit=req.limit,
            highlight=HIGHLIGHT if not isinstance(tree, MatchAll) else (),
        )
    except QueryError as e:
        raise BadQuery(str(e)) from None


def hit_view(hit: Any) -> dict[str, Any]:
    display = dict(hit.stored.get("display") or {})
    return {
        "id": hit.id,
        "score": round(hit.score, 4),
        "title": display.get("title"),
        "authors": display.get("authors", []),
        "year": display.get("year"),
        "publisher": display.get("publisher"),
        "isbns": display.get("isbns", []),
        "libraries": display.get("libraries", []),
        "available_at": display.get("available_at", []),
        "highlights": hit.highlights,
    }
