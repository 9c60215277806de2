"""The embedded engine: tantivy on a local directory, one sub-directory per index.

Layout
======

``root/<index>/CURRENT`` names the live version directory ``root/<index>/<version>/``,
which holds the tantivy files and ``twincity-schema.json`` (our :class:`Schema` and the
version of the field mapping below).
:meth:`TantivyEngine.rebuild` builds a new version directory next to the live one,
then replaces ``CURRENT`` atomically (write, fsync, ``os.replace``) and removes the
old directory once the searches still running on it are done. Directories that
``CURRENT`` does not name (a crashed rebuild) are removed by :meth:`open`.

Opening an index whose stored schema differs from the one given starts a new,
empty version with the new schema (logged as a warning): the caller rebuilds it.

Fields
======

Every value is analysed in Python (:mod:`search.analysis`) and tantivy only
splits the token list on spaces: tokens never contain whitespace, so tantivy's
``whitespace`` tokenizer reproduces our tokens exactly. (That is what a
``PreTokenizedString`` would do, at a fourteenth of the cost per document.)

=========  ==================================================================================
TEXT f     ``f``: ``analyze(v)``, frequencies (Term); ``f__phrase``: ``phrase_stream(v)``,
           positions (Phrase). Several values are several field values; tantivy leaves a
           position gap between them, so a phrase cannot run across values.
KEYWORD f  ``f``: the value as is (``raw`` tokenizer), indexed and fast (facets). With
           ``facet_slots`` K: also ``f__slot0`` … ``f__slot{K-1}``, the document's first K
           distinct values, one per column, each as ``=value``, or ``""`` where it has fewer;
           and when it has more, the rest in ``f__more`` (fast, multi-valued).
INTEGER f  ``f``: i64, indexed and fast (Range, sort, facets).
BOOLEAN f  ``f``: bool, indexed and fast.
STORED f   only in ``_src``.
=========  ==================================================================================

``_id`` (raw, stored) holds the document id and ``_src`` (stored bytes) the JSON of
its TEXT and STORED values: the originals for highlighting, and ``Hit.stored``,
which holds the document's STORED fields. Field names may not start with ``_``
or contain ``__``.

Why the slots: tantivy counts a facet on a column that holds one value for every
document (its cardinality is "full") at about a nanosecond a hit, on a column
where some documents have none at about four, and on a multi-valued one at
about fifteen: at a million works, a library facet over the 217,000 hits of a
common word took 6.7 ms. A padded single-valued slot is always full. So a facet
on a slotted field counts its K slots and its ``f__more`` column in the same
aggregation pass and adds the counts up (with the library facet in two slots
and 2.5% of the works beyond them: 3.0 ms for both facets of that search, where
they took 6.7 ms and more). Counting ``f__more`` over only the hits that have a
value there (a second pass, the query and a marker term) measured slower at every
result size from 374 hits to 150,000: tantivy seeks the query's union of fields
for each of them.

Queries
=======

* ``Term(text, f)``: every distinct ``analyze_query`` token must be in ``f`` (a
  ``Must`` boolean of term queries, scored by BM25). ``Term(text)`` does that in
  each default TEXT field, weighted by the field's boost, and takes the
  disjunction (``Should``) of the fields: all tokens of *one* Term must be in
  the same field. Cross-field matching happens one level up: the parser makes
  each word of ``红楼梦 曹雪芹`` its own Term and ANDs them, so the title can
  match one word and the author the other. No token, or no default field:
  matches nothing.
* ``Phrase(text, f)``: ``analyze_phrase`` tokens at consecutive positions of
  ``f__phrase`` (one token: a term query on it); ``Phrase(text)``: the same
  disjunction over the default fields.
* ``Exact``: a term on a KEYWORD (the value as a string), INTEGER or BOOLEAN field.
* ``Range``: an inclusive range on an INTEGER field; no bounds: the field exists.
* ``And``/``Or``/``Not``: boolean queries; a purely negative group is taken
  from all documents. ``And(())`` matches everything, ``Or(())`` nothing.
* filters: ``Must`` clauses wrapped in a constant score of 0, so they never score.

A query tree that names an unknown field, uses a field the wrong way, has
values of the wrong type, more than :data:`MAX_CLAUSES` leaf queries or nests
deeper than :data:`MAX_DEPTH`, raises :class:`QueryError`. So do a negative
offset or limit, and ``offset + limit`` over :data:`MAX_WINDOW`.

Results
=======

``total`` is exact. Sorting is by score, or by an INTEGER (single-valued) field,
ascending or descending, documents without the field last; ties are broken by
tantivy's document order, which is stable for an unchanged index. Facets are
terms aggregations on the fast fields over the whole result set (query and
filters), ordered by count descending and then by value ascending; integer
values are given as decimal strings, booleans as ``"true"``/``"false"``.
Highlights come from :func:`search.highlight.highlight` on the stored originals
(tantivy's SnippetGenerator re-tokenises the stored text with the field's
tokenizer, so it cannot work on our pre-analysed fields).

Writes
======

All writes of an index go through one :class:`asyncio.Queue`, consumed by one
writer task that owns the index's only tantivy ``IndexWriter``. The task takes
everything queued at once and applies it in a single call on the write thread
pool (a batch), so concurrent upserts share the thread hop. It commits (and
reloads the searcher) on :meth:`~TantivyEngine.refresh`, every
``commit_every`` documents, and ``commit_interval`` seconds after the first
uncommitted write. Analysis happens on the write pool as well, before the
documents are queued, so :meth:`~TantivyEngine.upsert` raises ``ValueError``
for a bad document at once. Searches run on a search thread pool (tantivy
releases the GIL), on the searcher of the last commit. The event loop never
waits for tantivy.

:meth:`~TantivyEngine.rebuild` writes the new version with its own writer, not
through the queue (it is a different tantivy index). Writes that arrive while it
runs go to the live index *and* to a journal; at the swap, the writer task
replays the journal on the new version, commits it, and switches. So a write
made during a rebuild is never lost, and wins over the rebuilt document.

Another process
===============

An index has one writer across processes (tantivy's lock file). A process that opens an index another one writes
(``twincity catalog search`` beside a running server) opens it to read only: it touches no file, its searches
follow what the writer commits (a reload at most once a second, to the version the writer's pointer names). A
write, refresh or rebuild takes the writer if the other process has let it go since, and otherwise raises
:class:`IndexReadOnly`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import tantivy
from tantivy import Occur
from tantivy import Query as TQ

from search.analysis import index_strings, warm
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
    IndexReadOnly,
    QueryError,
    Result,
    Schema,
    Sort,
    SortOrder,
)
from search.highlight import highlight_needles, needles
from search.query import Node

__all__ = ["MAX_CLAUSES", "MAX_DEPTH", "MAX_WINDOW", "TantivyEngine"]

log = logging.getLogger(__name__)

_ID = "_id"
_SRC = "_src"
_PHRASE = "__phrase"
_POINTER = "CURRENT"
_SCHEMA_FILE = "twincity-schema.json"
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_VERSION_NAME = re.compile(r"^v[0-9]{20}-[0-9a-f]{8}$")
_FACET_SEGMENT_SIZE = 65_536  # per-segment buckets: counts are exact up to this many distinct values
_FACET_GROUPS = 3  # facets of a big result set are counted in this many tantivy calls at once
_PARALLEL_FACETS = 10_000  # hits from which that pays for the hand-over between threads
_SLOT = "__slot"
_SLOT_MORE = "__more"
_SLOT_VALUE = "="  # a value in a slot is stored behind it, so that no value is taken for an empty slot
_NO_VALUE = ""  # an empty slot


# ------------------------------------------------------------------------------------------------ schema


# bump whenever _tantivy_schema or _prepare change what is on disk (a field's facet slots change the stored schema
# of their own, so an index laid out without them is never read as one with them)
_MAPPING_VERSION = 1


def _schema_json(schema: Schema) -> str:
    fields = field_dicts(schema)
    return json.dumps({"mapping": _MAPPING_VERSION, "fields": fields}, sort_keys=True, ensure_ascii=False)


def _check_schema(schema: Schema) -> None:
    check_schema(
        schema,
        lambda name: tantivy.SchemaBuilder.is_valid_field_name(name) and "." not in name,
        "is not valid for tantivy",
    )


def _tantivy_schema(schema: Schema) -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_text_field(_ID, stored=True, tokenizer_name="raw", index_option="basic")
    b.add_bytes_field(_SRC, stored=True)
    for f in schema.fields:
        if f.kind is FieldKind.TEXT:
            # the keyword analyzer's one token may hold spaces ("new york"): index it untouched
            tokenizer = "raw" if f.analyzer == "keyword" else "whitespace"
            b.add_text_field(f.name, tokenizer_name=tokenizer, index_option="freq")
            b.add_text_field(f.name + _PHRASE, tokenizer_name=tokenizer, index_option="position")
        elif f.kind is FieldKind.KEYWORD:
            columns = [f.name, *(f"{f.name}{_SLOT}{j}" for j in range(f.facet_slots))]
            columns += [f.name + _SLOT_MORE] if f.facet_slots else []
            for name in columns:
                b.add_text_field(name, fast=True, tokenizer_name="raw", index_option="basic")
        elif f.kind is FieldKind.INTEGER:
            b.add_integer_field(f.name, indexed=True, fast=True)
        elif f.kind is FieldKind.BOOLEAN:
            b.add_boolean_field(f.name, indexed=True, fast=True)
    return b.build()


def _add_slots(out: tantivy.Document, f: Field, values: Sequence[str]) -> None:
    """The facet slots of ``f`` for a document's values of it (every document fills every slot)."""
    distinct = list(dict.fromkeys(values)) if len(values) > 1 else values
    k = f.facet_slots
    for j in range(k):
        out.add_text(f"{f.name}{_SLOT}{j}", _SLOT_VALUE + distinct[j] if j < len(distinct) else _NO_VALUE)
    for v in distinct[k:]:
        out.add_text(f.name + _SLOT_MORE, v)


