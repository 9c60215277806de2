"""The Elasticsearch engine: the :class:`~search.engine.Engine` interface over ``AsyncElasticsearch``.

Documents are analysed in Python (:mod:`search.analysis`) exactly as for the
tantivy engine (:mod:`search.tantivy_engine`), whose semantics this module
mirrors point by point; Elasticsearch only splits the ready-made tokens again.
Both pass ``tests/contract``.

Indices
=======

A logical index ``name`` is an alias over one physical index ``name-v<N>``.
:meth:`ElasticEngine.open` creates ``name-v1`` together with the alias (one
call). Opening an index whose stored schema (the mapping's ``_meta``) differs
from the one given starts a new, empty version with the new schema, as the
tantivy engine does, and logs a warning: the caller rebuilds it.

:meth:`ElasticEngine.rebuild` creates ``name-v<N+1>`` (refresh off while it
loads), bulk-loads it, refreshes it, then moves the alias with one atomic
``_aliases`` call (remove old + add new) and deletes the old index. Searches
answer from the old index until that call and from the new one after it; they
never see a missing or half-built index. A failed load deletes the half-built
index and leaves the alias alone; a leftover of a rebuild that died is
deleted by the next rebuild. Writes made through this engine while a rebuild
runs go to the live index *and* to a journal; just before the swap the journal
is replayed onto the new index (writes wait for the few milliseconds of
replay + swap), so a write made during a rebuild is never lost and wins over
the rebuilt document. (Writes from *other* processes during a rebuild are not
journaled.)

Mapping
=======

For a TEXT field ``f`` with analyzer ``a`` (each value of a multi-valued field
is one array element):

* ``f``: ``" ".join(analyze(v, a))``, a ``text`` field whose analyzer is the
  ``whitespace`` tokenizer alone (no lowercasing: the tokens are final). It
  serves :class:`~search.query.Term` and BM25 scoring, like tantivy's term field.
* ``f__phrase``: ``" ".join(phrase_stream(v, a))``, the positional field for
  :class:`~search.query.Phrase` (``match_phrase``). Token *i* of a value is at
  position *i*; ``position_increment_gap`` keeps a phrase from running from one
  value into the next.

Normalised text never has whitespace inside a token (``normalise`` collapses
every whitespace run to one space and the analyzers split on it), so the
whitespace tokenizer gives back exactly the Python tokens. The exception is
the ``keyword`` analyzer, whose single token is the whole value (``"new
york"``): such fields use the ``keyword`` tokenizer instead, one token per
value.

KEYWORD is ``keyword``, INTEGER is ``long``, BOOLEAN is ``boolean``. The
original TEXT and STORED values go into ``__doc``, an object with
``enabled: false`` (kept in ``_source``, never indexed): ``Hit.stored`` (the
STORED fields) is read from it, and highlights are cut from the original text
by :func:`search.highlight.highlight`, as in the tantivy engine.

Queries
=======

The same tree compiles to the same boolean structure as in tantivy:

* ``Term(text, f)``: a ``bool.must`` of ``term`` queries on ``f``, one per
  distinct ``analyze_query`` token. ``Term(text)``: that, per default TEXT
  field, boosted by the field's boost, in a ``bool.should``. No token: nothing.
* ``Phrase``: ``match_phrase`` on ``f__phrase`` (a ``term`` for one token),
  the same ``should`` over the default fields.
* ``Exact``: ``term`` on a KEYWORD, INTEGER or BOOLEAN field; ``Range``: an
  inclusive ``range`` on an INTEGER field (no bounds: ``exists``).
* ``And``/``Or``/``Not``: ``bool`` ``must``/``should``/``must_not``; a purely
  negative group is taken from all documents; ``And(())`` matches everything,
  ``Or(())`` nothing. Filters are ``bool.filter`` clauses: they never score.

Unknown fields, fields used the wrong way, values of the wrong type, more than
:data:`MAX_CLAUSES` leaves, nesting deeper than :data:`MAX_DEPTH`, a negative
offset or limit, or ``offset + limit`` over :data:`MAX_WINDOW` raise
:class:`~search.engine.QueryError`, and so does a query the server refuses.
Sorting is by score or by a single-valued INTEGER field (missing values last;
hits then have score 0); facets are ``terms`` aggregations ordered by count
descending, then value ascending. ``total`` is exact (``track_total_hits``).

Scores are BM25 in both engines but not equal: Lucene dropped BM25's constant
``(k1 + 1)`` factor and computes the average field length over the documents
that have the field, so only the order of hits is comparable.

The compatibility media type
============================

The 9.x client sends ``application/vnd.elasticsearch+json; compatible-with=9``
(and the ``x-ndjson`` form for bulk) unconditionally. OpenSearch-compatible
servers such as the ``osmem-server`` used by the tests refuse it with 406.
``ElasticEngine(url, compatibility_headers=False)`` builds the client with
``node_class=PlainMediaTypeNode``: the ``elastic_transport`` aiohttp node, but
sending the plain ``application/json`` / ``application/x-ndjson``, which
Elasticsearch accepts as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from elastic_transport import AiohttpHttpNode, HttpHeaders
from elastic_transport.client_utils import DEFAULT, DefaultType
from elasticsearch import AsyncElasticsearch, BadRequestError, NotFoundError
from elasticsearch.helpers import async_streaming_bulk

from search.analysis import index_strings
from search.common import (
    MAX_CLAUSES,
    MAX_DEPTH,
    MAX_WINDOW,
    QueryCompiler,
    check_document_id,
    check_schema,
    check_window,
    facet_counts,
    field_dicts,
    field_values,
    plain_value,
    text_value,
)
from search.engine import (
    NOTHING_ANALYSED,
    Analysed,
    Document,
    Facet,
    Field,
    FieldKind,
    Hit,
    QueryError,
    Result,
    Schema,
    Sort,
    SortOrder,
)
from search.highlight import highlight as highlight_values
from search.query import Node

if TYPE_CHECKING:
    from elastic_transport._node import NodeApiResponse

__all__ = ["MAX_CLAUSES", "MAX_DEPTH", "MAX_WINDOW", "ElasticEngine", "IndexingError", "PlainMediaTypeNode"]

log = logging.getLogger(__name__)

PHRASE_SUFFIX = "__phrase"
DOC_FIELD = "__doc"
TOKENS_ANALYZER = "twincity_tokens"  # the whitespace tokenizer, nothing else
KEYWORD_ANALYZER = "twincity_keyword"  # the whole value is one token
POSITION_GAP = 100  # between the values of a multi-valued phrase field
BULK_CHUNK = 500  # documents per bulk request
THREAD_BATCH = 32  # more documents than this are analysed off the event loop

_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_FIELD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_COMPAT_RE = re.compile(r"application/vnd\.elasticsearch\+([\w.+-]+)\s*(?:;\s*compatible-with=\d+)?")
_MATCH_NONE: dict[str, Any] = {"match_none": {}}
_MATCH_ALL: dict[str, Any] = {"match_all": {}}


class PlainMediaTypeNode(AiohttpHttpNode):
    """The aiohttp node, sending ``application/json`` where the 9.x client asks for the compatibility media type.

    ``AsyncElasticsearch(url, node_class=PlainMediaTypeNode)`` talks to servers that refuse
    ``application/vnd.elasticsearch+json; compatible-with=9`` (OpenSearch and its in-memory test double).
    """

    async def perform_request(  # type: ignore[override]
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if headers:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value:
                    headers[name] = _COMPAT_RE.sub(r"application/\1", value)
        return await super().perform_request(
            method, target, body=body, headers=headers, request_timeout=request_timeout
        )


class IndexingError(RuntimeError):
    """The server refused some documents of a bulk request; ``failures`` maps each document id to the reason."""

    def __init__(self, index: str, failures: Mapping[str, str]) -> None:
        self.index = index
        self.failures = dict(failures)
        shown = ", ".join(f"{i!r}: {r}" for i, r in list(self.failures.items())[:10])
        more = f" and {len(self.failures) - 10} more" if len(self.failures) > 10 else ""
        super().__init__(f"{len(self.failures)} document(s) refused by {index!r}: {shown}{more}")


# ------------------------------------------------------------------------------------------------ schema


def _schema_json(schema: Schema) -> str:
    # facet_slots lays out columns of the embedded engine only: here it changes nothing
    return json.dumps(field_dicts(schema, slots=False), sort_keys=True, ensure_ascii=False)


def _check_schema(schema: Schema) -> None:
    check_schema(schema, lambda name: bool(_FIELD_NAME.match(name)), "letters, digits, '_' and '-' only")


def _source(fields: Mapping[str, Field], doc: Document, analysed: Analysed = NOTHING_ANALYSED) -> dict[str, Any]:
    """The ``_source`` for ``doc`` (analysis included, but for the values ``analysed`` holds); ``ValueError`` for
    a document that does not fit."""
    check_document_id(doc.id)
    if len(doc.id.encode()) > 512:
        raise ValueError(f"document id {doc.id[:40]!r}...: at most 512 bytes")
    src: dict[str, Any] = {}
    originals: dict[str, Any] = {}
    for name, value in doc.values.items():
        f = fields.get(name)
        if f is None:
            raise ValueError(f"document {doc.id!r}: unknown field {name!r}")
        if f.kind is FieldKind.STORED:
            if value is not None:
                originals[name] = value
            continue
        values = field_values(f, value)
        if not values:
            continue
        out: list[Any] = []
        if f.kind is FieldKind.TEXT:
            analyzer = f.analyzer or "text"
            phrases: list[str] = []
            for v in values:
                key = (text_value(doc.id, f, v), analyzer)
                terms, stream = analysed.get(key) or index_strings(*key)
                out.append(terms)
                phrases.append(stream)
            src[name + PHRASE_SUFFIX] = phrases
            originals[name] = value
        else:
            out = [plain_value(doc.id, f, v) for v in values]
        src[name] = out
    try:
        json.dumps(originals, ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as e:  # UnicodeEncodeError (a lone surrogate) is a ValueError
        raise ValueError(f"document {doc.id!r}: stored values are not JSON: {e}") from None
    src[DOC_FIELD] = originals
    return src


# ------------------------------------------------------------------------------------------------ queries


class _Compiler(QueryCompiler[dict[str, Any]]):
    """Our query tree → Query DSL (what each node means is decided in :mod:`search.common`)."""

    def match_all(self) -> dict[str, Any]:
        return _MATCH_ALL

    def match_none(self) -> dict[str, Any]:
        return _MATCH_NONE

    def must(self, positive: list[dict[str, Any]], negative: list[dict[str, Any]]) -> dict[str, Any]:
        return {"bool": {"must": positive, "must_not": negative}}

    def should(self, alternatives: list[dict[str, Any]]) -> dict[str, Any]:
        return {"bool": {"should": alternatives, "minimum_should_match": 1}}

    # the boost goes into the query itself, not a wrapping bool: Elasticsearch limits bool nesting

    def terms(self, f: Field, tokens: list[str]) -> dict[str, Any]:
        boost = {"boost": float(f.boost)} if f.boost != 1.0 else {}
        if len(tokens) == 1:
            return self.leaf({"term": {f.name: {"value": tokens[0], **boost}}})
        terms = [self.leaf({"term": {f.name: {"value": t}}}) for t in tokens]
        return {"bool": {"must": terms, **boost}}

    def phrase(self, f: Field, tokens: list[str]) -> dict[str, Any]:
        boost = {"boost": float(f.boost)} if f.boost != 1.0 else {}
        name = f.name + PHRASE_SUFFIX
        if len(tokens) == 1:
            return self.leaf({"term": {name: {"value": tokens[0], **boost}}})
        return self.leaf({"match_phrase": {name: {"query": " ".join(tokens), **boost}}}, len(tokens))

    def equals(self, f: Field, value: Any) -> dict[str, Any]:
        return {"term": {f.name: {"value": value}}}

    def exists(self, f: Field) -> dict[str, Any]:
        return {"exists": {"field": f.name}}

    def between(self, f: Field, lo: int | None, hi: int | None) -> dict[str, Any]:
        return {"range": {f.name: {k: v for k, v in (("gte", lo), ("lte", hi)) if v is not None}}}


# ------------------------------------------------------------------------------------------------ state


class _Gate:
    """Many writers at once, or the one swap of a rebuild alone."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._writers = 0
        self._closed = False

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._closed)
            self._writers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._writers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._closed)
            self._closed = True
            await self._cond.wait_for(lambda: self._writers == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._closed = False
                self._cond.notify_all()


@dataclasses.dataclass(eq=False)
class _Index:
    name: str
    schema: Schema
    schema_json: str
    fields: dict[str, Field]
    gate: _Gate = dataclasses.field(default_factory=_Gate)
    rebuild_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    journal: list[list[dict[str, Any]]] | None = None  # bulk actions made while a rebuild runs


# ------------------------------------------------------------------------------------------------ engine


class ElasticEngine:
    """The :class:`~search.engine.Engine` on Elasticsearch (or an OpenSearch-compatible server); see the module doc.

    ``es`` is a URL or a ready ``AsyncElasticsearch``; :meth:`close` closes it either way. With a URL,
    ``compatibility_headers=False`` sends plain JSON media types (see the module doc), and ``client_options``
    go to ``AsyncElasticsearch``. ``shards``/``replicas`` are the settings of every physical index
    (``replicas=None``: the server's default). With more than one shard, searches use ``dfs_query_then_fetch``
    so that scores use index-wide term statistics, as tantivy's do.
    """

    def __init__(
        self,
        es: str | AsyncElasticsearch,
        *,
        compatibility_headers: bool = True,
        shards: int = 1,
        replicas: int | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(es, str):
            options = dict(client_options or {})
            if not compatibility_headers:
                options.setdefault("node_class", PlainMediaTypeNode)
            self.es = AsyncElasticsearch(es, **options)
        else:
            self.es = es
        self._shards = shards
        self._replicas = replicas
        self._indexes: dict[str, _Index] = {}
        self._open_lock: asyncio.Lock | None = None
        self._closed = False

    # -------------------------------------------------------------------------------------- helpers

    def _state(self, index: str) -> _Index:
        if self._closed:
            raise RuntimeError("engine is closed")
        st = self._indexes.get(index)
        if st is None:
            raise KeyError(f"index {index!r} is not open")
        return st

    def _body(self, schema: Schema, schema_json: str, *, loading: bool = False) -> dict[str, Any]:
        """Settings and mappings of a physical index for ``schema``."""
        properties: dict[str, Any] = {DOC_FIELD: {"type": "object", "enabled": False}}
        for f in schema.fields:
            if f.kind is FieldKind.TEXT:
                analyzer = KEYWORD_ANALYZER if f.analyzer == "keyword" else TOKENS_ANALYZER
                properties[f.name] = {"type": "text", "analyzer": analyzer, "index_options": "freqs"}
                properties[f.name + PHRASE_SUFFIX] = {
                    "type": "text",
                    "analyzer": analyzer,
                    "position_increment_gap": POSITION_GAP,
                }
            elif f.kind is FieldKind.KEYWORD:
                properties[f.name] = {"type": "keyword"}
            elif f.kind is FieldKind.INTEGER:
                properties[f.name] = {"type": "long"}
            elif f.kind is FieldKind.BOOLEAN:
                properties[f.name] = {"type": "boolean"}
        settings: dict[str, Any] = {"number_of_shards": self._shards}
        if self._replicas is not None:
            settings["number_of_replicas"] = self._replicas
        if loading:
            settings["refresh_interval"] = "-1"
        return {
            "settings": {
                "index": settings,
                "analysis": {
                    "tokenizer": {"twincity_whitespace": {"type": "whitespace", "max_token_length": 1024 * 1024}},
                    "analyzer": {
                        TOKENS_ANALYZER: {"type": "custom", "tokenizer": "twincity_whitespace"},
                        KEYWORD_ANALYZER: {"type": "custom", "tokenizer": "keyword"},
                    },
                },
            },
            "mappings": {"dynamic": "strict", "_meta": {"twincity_schema": schema_json}, "properties": properties},
        }

    async def _versions(self, index: str) -> dict[int, str]:
        """The physical indices ``index-v<N>`` that exist, by N."""
        pattern = re.compile(re.escape(index) + r"-v(\d+)")
        found = await self.es.indices.get(index=f"{index}-v*", expand_wildcards="open,closed", allow_no_indices=True)
        return {int(m.group(1)): name for name in found if (m := pattern.fullmatch(name))}

    async def _current(self, index: str) -> str | None:
        """The physical index behind the alias ``index``, or None."""
        try:
            found = await self.es.indices.get_alias(name=index)
        except NotFoundError:
            return None
        names = sorted(found)
        if len(names) != 1:
            raise RuntimeError(f"alias {index!r} points at {names}; expected exactly one index")
        return names[0]

    async def _create(self, index: str, st: _Index, *, loading: bool = False, alias: bool = False) -> str:
        """Create the next version ``index-v<N+1>``; with ``alias``, together with the alias (first open).

        Otherwise versions that the alias does not name first go: leftovers of a rebuild that died half-way.
        """
        current = await self._current(index)
        versions = await self._versions(index)
        if not alias:
            for name in versions.values():
                if name != current:
                    await self.es.indices.delete(index=name, ignore_unavailable=True)
        name = f"{index}-v{max(versions, default=0) + 1}"
        body = self._body(st.schema, st.schema_json, loading=loading)
        await self.es.indices.create(index=name, aliases={index: {}} if alias else None, **body)
        return name

    async def _swap(self, index: str, old: str | None, new: str) -> None:
        """Point the alias at ``new`` in one atomic call, then delete ``old``."""
        actions: list[dict[str, Any]] = [{"add": {"index": new, "alias": index}}]
        if old is not None:
            actions.insert(0, {"remove": {"index": old, "alias": index}})
        await self.es.indices.update_aliases(actions=actions)
        if old is not None:
            await self.es.indices.delete(index=old, ignore_unavailable=True)

    # -------------------------------------------------------------------------------------- open / close

    async def open(self, index: str, schema: Schema) -> None:
        if not isinstance(index, str) or not _INDEX_NAME.match(index):
            raise ValueError(f"index name {index!r}: lower-case letters, digits, '-' and '_' only")
        _check_schema(schema)
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._closed:
                raise RuntimeError("engine is closed")
            wanted = _schema_json(schema)
            st = self._indexes.get(index)
            if st is not None:
                if st.schema_json != wanted:
                    raise ValueError(f"index {index!r} is already open with another schema")
                return
            st = _Index(index, schema, wanted, {f.name: f for f in schema.fields})
            current = await self._current(index)
            if current is None:
                if await self.es.indices.exists(index=index):
                    raise RuntimeError(f"{index!r} is a concrete index, not an alias; delete or rename it")
                try:
                    await self._create(index, st, alias=True)  # index and alias in one call
                except BadRequestError:
                    if await self._current(index) is None:
                        raise  # else another process made it first (resource_already_exists): use theirs
            else:
                mapping = await self.es.indices.get_mapping(index=current)
                meta = (mapping[current]["mappings"].get("_meta") or {}).get("twincity_schema")
                if meta != wanted:
                    log.warning("index %s: schema changed; starting a new empty version (rebuild it)", index)
                    await self._swap(index, current, await self._create(index, st))
            self._indexes[index] = st

    @property
    def indexes(self) -> frozenset[str]:
        """The indices this engine has opened."""
        return frozenset(self._indexes)

    async def drop(self, index: str) -> None:
        """Delete the alias ``index`` and every version behind it (not part of the Engine protocol)."""
        if self._closed:
            raise RuntimeError("engine is closed")
        names = set((await self._versions(index)).values())
        current = await self._current(index)
        if current is not None:
            names.add(current)
        for name in sorted(names):
            await self.es.indices.delete(index=name, ignore_unavailable=True)
        self._indexes.pop(index, None)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._indexes.clear()
        await self.es.close()

    # -------------------------------------------------------------------------------------- writes

    async def _bulk(self, index: str, actions: AsyncIterable[dict[str, Any]] | Iterable[dict[str, Any]]) -> None:
        """Send ``actions``; :class:`IndexingError` naming every refused document."""
        failures: dict[str, str] = {}
        async for ok, item in async_streaming_bulk(
            self.es,
            actions,
            chunk_size=BULK_CHUNK,
            raise_on_error=False,
            raise_on_exception=True,
            max_retries=3,
            initial_backoff=1,
            yield_ok=False,
        ):
            if ok:
                continue
            op, result = next(iter(item.items()))
            if op == "delete" and result.get("status") == 404:
                continue  # deleting what is not there
            error = result.get("error")
            if isinstance(error, dict):
                error = f"{error.get('type')}: {error.get('reason')}"
            failures[str(result.get("_id"))] = str(error or f"status {result.get('status')}")
        if failures:
            raise IndexingError(index, failures)

    async def _write(self, st: _Index, actions: list[dict[str, Any]]) -> None:
        """Apply ``actions`` to the live index (through the alias), journaling them if a rebuild runs."""
        async with st.gate.write():
            try:
                await self._bulk(st.name, actions)
            except IndexingError as e:
                if st.journal is not None:
                    st.journal.append([a for a in actions if a["_id"] not in e.failures])
                raise
            if st.journal is not None:
                st.journal.append(actions)

    @staticmethod
    async def _index_actions(
        st: _Index, target: str, docs: Sequence[Document], analysed: Analysed = NOTHING_ANALYSED
    ) -> list[dict[str, Any]]:
        """Bulk ``index`` actions for ``docs`` (``ValueError`` for a bad one); big batches are analysed in a thread."""

        def run() -> list[dict[str, Any]]:
            return [
                {"_op_type": "index", "_index": target, "_id": d.id, "_source": _source(st.fields, d, analysed)}
                for d in docs
            ]

        return await asyncio.to_thread(run) if len(docs) > THREAD_BATCH else run()

    async def upsert(self, index: str, docs: Sequence[Document], *, analysed: Analysed | None = None) -> None:
        st = self._state(index)
        if not docs:
            return
        await self._write(st, await self._index_actions(st, index, list(docs), analysed or NOTHING_ANALYSED))

    async def delete(self, index: str, ids: Sequence[str]) -> None:
        st = self._state(index)
        ids = list(ids)
        if any(not isinstance(i, str) for i in ids):
            raise ValueError("document ids are strings")
        if ids:
            await self._write(st, [{"_op_type": "delete", "_index": index, "_id": i} for i in ids])

    async def refresh(self, index: str) -> None:
        self._state(index)
        await self.es.indices.refresh(index=index)

    async def rebuild(self, index: str, docs: AsyncIterable[Sequence[Document]]) -> None:
        st = self._state(index)
        async with st.rebuild_lock:
            old = await self._current(index)
            new = await self._create(index, st, loading=True)
            st.journal = []
            swapped = False
            try:

                async def actions() -> AsyncIterator[dict[str, Any]]:
                    async for batch in docs:
                        for action in await self._index_actions(st, new, list(batch)):
                            yield action

                await self._bulk(new, actions())
                await self.es.indices.put_settings(index=new, settings={"index": {"refresh_interval": None}})
                async with st.gate.exclusive():
                    journal, st.journal = st.journal, None
                    await self._bulk(new, (dict(a, _index=new) for batch in journal for a in batch))
                    await self.es.indices.refresh(index=new)
                    await self._swap(index, old, new)
                    swapped = True
            finally:
                st.journal = None
                if not swapped:  # the half-built index goes; the next rebuild would remove it anyway
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.es.indices.delete(index=new, ignore_unavailable=True))

    # -------------------------------------------------------------------------------------- reads

    async def count(self, index: str) -> int:
        self._state(index)
        return int((await self.es.count(index=index))["count"])

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
    ) -> Result:
        st = self._state(index)
        check_window(offset, limit)
        compiler = _Compiler(st.schema)
        try:
            q = compiler.compile(query)
            if filters:
                q = {"bool": {"must": [q], "filter": [compiler.compile(f) for f in filters]}}
        except RecursionError:
            raise QueryError("query nested too deeply") from None
        body: dict[str, Any] = {"query": q, "from": offset, "size": limit, "track_total_hits": True}
        stored_fields = [f.name for f in st.schema.fields if f.kind is FieldKind.STORED]
        body["_source"] = {"includes": [DOC_FIELD]} if limit and (stored_fields or highlight) else False
        sort_field = self._sort(compiler, sort)
        if sort_field is not None:
            body["sort"] = [sort_field]
        for name in highlight:
            compiler.field(name, FieldKind.TEXT, use="highlight")
        aggs = self._aggregations(compiler, tuple(facets))
        if aggs:
            body["aggs"] = aggs
        if self._shards > 1:
            body["search_type"] = "dfs_query_then_fetch"
        try:
            resp = await self.es.search(index=index, **body)
        except BadRequestError as e:
            raise QueryError(f"Elasticsearch refused the query: {e}") from None
        hits: list[Hit] = []
        for h in resp["hits"]["hits"]:
            src = (h.get("_source") or {}).get(DOC_FIELD) or {}
            stored = {name: src[name] for name in stored_fields if name in src}
            marks = highlight_values(st.schema, query, src, highlight) if highlight else {}
            score = 0.0 if sort_field is not None else float(h.get("_score") or 0.0)
            hits.append(Hit(id=h["_id"], score=score, stored=stored, highlights=marks))
        total = int(resp["hits"]["total"]["value"])
        return Result(total=total, hits=hits, facets=self._facets(st, tuple(facets), resp.get("aggregations") or {}))

    @staticmethod
    def _sort(compiler: _Compiler, sort: Sort) -> dict[str, Any] | None:
        if not isinstance(sort, Sort):
            raise QueryError(f"sort must be a Sort, not {type(sort).__name__}")
        if sort.order == SortOrder.RELEVANCE:
            return None
        if sort.order not in (SortOrder.FIELD_ASC, SortOrder.FIELD_DESC):
            raise QueryError(f"unknown sort order {sort.order!r}")
        f = compiler.field(sort.field, FieldKind.INTEGER, use="sort")
        if f.multi:
            raise QueryError(f"cannot sort by the multi-valued field {f.name!r}")
        order = "asc" if sort.order == SortOrder.FIELD_ASC else "desc"
        return {f.name: {"order": order, "missing": "_last"}}

    def _aggregations(self, compiler: _Compiler, facets: tuple[Facet, ...]) -> dict[str, Any]:
        aggs: dict[str, Any] = {}
        for i, facet in enumerate(facets):
            f = compiler.facet_field(facet)
            if facet.size:
                terms: dict[str, Any] = {
                    "field": f.name,
                    "size": facet.size,
                    "order": [{"_count": "desc"}, {"_key": "asc"}],
                }
                if self._shards > 1:
                    terms["shard_size"] = max(10 * facet.size, 1000)
                aggs[f"f{i}"] = {"terms": terms}
        return aggs

    @staticmethod
    def _facets(st: _Index, facets: tuple[Facet, ...], raw: Mapping[str, Any]) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for i, facet in enumerate(facets):
            kind = st.fields[facet.field].kind
            buckets = raw.get(f"f{i}", {}).get("buckets", [])
            # a boolean key comes back as 1/0 (or "true" as key_as_string)
            keys = ((b["key"] in (1, True, "true") if kind is FieldKind.BOOLEAN else b["key"]) for b in buckets)
            out[facet.field] = facet_counts(kind, zip(keys, (b["doc_count"] for b in buckets), strict=True), facet.size)
        return out
