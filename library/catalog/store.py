"""Storing parsed records in batches: unchanged records cost one lookup, changed ones are clustered and saved.

One batch is one transaction. The caller gets back the works whose search
documents must be rebuilt; nothing here touches the search engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import JSONText, insert_many, new_id, utcnow
from library.catalog.clusters import match_key
from library.catalog.models import BibRecordRow, ClusterLog, ItemRow, Work, WorkIsbn
from library.catalog.records import BibRecord, Item, Name

Shipped = tuple[dict[str, Any], bytes | None, str, str, str, dict[tuple[str, str], tuple[str, str]] | None]


@dataclasses.dataclass
class Incoming:
    bib: BibRecord
    marc: bytes | None = None
    # to_json(bib), its JSON text, content_hash and match_key(bib), when a parse worker computed them
    data: dict[str, Any] | None = None
    text: str | None = None
    digest: str | None = None
    key: str | None = None
    # the search analysis of its text (``indexing.analysed``), when a parse worker computed it
    analysed: dict[tuple[str, str], tuple[str, str]] | None = None

    def shipped(self) -> Shipped:
        """What a parse worker sends: plain data (pickles fast) with what storing needs computed."""
        data = to_json(self.bib)
        text = _canonical(data)
        return data, self.marc, text, _digest(text), match_key(self.bib), self.analysed

    @classmethod
    def received(cls, shipped: Shipped) -> Incoming:
        data, marc, text, digest, key, analysed = shipped
        return cls(from_data(data), marc, data, text, digest, key, analysed)


@dataclasses.dataclass
class BatchResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    works: set[str] = dataclasses.field(default_factory=set)
    # What the indexer can take from here instead of reading it back: every record this batch wrote (record id →
    # the record, and → its work), the works it created (id → title, year) and their items (library, status).
    library: str = ""
    records: dict[str, BibRecord] = dataclasses.field(default_factory=dict)
    placed: dict[str, str] = dataclasses.field(default_factory=dict)
    created: dict[str, tuple[str, int | None]] = dataclasses.field(default_factory=dict)
    created_items: dict[str, list[tuple[str, str]]] = dataclasses.field(default_factory=dict)
    # the search analysis its parse worker sent with the records it wrote, for the engine's upsert
    analysed: dict[tuple[str, str], tuple[str, str]] = dataclasses.field(default_factory=dict)


_BIB_FIELDS = tuple(f.name for f in dataclasses.fields(BibRecord))
_NAME_FIELDS = tuple(f.name for f in dataclasses.fields(Name))
_ITEM_FIELDS = tuple(f.name for f in dataclasses.fields(Item))


def to_json(bib: BibRecord) -> dict[str, Any]:
    """``dataclasses.asdict(bib)``, ten times faster: the model is flat but for names, items and classifications."""
    data = {name: getattr(bib, name) for name in _BIB_FIELDS}
    data["names"] = tuple({k: getattr(n, k) for k in _NAME_FIELDS} for n in bib.names)
    data["items"] = tuple({k: getattr(i, k) for k in _ITEM_FIELDS} for i in bib.items)
    data["classifications"] = tuple(tuple(c) for c in bib.classifications)
    return data


_KNOWN = frozenset(_BIB_FIELDS)


def from_json(data: dict[str, Any]) -> BibRecord:
    values = dict(data)
    values["names"] = tuple(Name(**n) for n in data.get("names", ()))
    values["items"] = tuple(Item(**i) for i in data.get("items", ()))
    for key in ("isbns", "invalid_isbns", "issns", "subjects", "clc", "series"):
        values[key] = tuple(data.get(key, ()))
    values["classifications"] = tuple(tuple(c) for c in data.get("classifications", ()))
    return BibRecord(**{k: v for k, v in values.items() if k in _KNOWN})


def _instance(cls: type, values: dict[str, Any]) -> Any:
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def from_data(data: dict[str, Any]) -> BibRecord:
    """The record of ``to_json(bib)`` as produced in this or a parse worker process (tuples, every key present):
    ``from_json`` without the checks and the dataclass constructors, which cost more than parsing the record."""
    values = dict(data)
    values["names"] = tuple([_instance(Name, n) for n in data["names"]])
    values["items"] = tuple([_instance(Item, i) for i in data["items"]])
    return _instance(BibRecord, values)


def _canonical(data: dict[str, Any]) -> str:
    """The record's JSON as its content hash is taken of: keys sorted. Stored as it is when a worker made it."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def content_hash(data: dict[str, Any]) -> str:
    return _digest(_canonical(data))