def _prepare(
    fields: dict[str, Field], slotted: Sequence[Field], doc: Document, analysed: Analysed = NOTHING_ANALYSED
) -> tuple[str, tantivy.Document]:
    """A tantivy document for ``doc`` (analysis included, but for the values ``analysed`` holds); ``ValueError``
    for a document that does not fit."""
    check_document_id(doc.id)
    out = tantivy.Document()
    out.add_text(_ID, doc.id)
    src: dict[str, Any] = {}
    slot_values: dict[str, list[str]] = {}
    for name, value in doc.values.items():
        f = fields.get(name)
        if f is None:
            raise ValueError(f"document {doc.id!r}: unknown field {name!r}")
        if f.kind is FieldKind.STORED:
            if value is not None:
                src[name] = value
            continue
        values = field_values(f, value)
        if not values:
            continue
        for v in values:
            if f.kind is FieldKind.TEXT:
                key = (text_value(doc.id, f, v), f.analyzer or "text")
                terms, stream = analysed.get(key) or index_strings(*key)
                out.add_text(name, terms)
                out.add_text(name + _PHRASE, stream)
                continue
            v = plain_value(doc.id, f, v)
            if f.kind is FieldKind.KEYWORD:
                out.add_text(name, v)
                if f.facet_slots:
                    slot_values.setdefault(name, []).append(v)
            elif f.kind is FieldKind.INTEGER:
                out.add_integer(name, v)
            else:
                out.add_boolean(name, v)
        if f.kind is FieldKind.TEXT:
            src[name] = value
    for f in slotted:
        _add_slots(out, f, slot_values.get(f.name, ()))
    try:
        out.add_bytes(_SRC, _source_bytes(src))
    except ValueError as e:
        raise ValueError(f"document {doc.id!r}: {e}") from None
    return doc.id, out


