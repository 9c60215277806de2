"""One interface, two engines: tantivy embedded, Elasticsearch at scale. Both pass tests/contract.

A schema names the fields; text fields carry an analyzer name from
:mod:`search.analysis` and are analysed in Python before they reach either
engine, so both engines see the very same tokens and rank alike.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import AsyncIterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias

from search.query import Node


class FieldKind(enum.StrEnum):
    TEXT = "text"  # analysed; searchable by Term and Phrase
    KEYWORD = "keyword"  # exact values (one or many); filterable, facetable
    INTEGER = "integer"  # filterable by Range, sortable, facetable
    BOOLEAN = "boolean"
    STORED = "stored"  # returned with hits, never searched (JSON-serialisable)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: FieldKind
    analyzer: str | None = None  # for TEXT: "text" or "name" (adds pinyin), see search.analysis
    boost: float = 1.0  # for TEXT: weight in free-text queries
    default: bool = False  # for TEXT: searched by a Term without a field
    multi: bool = False  # several values
    # for KEYWORD: how many distinct values most documents have. A hint to the embedded engine, which counts this
    # field's facets fast on that many single-valued columns and the values beyond them apart (see
    # search.tantivy_engine); 0: no such columns. Meant for facets of few distinct values (libraries, cities).
    facet_slots: int = 0


@dataclasses.dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclasses.dataclass(frozen=True)
class Document:
    id: str
    values: dict[str, Any]


# (text, analyzer) → search.analysis.index_strings(text, analyzer): TEXT values analysed ahead of an upsert
Analysed: TypeAlias = Mapping[tuple[str, str], tuple[str, str]]
NOTHING_ANALYSED: Analysed = types.MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Facet:
    field: str
    size: int = 20


class SortOrder(enum.StrEnum):
    RELEVANCE = "relevance"
    FIELD_ASC = "asc"
    FIELD_DESC = "desc"


@dataclasses.dataclass(frozen=True)
class Sort:
    order: SortOrder = SortOrder.RELEVANCE
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class Hit:
    id: str
    score: float
    stored: dict[str, Any]
    highlights: dict[str, list[str]]


@dataclasses.dataclass(frozen=True)
class Result:
    total: int
    hits: list[Hit]
    facets: dict[str, list[tuple[str, int]]]


class QueryError(ValueError):
    """A query the engine cannot run (unknown field, range on a text field, ...)."""


class IndexReadOnly(RuntimeError):
    """A write to an index this process may only read (an embedded index another process writes)."""


class Engine(Protocol):
    async def open(self, index: str, schema: Schema) -> None:
        """Create the index if missing (idempotent)."""

    async def upsert(self, index: str, docs: Sequence[Document], *, analysed: Analysed | None = None) -> None:
        """Add or replace by id; visible after :meth:`refresh`.

        ``analysed``: ``index_strings(text, analyzer)`` of some of the documents' TEXT values, keyed by
        ``(text, analyzer)``, computed ahead (by a parse worker process, say); the engine analyses the others.
        The caller vouches for them: a wrong entry indexes that text wrongly.
        """

    async def delete(self, index: str, ids: Sequence[str]) -> None: ...

    async def refresh(self, index: str) -> None:
        """Make every write so far visible to searches."""

    async def search(
        self,
        index: str,
        query: Node,
        *,
        filters: Sequence[Node] = (),
        facets: Sequence[Facet] = (),
        sort: Sort = Sort(),
        offset: int = 0,
        limit: int = 20,
        highlight: Sequence[str] = (),
    ) -> Result: ...

    async def count(self, index: str) -> int: ...

    async def rebuild(self, index: str, docs: AsyncIterable[Sequence[Document]]) -> None:
        """Replace the whole index with ``docs``; searches keep answering from the old one until the swap."""

    async def close(self) -> None: ...