def _newer(incoming: str | None, stored: str | None) -> bool:
    """MARC 005 stamps compare as strings (yyyymmddhhmmss.f); a record without one always counts as newer."""
    return not incoming or not stored or incoming >= stored


async def store_batch(session: AsyncSession, library: str, batch: Sequence[Incoming], *, actor: str) -> BatchResult:
    library = library.upper()
    result = BatchResult(library=library)
    # the last occurrence of a control number in one batch wins, as it would across batches
    unique: dict[str, Incoming] = {inc.bib.control_number: inc for inc in batch}
    numbers = list(unique)
    existing = {
        row.control_number: row
        for row in (
            await session.execute(
                select(
                    BibRecordRow.id,
                    BibRecordRow.control_number,
                    BibRecordRow.content_hash,
                    BibRecordRow.version,
                    BibRecordRow.work_id,
                    BibRecordRow.pinned,
                ).where(BibRecordRow.library == library, BibRecordRow.control_number.in_(numbers))
            )
        )
    }
    prepared: list[tuple[Incoming, dict[str, Any], str, str]] = []
    for number, inc in unique.items():
        data = inc.data if inc.data is not None else to_json(inc.bib)
        digest = inc.digest or content_hash(data)
        old = existing.get(number)
        if old is not None and (old.content_hash == digest or not _newer(inc.bib.version, old.version)):
            result.unchanged += 1
            continue
        prepared.append((inc, data, digest, inc.key or match_key(inc.bib)))
    if not prepared:
        return result

    isbns = {i for inc, _, _, _ in prepared for i in inc.bib.isbns}
    keys = {key for _, _, _, key in prepared}
    by_isbn: dict[str, str] = {}
    if isbns:
        rows = await session.execute(select(WorkIsbn.isbn, WorkIsbn.work_id).where(WorkIsbn.isbn.in_(isbns)))
        by_isbn = {isbn: work_id for isbn, work_id in rows}
    by_key: dict[str, str] = {}
    if keys:
        rows = await session.execute(select(Work.match_key, Work.id).where(Work.match_key.in_(keys)))
        for key, work_id in rows:
            by_key.setdefault(key, work_id)

    now = utcnow()
    new_works: list[dict[str, Any]] = []
    new_isbns: list[dict[str, Any]] = []
    new_records: list[dict[str, Any]] = []
    changed_records: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    changed_record_ids: list[str] = []

    for inc, data, digest, key in prepared:
        bib = inc.bib
        old = existing.get(bib.control_number)
        if old is not None and old.pinned:
            work_id, action, reason = old.work_id, "kept", "pinned by an administrator"
        else:
            work_id = next((by_isbn[i] for i in bib.isbns if i in by_isbn), None)
            action, reason = "joined", ""
            if work_id is not None:
                reason = "isbn " + next(i for i in bib.isbns if by_isbn.get(i) == work_id)
            elif key in by_key and not key.startswith("|"):
                work_id, reason = by_key[key], f"key {key}"
            else:
                work_id, action, reason = new_id(), "created", "no matching work"
                result.created[work_id] = (bib.title[:500], bib.year)
                new_works.append(
                    {
                        "id": work_id,
                        "title": bib.title[:500],
                        "first_author": (bib.first_author or "")[:300] or None,
                        "year": bib.year,
                        "match_key": key,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                by_key.setdefault(key, work_id)
        for isbn in bib.isbns:
            if isbn not in by_isbn:
                by_isbn[isbn] = work_id
                new_isbns.append({"isbn": isbn, "work_id": work_id})
        values = {
            "library": library,
            "control_number": bib.control_number,
            "dialect": bib.dialect,
            "version": bib.version,
            "content_hash": digest,
            "data": data if inc.text is None else JSONText(inc.text),
            "marc": inc.marc,
            "work_id": work_id,
            "deleted": bib.deleted,
            "updated_at": now,
        }
        if old is None:
            record_id = new_id()
            new_records.append({"id": record_id, "created_at": now, "pinned": False, **values})
            result.added += 1
        else:
            record_id = old.id
            changed_records.append({"id": record_id, **values})
            changed_record_ids.append(record_id)
            result.updated += 1
            result.works.add(old.work_id)
        if bib.deleted:
            result.deleted += 1
        result.works.add(work_id)
        result.records[record_id] = bib
        if inc.analysed:
            result.analysed.update(inc.analysed)
        result.placed[record_id] = work_id
        if old is None or old.work_id != work_id:
            logs.append(
                {
                    "id": new_id(),
                    "work_id": work_id,
                    "record_id": record_id,
                    "action": action if old is None else "moved",
                    "reason": reason[:300],
                    "actor": actor,
                    "at": now,
                }
            )
        for item in () if bib.deleted else bib.items:
            items.append(
                {
                    "id": new_id(),
                    "library": (item.library or library).upper(),
                    "barcode": item.barcode,
                    "record_id": record_id,
                    "work_id": work_id,
                    "location": item.location,
                    "call_number": item.call_number,
                    "item_type": item.item_type,
                    "status": item.status,
                    "updated_at": now,
                }
            )

    # executemany at the driver's cost: SQLAlchemy's per-row parameter processing costs more than the rows
    await insert_many(session, _WORKS, new_works)
    await insert_many(session, _WORK_ISBNS, new_isbns)
    await insert_many(session, _RECORDS, new_records)
    if changed_records:
        await session.execute(update(BibRecordRow), changed_records)
    await insert_many(session, _CLUSTER_LOG, logs)
    await _store_items(session, changed_record_ids, items, result)
    return result


_WORKS = Work.__table__
_WORK_ISBNS = WorkIsbn.__table__
_RECORDS = BibRecordRow.__table__
_CLUSTER_LOG = ClusterLog.__table__
_ITEMS = ItemRow.__table__


async def _store_items(
    session: AsyncSession, record_ids: list[str], items: list[dict[str, Any]], result: BatchResult
) -> None:
    """Items keep their circulation status across reloads; items gone from a record are removed.

    ``record_ids``: the batch's records that were stored before (a new record has no items yet).
    """
    keys = {(i["library"], i["barcode"]) for i in items}
    current = {}
    if record_ids:
        rows = await session.execute(
            select(ItemRow.id, ItemRow.library, ItemRow.barcode, ItemRow.status, ItemRow.work_id).where(
                ItemRow.record_id.in_(record_ids)
            )
        )
        current = {(r.library, r.barcode): r for r in rows}
    barcodes = list({b for _, b in keys})
    elsewhere = {}
    if barcodes:
        rows = await session.execute(
            select(ItemRow.id, ItemRow.library, ItemRow.barcode, ItemRow.status, ItemRow.work_id).where(
                ItemRow.barcode.in_(barcodes)
            )
        )
        elsewhere = {(r.library, r.barcode): r for r in rows if (r.library, r.barcode) in keys}
    gone = [r.id for k, r in current.items() if k not in keys]
    if gone:
        result.works.update(r.work_id for k, r in current.items() if k not in keys)
        await session.execute(delete(ItemRow).where(ItemRow.id.in_(gone)))
    fresh, changed = [], []
    seen: set[tuple[str, str]] = set()
    for item in items:
        k = (item["library"], item["barcode"])
        if k in seen:
            continue
        seen.add(k)
        old = current.get(k) or elsewhere.get(k)
        if old is None:
            fresh.append(item)
        else:
            result.works.add(old.work_id)
            changed.append({**item, "id": old.id, "status": old.status})
    await insert_many(session, _ITEMS, fresh)
    if changed:
        await session.execute(update(ItemRow), changed)
    if result.created:
        for item in fresh + changed:
            if item["work_id"] in result.created:
                result.created_items.setdefault(item["work_id"], []).append((item["library"], item["status"]))