_DIGITS = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))  # translates a digit to 1, the rest to 0
_STDLIB_JSON = b"J"  # before a _src that orjson would not read exactly (a _src of JSON starts with "{")


def _source_bytes(src: dict[str, Any]) -> bytes:
    """``src`` as the bytes of ``_src``: strict JSON (no NaN), as the Elasticsearch engine stores it; marked for
    stdlib json when it holds 19 digits in a row, which may be an integer beyond 64 bits (orjson reads one as a
    float); ``ValueError`` for what is not JSON."""
    try:
        raw = json.dumps(src, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"stored values are not JSON: {e}") from None
    return _STDLIB_JSON + raw if b"1" * 19 in raw.translate(_DIGITS) else raw


def _source(raw: bytes | None) -> dict[str, Any]:
    """A hit's stored ``_src``, read by orjson (a third of stdlib json's time) unless it is marked for stdlib
    json; an index written before ``_src`` was strict may hold a NaN, which only stdlib json reads."""
    if not raw:
        return {}
    if raw[:1] == _STDLIB_JSON:
        return json.loads(raw[1:])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


# ------------------------------------------------------------------------------------------------ queries


@contextlib.contextmanager
def _tantivy_errors() -> Iterator[None]:
    """tantivy's refusals of a query as :class:`QueryError`."""
    try:
        yield
    except QueryError:
        raise
    except RecursionError:
        raise QueryError("query nested too deeply") from None
    except (ValueError, TypeError) as e:
        raise QueryError(f"tantivy refused the query: {e}") from None
    except BaseException as e:
        if type(e).__name__ == "PanicException":  # pyo3's, a BaseException: never let one escape as such
            raise QueryError(f"tantivy refused the query: {e}") from None
        raise


