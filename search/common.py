"""What both engines enforce alike: limits, document value rules, and the query-tree compiler they share.

The engines differ only in how a leaf query or a boolean is spelled (a tantivy
``Query`` or an Elasticsearch DSL dict); which tokens a Term or Phrase needs,
how And/Or/Not combine, how an Exact or a Range is checked and how many clauses
a query may have are decided here once, so the two cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from search.analysis import analyze_phrase, analyze_query
from search.engine import Facet, Field, FieldKind, QueryError, Schema
from search.query import And, Exact, MatchAll, Node, Not, Or, Phrase, Range, Term

MAX_WINDOW = 10_000
"""Most hits a search may page through (``offset + limit``), as Elasticsearch's default ``max_result_window``."""
MAX_CLAUSES = 4096
"""Most leaf queries (term, phrase, range, ...) one search may compile to."""
MAX_DEPTH = 256
"""Deepest query tree, in nodes."""
MAX_KEYWORD_BYTES = 32766
"""Longest keyword value (UTF-8), as Lucene's term limit."""
I64 = (-(2**63), 2**63 - 1)
MAX_FACET_SLOTS = 8
"""Most single-valued facet columns a KEYWORD field may ask for (``Field.facet_slots``)."""

ANALYZERS = ("text", "name", "keyword")


# ------------------------------------------------------------------------------------------------ schema


def check_schema(schema: Schema, name_ok: Callable[[str], bool], name_rule: str) -> None:
    """Field names the engine can hold (``name_ok``), none reserved or repeated, known analyzers."""
    seen: set[str] = set()
    for f in schema.fields:
        if not isinstance(f.name, str) or f.name.startswith("_") or "__" in f.name:
            raise ValueError(f"field name {f.name!r}: may not start with '_' or contain '__'")
        if not name_ok(f.name):
            raise ValueError(f"field name {f.name!r}: {name_rule}")
        if f.name in seen:
            raise ValueError(f"field {f.name!r} declared twice")
        seen.add(f.name)
        if f.kind is FieldKind.TEXT and (f.analyzer or "text") not in ANALYZERS:
            raise ValueError(f"field {f.name!r}: unknown analyzer {f.analyzer!r}")
        slots = f.facet_slots
        if not isinstance(slots, int) or isinstance(slots, bool) or not 0 <= slots <= MAX_FACET_SLOTS:
            raise ValueError(f"field {f.name!r}: facet_slots must be an integer from 0 to {MAX_FACET_SLOTS}")
        if slots and f.kind is not FieldKind.KEYWORD:
            raise ValueError(f"field {f.name!r}: facet_slots is for KEYWORD fields")


def field_dicts(schema: Schema, *, slots: bool = True) -> list[dict[str, Any]]:
    """The schema's fields as dicts, for an engine to store beside an index and compare with the next opening:
    ``facet_slots`` only where it is set and the engine lays out columns by it (``slots``), so a schema written
    before it existed still matches."""
    out = []
    for f in schema.fields:
        d = dataclasses.asdict(f)
        if not (slots and d["facet_slots"]):
            del d["facet_slots"]
        out.append(d)
    return out


# ------------------------------------------------------------------------------------------------ documents


def check_document_id(doc_id: Any) -> None:
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError(f"document id must be a non-empty string, not {doc_id!r}")