class _Compiler(QueryCompiler[TQ]):
    """Our query tree → a tantivy query (what each node means is decided in :mod:`search.common`)."""

    def __init__(self, schema: Schema, tschema: tantivy.Schema) -> None:
        super().__init__(schema)
        self.tschema = tschema

    def match_all(self) -> TQ:
        return TQ.all_query()

    def match_none(self) -> TQ:
        return TQ.empty_query()

    def must(self, positive: list[TQ], negative: list[TQ]) -> TQ:
        return TQ.boolean_query([(Occur.Must, q) for q in positive] + [(Occur.MustNot, q) for q in negative])

    def should(self, alternatives: list[TQ]) -> TQ:
        return TQ.boolean_query([(Occur.Should, q) for q in alternatives])

    @staticmethod
    def _boosted(f: Field, q: TQ) -> TQ:
        return TQ.boost_query(q, float(f.boost)) if f.boost != 1.0 else q

    def terms(self, f: Field, tokens: list[str]) -> TQ:
        terms = [self.leaf(TQ.term_query(self.tschema, f.name, t, "freq")) for t in tokens]
        return self._boosted(f, terms[0] if len(terms) == 1 else self.must(terms, []))

    def phrase(self, f: Field, tokens: list[str]) -> TQ:
        if len(tokens) == 1:  # a one-term phrase_query panics in tantivy-py
            return self._boosted(f, self.leaf(TQ.term_query(self.tschema, f.name + _PHRASE, tokens[0], "freq")))
        return self._boosted(f, self.leaf(TQ.phrase_query(self.tschema, f.name + _PHRASE, tokens), len(tokens)))

    def equals(self, f: Field, value: Any) -> TQ:
        return TQ.term_query(self.tschema, f.name, value, "basic")

    def exists(self, f: Field) -> TQ:
        return TQ.exists_query(f.name)

    def between(self, f: Field, lo: int | None, hi: int | None) -> TQ:
        return TQ.range_query(self.tschema, f.name, tantivy.FieldType.Integer, lo, hi)


# ------------------------------------------------------------------------------------------------ state


@dataclasses.dataclass(eq=False)
class _Version:
    """One version directory: its tantivy index, writer and current searcher."""

    path: Path
    index: tantivy.Index
    writer: Any  # tantivy.IndexWriter; None once released
    searcher: tantivy.Searcher
    active: int = 0  # searches running on it
    retired: bool = False
    drained: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


@dataclasses.dataclass(eq=False)
class _Op:
    kind: str  # upsert | delete | refresh | tick | journal | unjournal | swap | close
    payload: Any = None
    future: asyncio.Future[Any] | None = None


@dataclasses.dataclass(eq=False)
class _Index:
    name: str
    dir: Path
    schema: Schema
    schema_json: str
    tschema: tantivy.Schema
    fields: dict[str, Field]
    slotted: tuple[Field, ...]  # the fields with facet slots
    stored: tuple[str, ...]  # the STORED fields, which a hit carries
    version: _Version
    queue: asyncio.Queue[_Op] = dataclasses.field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    dirty: int = 0  # writes since the last commit
    tick: asyncio.TimerHandle | None = None
    journal: list[tuple[str, Any]] | None = None
    rebuild_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    closed: bool = False
    read_only: bool = False  # another process holds the index's writer
    reloaded_at: float = 0.0
    upgrade_lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


_FOLLOW_S = 1.0  # a read-only index reloads what the writing process committed at most this often


def _now() -> float:
    return time.monotonic()