def field_values(f: Field, value: Any) -> list[Any]:
    """The values of one field of a document: a list only for multi-valued fields, ``None`` dropped."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        if not f.multi:
            raise ValueError(f"field {f.name!r} is single-valued, got a list")
        return [v for v in value if v is not None]
    return [value]


def text_value(doc_id: str, f: Field, v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"document {doc_id!r}: field {f.name!r} wants text, got {type(v).__name__}")
    return v


def plain_value(doc_id: str, f: Field, v: Any) -> Any:
    """A KEYWORD, INTEGER or BOOLEAN value as the engine stores it; ``ValueError`` for one that does not fit."""
    if f.kind is FieldKind.KEYWORD:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or len(v.encode()) > MAX_KEYWORD_BYTES:
            raise ValueError(f"document {doc_id!r}: field {f.name!r} wants a string of at most 32766 bytes")
    elif f.kind is FieldKind.INTEGER:
        if not isinstance(v, int) or isinstance(v, bool) or not I64[0] <= v <= I64[1]:
            raise ValueError(f"document {doc_id!r}: field {f.name!r} wants a 64-bit integer, got {v!r}")
    elif not isinstance(v, bool):
        raise ValueError(f"document {doc_id!r}: field {f.name!r} wants a bool, got {v!r}")
    return v


# ------------------------------------------------------------------------------------------------ searches


def check_window(offset: Any, limit: Any) -> None:
    if not isinstance(offset, int) or not isinstance(limit, int) or offset < 0 or limit < 0:
        raise QueryError("offset and limit must be non-negative integers")
    if offset + limit > MAX_WINDOW:
        raise QueryError(f"offset + limit may not exceed {MAX_WINDOW}")


def query_integer(v: Any, field: str, rounding: Callable[[float], int] | None = None) -> int:
    if isinstance(v, bool):
        raise QueryError(f"{field!r} needs an integer, not a bool")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and (rounding is not None or v.is_integer()):
        return int(rounding(v) if rounding is not None else v)
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return int(v.strip())
    raise QueryError(f"{field!r} needs an integer, not {v!r}")


def facet_counts(kind: FieldKind, buckets: Iterable[tuple[Any, int]], size: int) -> list[tuple[str, int]]:
    """An engine's ``(key, count)`` buckets as the contract orders and labels them: count descending, then value
    ascending (numerically for integers), integers as decimal strings, booleans as ``true``/``false``."""
    rows: list[tuple[int, Any, str]] = []
    for key, count in buckets:
        if kind is FieldKind.BOOLEAN:
            rows.append((-int(count), int(bool(key)), "true" if key else "false"))
        elif kind is FieldKind.INTEGER:
            rows.append((-int(count), int(key), str(int(key))))
        else:
            rows.append((-int(count), str(key), str(key)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [(label, -neg) for neg, _, label in rows[:size]]


Q = TypeVar("Q")


class QueryCompiler(Generic[Q]):
    """Our query tree → an engine's query, for one schema; raises :class:`QueryError`.

    Subclasses spell the pieces; this class decides what they are.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.fields = {f.name: f for f in schema.fields}
        self.defaults = [f for f in schema.fields if f.kind is FieldKind.TEXT and f.default]
        self.clauses = 0

    # ---------------------------------------------------------------------------- the engine spells these

    def match_all(self) -> Q:
        raise NotImplementedError

    def match_none(self) -> Q:
        raise NotImplementedError

    def must(self, positive: list[Q], negative: list[Q]) -> Q:
        """Every positive query and none of the negative ones (``positive`` is never empty)."""
        raise NotImplementedError

    def should(self, alternatives: list[Q]) -> Q:
        """At least one of two or more alternatives."""
        raise NotImplementedError

    def terms(self, f: Field, tokens: list[str]) -> Q:
        """Every token in text field ``f``, with the field's boost; counts its leaves with :meth:`leaf`."""
        raise NotImplementedError

    def phrase(self, f: Field, tokens: list[str]) -> Q:
        """The tokens in a row in ``f``'s phrase field, with the field's boost; a phrase of n tokens counts n."""
        raise NotImplementedError

    def equals(self, f: Field, value: Any) -> Q:
        raise NotImplementedError

    def exists(self, f: Field) -> Q:
        raise NotImplementedError

    def between(self, f: Field, lo: int | None, hi: int | None) -> Q:
        """An inclusive integer range with at least one bound."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- shared

    def field(self, name: Any, *kinds: FieldKind, use: str) -> Field:
        f = self.fields.get(name) if isinstance(name, str) else None
        if f is None:
            raise QueryError(f"unknown field {name!r}")
        if kinds and f.kind not in kinds:
            raise QueryError(f"{use} needs a {' or '.join(kinds)} field; {name!r} is {f.kind}")
        return f

    def facet_field(self, facet: Any) -> Field:
        """The field a facet counts; ``QueryError`` for anything but a KEYWORD, INTEGER or BOOLEAN field."""
        if not isinstance(facet, Facet):
            raise QueryError(f"facets must be Facet, not {type(facet).__name__}")
        f = self.field(facet.field, FieldKind.KEYWORD, FieldKind.INTEGER, FieldKind.BOOLEAN, use="facet")
        if not isinstance(facet.size, int) or isinstance(facet.size, bool) or facet.size < 0:
            raise QueryError(f"facet size must be a non-negative integer, not {facet.size!r}")
        return f

    def leaf(self, q: Q, weight: int = 1) -> Q:
        self.clauses += weight
        if self.clauses > MAX_CLAUSES:
            raise QueryError(f"query too large (more than {MAX_CLAUSES} clauses)")
        return q

    def compile(self, node: Node, depth: int = 0) -> Q:
        if depth > MAX_DEPTH:
            raise QueryError(f"query nested too deeply (more than {MAX_DEPTH} levels)")
        if isinstance(node, Term | Phrase):
            return self.text(node)
        if isinstance(node, Exact):
            return self.exact(node)
        if isinstance(node, Range):
            return self.range(node)
        if isinstance(node, MatchAll):
            return self.match_all()
        if isinstance(node, And):
            items = self.items(node)
            positive = [self.compile(i, depth + 1) for i in items if not isinstance(i, Not)]
            negative = [self.compile(i.item, depth + 2) for i in items if isinstance(i, Not)]
            if not negative and len(positive) == 1:
                return positive[0]
            return self.must(positive or [self.match_all()], negative)
        if isinstance(node, Or):
            alternatives = [self.compile(i, depth + 1) for i in self.items(node)]
            if not alternatives:
                return self.match_none()
            return alternatives[0] if len(alternatives) == 1 else self.should(alternatives)
        if isinstance(node, Not):
            return self.must([self.match_all()], [self.compile(node.item, depth + 1)])
        raise QueryError(f"not a query node: {type(node).__name__}")

    @staticmethod
    def items(node: And | Or) -> tuple[Node, ...]:
        if not isinstance(node.items, tuple | list):
            raise QueryError(f"{type(node).__name__}.items must be a tuple of nodes")
        return tuple(node.items)

    def text(self, node: Term | Phrase) -> Q:
        kind = type(node).__name__
        if not isinstance(node.text, str):
            raise QueryError(f"{kind} text must be a string, not {type(node.text).__name__}")
        fields = self.defaults if node.field is None else [self.field(node.field, FieldKind.TEXT, use=kind)]
        alternatives: list[Q] = []
        for f in fields:
            analyzer = f.analyzer or "text"
            if isinstance(node, Term):
                tokens = list(dict.fromkeys(analyze_query(node.text, analyzer)))
                if tokens:
                    alternatives.append(self.terms(f, tokens))
            else:
                tokens = analyze_phrase(node.text, analyzer)
                if tokens:
                    alternatives.append(self.phrase(f, tokens))
        if not alternatives:
            return self.match_none()
        return alternatives[0] if len(alternatives) == 1 else self.should(alternatives)

    def exact(self, node: Exact) -> Q:
        f = self.field(node.field, FieldKind.KEYWORD, FieldKind.INTEGER, FieldKind.BOOLEAN, use="Exact")
        v = node.value
        if f.kind is FieldKind.KEYWORD:
            if isinstance(v, int) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                raise QueryError(f"Exact on {f.name!r} needs a string, not {type(v).__name__}")
        elif f.kind is FieldKind.INTEGER:
            v = query_integer(v, f.name)
            if not I64[0] <= v <= I64[1]:
                return self.leaf(self.match_none())
        elif not isinstance(v, bool):
            raise QueryError(f"Exact on {f.name!r} needs a bool, not {type(v).__name__}")
        return self.leaf(self.equals(f, v))

    def range(self, node: Range) -> Q:
        f = self.field(node.field, FieldKind.INTEGER, use="Range")
        lo = None if node.gte is None else query_integer(node.gte, f.name, math.ceil)
        hi = None if node.lte is None else query_integer(node.lte, f.name, math.floor)
        if (
            (lo is not None and lo > I64[1])
            or (hi is not None and hi < I64[0])
            or (lo is not None and hi is not None and lo > hi)
        ):
            return self.leaf(self.match_none())
        lo = None if lo is None or lo <= I64[0] else lo
        hi = None if hi is None or hi >= I64[1] else hi
        if lo is None and hi is None:
            return self.leaf(self.exists(f))
        return self.leaf(self.between(f, lo, hi))