def _new_version_name() -> str:
    return f"v{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _write_pointer(index_dir: Path, version: str) -> None:
    tmp = index_dir / (_POINTER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, index_dir / _POINTER)
    fd = os.open(index_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply(writer: Any, kind: str, payload: Any) -> None:
    if kind == "upsert":
        for doc_id, tdoc in payload:
            writer.delete_documents_by_term(_ID, doc_id)
            writer.add_document(tdoc)
    else:
        for doc_id in payload:
            writer.delete_documents_by_term(_ID, doc_id)


# ------------------------------------------------------------------------------------------------ engine


class TantivyEngine:
    """The :class:`~search.engine.Engine` on tantivy; see the module documentation."""

    def __init__(
        self,
        root: Path | str,
        *,
        writer_heap: int = 50_000_000,
        rebuild_heap: int = 1_024_000_000,  # TWINCITY_SEARCH_REBUILD_MB (1024) in bytes
        commit_every: int = 10_000,
        commit_interval: float = 1.0,
        search_threads: int | None = None,
        writes: bool = True,
    ) -> None:
        """``writes=False``: a process that only reads the indexes (a server process beside the one running the
        jobs and the outbox relay, which writes them): it never takes an index's writer, which the first process
        to open an index otherwise takes and keeps."""
        self.root = Path(root)
        self.writes = writes
        self.writer_heap = writer_heap
        self.rebuild_heap = rebuild_heap
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self._indexes: dict[str, _Index] = {}
        self._open_lock: asyncio.Lock | None = None
        self._write_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tantivy-write")
        self._search_pool = ThreadPoolExecutor(
            max_workers=search_threads or min(8, (os.cpu_count() or 2) + 2), thread_name_prefix="tantivy-search"
        )
        # facet counting for the searches (never submits further work: no pool can starve the other)
        self._facet_pool = ThreadPoolExecutor(
            max_workers=(_FACET_GROUPS - 1) * (search_threads or min(8, (os.cpu_count() or 2) + 2)),
            thread_name_prefix="tantivy-facets",
        )
        self._closed = False
        self._searching = 0  # searches in flight in this process

    # -------------------------------------------------------------------------------------- helpers

    async def _write_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._write_pool, fn, *args)

    def _state(self, index: str) -> _Index:
        if self._closed:
            raise RuntimeError("engine is closed")
        st = self._indexes.get(index)
        if st is None:
            raise KeyError(f"index {index!r} is not open")
        return st

    async def _call(self, st: _Index, kind: str, payload: Any = None) -> Any:
        if st.closed:
            raise RuntimeError(f"index {st.name!r} is closed")
        future = asyncio.get_running_loop().create_future()
        st.queue.put_nowait(_Op(kind, payload, future))
        return await future

    # -------------------------------------------------------------------------------------- open

    async def open(self, index: str, schema: Schema) -> None:
        if not isinstance(index, str) or not _INDEX_NAME.match(index):
            raise ValueError(f"index name {index!r}: lower-case letters, digits, '-' and '_' only")
        _check_schema(schema)
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._closed:
                raise RuntimeError("engine is closed")
            st = self._indexes.get(index)
            wanted = _schema_json(schema)
            if st is not None:
                if st.schema_json != wanted:
                    raise ValueError(f"index {index!r} is already open with another schema")
                return
            st = await self._write_thread(self._load, index, schema, wanted)
            st.task = asyncio.create_task(self._writer(st), name=f"tantivy-writer-{index}")
            self._indexes[index] = st

    def _load(self, name: str, schema: Schema, wanted: str) -> _Index:
        warm()  # OpenCC's and pypinyin's tables now: their first use holds the GIL for a few hundred milliseconds
        index_dir = self.root / name
        index_dir.mkdir(parents=True, exist_ok=True)
        tschema = _tantivy_schema(schema)
        current: str | None = None
        pointer = index_dir / _POINTER
        if pointer.exists():
            current = pointer.read_text(encoding="utf-8").strip() or None
            if current is not None and not _VERSION_NAME.match(current):
                current = None
            schema_file = index_dir / current / _SCHEMA_FILE if current else None
            if schema_file is None or not schema_file.exists():
                log.warning("index %s: %s names no usable version; starting empty", name, current)
                current = None
            elif schema_file.read_text(encoding="utf-8") != wanted:
                log.warning("index %s: schema changed; starting a new empty version (rebuild it)", name)
                current = None
        if current is None:
            current = _new_version_name()
            path = index_dir / current
            path.mkdir()
            tindex = tantivy.Index(tschema, str(path), reuse=False)
            (path / _SCHEMA_FILE).write_text(wanted, encoding="utf-8")
            _write_pointer(index_dir, current)
        else:
            path = index_dir / current
            tindex = tantivy.Index(tschema, str(path), reuse=True)
        writer = self._try_writer(tindex) if self.writes else None
        if writer is not None:  # else another process writes this index: read what it commits, touch nothing
            for child in index_dir.iterdir():  # leftovers of a crashed rebuild or an old schema
                if child.is_dir() and child.name != current:
                    shutil.rmtree(child, ignore_errors=True)
        tindex.reload()
        version = _Version(path, tindex, writer, tindex.searcher())
        fields = {f.name: f for f in schema.fields}
        slotted = tuple(f for f in schema.fields if f.facet_slots)
        stored = tuple(f.name for f in schema.fields if f.kind is FieldKind.STORED)
        return _Index(
            name,
            index_dir,
            schema,
            wanted,
            tschema,
            fields,
            slotted,
            stored,
            version,
            read_only=writer is None,
            reloaded_at=_now(),
        )

    def _follow(self, st: _Index) -> None:
        """A read-only index: the searcher of the writer's last commit, on the version its pointer names."""
        try:
            current = (st.dir / _POINTER).read_text(encoding="utf-8").strip()
        except OSError:
            current = st.version.path.name
        if _VERSION_NAME.match(current) and current != st.version.path.name:
            tindex = tantivy.Index(st.tschema, str(st.dir / current), reuse=True)
            st.version = _Version(st.dir / current, tindex, None, tindex.searcher())
        else:
            st.version.index.reload()
            st.version.searcher = st.version.index.searcher()
        st.reloaded_at = _now()

    # -------------------------------------------------------------------------------------- writes

    def _prepare_all(
        self, st: _Index, docs: Sequence[Document], analysed: Analysed = NOTHING_ANALYSED
    ) -> list[tuple[str, tantivy.Document]]:
        return [_prepare(st.fields, st.slotted, d, analysed) for d in docs]

    async def _writable(self, st: _Index) -> _Index:
        """The index, writable: a read-only one takes the writer now if the other process let it go (a server
        started while a command held the index becomes its writer at its first write), or raises IndexReadOnly."""
        if not st.read_only:
            return st
        if not self.writes:
            raise IndexReadOnly(f"index {st.name!r}: this process only reads the indexes; the one running jobs writes")
        async with st.upgrade_lock:
            if st.read_only and not await self._write_thread(self._take_writer, st):
                raise IndexReadOnly(f"index {st.name!r} is written by another process; this one only reads it")
        return st

    def _take_writer(self, st: _Index) -> bool:
        self._follow(st)  # the version the last writer left current
        writer = self._try_writer(st.version.index)
        if writer is None:
            return False
        st.version.writer, st.read_only = writer, False
        return True

    def _try_writer(self, tindex: tantivy.Index) -> Any:
        """The index's writer, or None while another process holds it (tantivy's lock file)."""
        try:
            return tindex.writer(self.writer_heap, 1)
        except ValueError as e:
            if "LockBusy" not in str(e):
                raise
            return None

    async def upsert(self, index: str, docs: Sequence[Document], *, analysed: Analysed | None = None) -> None:
        st = await self._writable(self._state(index))
        if not docs:
            return
        prepared = await self._write_thread(self._prepare_all, st, list(docs), analysed or NOTHING_ANALYSED)
        await self._call(st, "upsert", prepared)

    async def delete(self, index: str, ids: Sequence[str]) -> None:
        st = await self._writable(self._state(index))
        ids = list(ids)
        if any(not isinstance(i, str) for i in ids):
            raise ValueError("document ids are strings")
        if ids:
            await self._call(st, "delete", ids)

    async def refresh(self, index: str) -> None:
        await self._call(await self._writable(self._state(index)), "refresh")

    async def _writer(self, st: _Index) -> None:
        """The one consumer of ``st.queue``: applies writes in batches, commits, swaps versions."""
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            ops = [await st.queue.get()]
            while not st.queue.empty():
                ops.append(st.queue.get_nowait())
            writes: list[_Op] = []
            for op in ops:
                if stop:
                    _settle(op.future, None, RuntimeError(f"index {st.name!r} is closed"))
                elif op.kind in ("upsert", "delete"):
                    writes.append(op)
                else:
                    await self._flush(st, writes)
                    writes = []
                    stop = await self._control(st, op)
            await self._flush(st, writes)
            if stop:
                break
            try:
                if st.dirty >= self.commit_every:
                    await self._commit(st)
                elif st.dirty and st.tick is None:
                    st.tick = loop.call_later(self.commit_interval, st.queue.put_nowait, _Op("tick"))
            except Exception:
                log.exception("index %s: commit failed", st.name)
        while not st.queue.empty():  # anything that raced with close
            _settle(st.queue.get_nowait().future, None, RuntimeError(f"index {st.name!r} is closed"))

    async def _flush(self, st: _Index, writes: list[_Op]) -> None:
        if not writes:
            return

        def run() -> list[BaseException | None]:
            errors: list[BaseException | None] = []
            for op in writes:
                try:
                    _apply(st.version.writer, op.kind, op.payload)
                    errors.append(None)
                except Exception as e:  # handed to the caller
                    errors.append(e)
            return errors

        try:
            errors = await self._write_thread(run)
        except BaseException as e:  # the pool is gone, a panic, ...
            errors = [e] * len(writes)
        for op, error in zip(writes, errors, strict=True):
            if error is None:
                st.dirty += len(op.payload)
                if st.journal is not None:
                    st.journal.append((op.kind, op.payload))
            _settle(op.future, None, error)

    async def _commit(self, st: _Index) -> None:
        if st.tick is not None:
            st.tick.cancel()
            st.tick = None
        if not st.dirty:
            return
        version = st.version

        def run() -> tantivy.Searcher:
            version.writer.commit()
            version.index.reload()
            return version.index.searcher()

        version.searcher = await self._write_thread(run)
        st.dirty = 0

    async def _control(self, st: _Index, op: _Op) -> bool:
        """Handle a non-write op; True when the writer task should stop."""
        try:
            if op.kind == "tick":
                st.tick = None
                try:
                    await self._commit(st)
                except Exception:
                    log.exception("index %s: commit failed", st.name)
            elif op.kind == "refresh":
                await self._commit(st)
            elif op.kind == "journal":
                st.journal = []
            elif op.kind == "unjournal":
                st.journal = None
            elif op.kind == "swap":
                _settle(op.future, await self._swap(st, op.payload))
                return False
            elif op.kind == "close":
                await self._commit(st)
                await self._release(st.version)
                st.closed = True
                _settle(op.future, None)
                return True
        except BaseException as e:
            _settle(op.future, None, e)
            return op.kind == "close"
        _settle(op.future, None)
        return False

    async def _swap(self, st: _Index, new: _Version) -> _Version:
        """Replay the journal on ``new``, commit it, point ``CURRENT`` at it and make it live; the old version."""
        journal = st.journal or []

        def run() -> tantivy.Searcher:
            for kind, payload in journal:
                _apply(new.writer, kind, payload)
            new.writer.commit()
            new.index.reload()
            searcher = new.index.searcher()
            _write_pointer(st.dir, new.path.name)
            return searcher

        new.searcher = await self._write_thread(run)
        old = st.version
        st.version = new
        st.journal = None
        st.dirty = 0
        if st.tick is not None:
            st.tick.cancel()
            st.tick = None
        return old

    async def _release(self, version: _Version) -> None:
        """Let the version's writer finish its merges and go (its lock file too)."""
        writer, version.writer = version.writer, None
        if writer is not None:
            await self._write_thread(writer.wait_merging_threads)

    # -------------------------------------------------------------------------------------- rebuild

    async def rebuild(self, index: str, docs: AsyncIterable[Sequence[Document]]) -> None:
        st = await self._writable(self._state(index))
        async with st.rebuild_lock:
            new = await self._write_thread(self._create_version, st)
            await self._call(st, "journal")
            swapped = False
            try:
                async for batch in docs:
                    if not batch:
                        continue
                    prepared = await self._write_thread(self._prepare_all, st, list(batch))
                    await self._write_thread(_apply, new.writer, "upsert", prepared)
                await self._write_thread(self._seal, new)
                old = await self._call(st, "swap", new)
                swapped = True
            finally:
                if not swapped:
                    if not st.closed:
                        with contextlib.suppress(Exception):
                            await self._call(st, "unjournal")
                    await asyncio.shield(self._discard(new))
        await self._retire(old)

    def _create_version(self, st: _Index) -> _Version:
        path = st.dir / _new_version_name()
        path.mkdir()
        (path / _SCHEMA_FILE).write_text(st.schema_json, encoding="utf-8")
        tindex = tantivy.Index(st.tschema, str(path), reuse=False)
        # one indexing thread: each thread writes its own segments, and a search visits every segment (at 1M
        # works, seven segments searched 1.65x slower than one); documents are built in Python, not by tantivy
        return _Version(path, tindex, tindex.writer(self.rebuild_heap, 1), tindex.searcher())

    def _seal(self, new: _Version) -> None:
        """Commit the bulk load, let its merges finish, and give the version a live-sized writer."""
        new.writer.commit()
        new.writer.wait_merging_threads()
        new.writer = new.index.writer(self.writer_heap, 1)

    async def _discard(self, version: _Version) -> None:
        def run() -> None:
            writer, version.writer = version.writer, None
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.rollback()
                with contextlib.suppress(Exception):
                    writer.wait_merging_threads()
            shutil.rmtree(version.path, ignore_errors=True)

        await self._write_thread(run)

    async def _retire(self, old: _Version) -> None:
        """Remove an old version once no search runs on it any more."""
        old.retired = True
        if old.active:
            await old.drained.wait()
        await self._discard(old)

    # -------------------------------------------------------------------------------------- reads

    async def _reading(self, index: str) -> _Index:
        st = self._state(index)
        if st.read_only and _now() - st.reloaded_at >= _FOLLOW_S:
            await self._write_thread(self._follow, st)
        return st

    async def count(self, index: str) -> int:
        return (await self._reading(index)).version.searcher.num_docs

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
        st = await self._reading(index)
        check_window(offset, limit)
        version = st.version
        version.active += 1
        # Alone, a search may spread a big result set's facet counting over the cores; beside other searches
        # the cores are busy already, and each extra group would run the query once more for nothing.
        alone = self._searching == 0
        self._searching += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._search_pool,
                self._search,
                st,
                version.searcher,
                query,
                tuple(filters),
                tuple(facets),
                sort,
                offset,
                limit,
                tuple(highlight),
                alone,
            )
        finally:
            self._searching -= 1
            version.active -= 1
            if version.retired and not version.active:
                version.drained.set()

    def _search(
        self,
        st: _Index,
        searcher: tantivy.Searcher,
        query: Node,
        filters: tuple[Node, ...],
        facets: tuple[Facet, ...],
        sort: Sort,
        offset: int,
        limit: int,
        highlight: tuple[str, ...],
        spread: bool = True,
    ) -> Result:
        compiler = _Compiler(st.schema, st.tschema)
        with _tantivy_errors():
            q = compiler.compile(query)
            if filters:
                clauses = [(Occur.Must, q)]
                clauses += [(Occur.Must, TQ.const_score_query(compiler.compile(f), 0.0)) for f in filters]
                q = TQ.boolean_query(clauses)
            order_field, order = self._sort(st, sort)
            for name in highlight:
                compiler.field(name, FieldKind.TEXT, use="highlight")
            aggs = self._aggregations(compiler, facets)
            kwargs: dict[str, Any] = {"count": True, "offset": offset}
            if order_field is not None:
                kwargs.update(order_by_field=order_field, order=order)
            found = searcher.search(q, max(limit, 1), **kwargs)
            counting: list[Any] = []
            facet_result: dict[str, Any] = {}
            if len(aggs) > 1 and spread and found.count >= _PARALLEL_FACETS:
                # A big result set: its facets are counted in groups, some on the facet pool while this thread
                # collects and highlights the hits and then counts the first group (tantivy lets go of the GIL,
                # so they share the cores). For a small one the hand-over would cost more than the counting.
                # A facet's columns (its slots) stay in one group: each group runs the query again.
                groups = [_merged(aggs[i::_FACET_GROUPS]) for i in range(min(_FACET_GROUPS, len(aggs)))]
                counting = [self._facet_pool.submit(searcher.aggregate, q, g) for g in groups[1:]]
                inline = groups[0]
            else:
                inline = _merged(aggs)
        hits: list[Hit] = []
        wanted = needles(st.schema, query) if highlight else {}  # the query's tokens, once for all hits
        for key, address in found.hits[:limit]:
            doc = searcher.doc(address)
            doc_id = doc.get_first(_ID)
            src = _source(doc.get_first(_SRC))
            stored = {name: src[name] for name in st.stored if name in src}
            marks = highlight_needles(st.schema, wanted, src, highlight) if wanted else {}
            score = float(key) if order_field is None else 0.0
            hits.append(Hit(id=doc_id, score=score, stored=stored, highlights=marks))
        with _tantivy_errors():
            if inline:
                facet_result.update(searcher.aggregate(q, inline))
            for future in counting:
                facet_result.update(future.result())
        return Result(total=found.count, hits=hits, facets=self._facets(st, facets, facet_result))

    def _sort(self, st: _Index, sort: Sort) -> tuple[str | None, tantivy.Order]:
        if not isinstance(sort, Sort) or sort.order == SortOrder.RELEVANCE:
            if not isinstance(sort, Sort):
                raise QueryError(f"sort must be a Sort, not {type(sort).__name__}")
            return None, tantivy.Order.Desc
        if sort.order not in (SortOrder.FIELD_ASC, SortOrder.FIELD_DESC):
            raise QueryError(f"unknown sort order {sort.order!r}")
        f = _Compiler(st.schema, st.tschema).field(sort.field, FieldKind.INTEGER, use="sort")
        if f.multi:
            raise QueryError(f"cannot sort by the multi-valued field {f.name!r}")
        return f.name, tantivy.Order.Asc if sort.order == SortOrder.FIELD_ASC else tantivy.Order.Desc

    @staticmethod
    def _aggregations(compiler: _Compiler, facets: tuple[Facet, ...]) -> list[dict[str, Any]]:
        """The terms aggregations of each facet (of size > 0): one, or one a column of a slotted field."""
        out: list[dict[str, Any]] = []
        for i, facet in enumerate(facets):
            f = compiler.facet_field(facet)
            if not facet.size:
                continue
            if f.facet_slots:
                # every bucket of every slot: a value's count is the sum of its counts in each
                every = {"size": _FACET_SEGMENT_SIZE, "segment_size": _FACET_SEGMENT_SIZE}
                aggs = {f"f{i}s{j}": {"terms": {"field": f"{f.name}{_SLOT}{j}", **every}} for j in range(f.facet_slots)}
                aggs[f"f{i}m"] = {"terms": {"field": f.name + _SLOT_MORE, **every}}
                out.append(aggs)
                continue
            # fetch more than asked so that ties at the cut are ordered by value, as Elasticsearch does
            size = min(_FACET_SEGMENT_SIZE, max(2 * facet.size, facet.size + 100))
            out.append({f"f{i}": {"terms": {"field": f.name, "size": size, "segment_size": _FACET_SEGMENT_SIZE}}})
        return out

    @staticmethod
    def _facets(st: _Index, facets: tuple[Facet, ...], raw: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for i, facet in enumerate(facets):
            f = st.fields[facet.field]
            if f.facet_slots:
                counts: dict[str, int] = {}
                for j in range(f.facet_slots):
                    for b in raw.get(f"f{i}s{j}", {}).get("buckets", ()):
                        if b["key"] != _NO_VALUE:
                            value = b["key"][len(_SLOT_VALUE) :]
                            counts[value] = counts.get(value, 0) + b["doc_count"]
                for b in raw.get(f"f{i}m", {}).get("buckets", ()):
                    counts[b["key"]] = counts.get(b["key"], 0) + b["doc_count"]
                pairs: Iterable[tuple[Any, int]] = counts.items()
            else:
                pairs = ((b["key"], b["doc_count"]) for b in raw.get(f"f{i}", {}).get("buckets", ()))
            out[facet.field] = facet_counts(f.kind, pairs, facet.size)
        return out

    # -------------------------------------------------------------------------------------- close

    async def close(self) -> None:
        if self._closed:
            return
        for st in list(self._indexes.values()):
            if st.closed or st.task is None:
                continue
            with contextlib.suppress(Exception):
                await self._call(st, "close")
            with contextlib.suppress(Exception):
                await st.task
        self._closed = True
        self._indexes.clear()
        self._write_pool.shutdown(wait=False)
        self._search_pool.shutdown(wait=False)
        self._facet_pool.shutdown(wait=False)


def _merged(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def _settle(future: asyncio.Future[Any] | None, result: Any, error: BaseException | None = None) -> None:
    if future is None or future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
