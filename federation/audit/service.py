"""Appending to and verifying the hash-chained audit trail.

Each entry's hash is an HMAC over its own fields and the previous entry's hash,
keyed with a secret the database does not hold: editing, deleting or
inserting a row breaks the chain at that row, and the chain cannot be re-forged
without the key. Appends are serialised (an advisory lock on PostgreSQL; SQLite
has one writer) so the chain never forks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Engine, Insert, bindparam, exists, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.models import AuditEntry
from federation.db import utcnow
from federation.identity.idnumber import mask_id_numbers_in_text

GENESIS = "0" * 64
_PG_LOCK_KEY = 0x7C17_A0D1  # any constant, the same in every process


class AuditKey:
    """The key that seals the chain, derived from the index secret."""

    def __init__(self, secret: bytes) -> None:
        self.key = hashlib.sha256(b"twincity-audit-chain\x00" + secret).digest()


_OUR_ID = re.compile(r"[0-9a-f]{32}")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        # our own row ids are 32 hex digits; an 18-digit run inside one can pass the ID checksum by chance
        if _OUR_ID.fullmatch(value):
            return value
        return mask_id_numbers_in_text(value)
    if isinstance(value, dict):
        return {mask_id_numbers_in_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _text(value: str | None, limit: int) -> str | None:
    """Free text from outside (a caller's name, an address, a stated purpose): masked, and cut to its column
    so an over-long value is not refused by PostgreSQL after SQLite took it."""
    if value is None:
        return None
    cleaned = mask_id_numbers_in_text(value)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def _canonical(e: AuditEntry) -> bytes:
    fields = {
        "seq": e.seq,
        "at": e.at.isoformat(timespec="microseconds"),
        "actor": e.actor,
        "actor_institution": e.actor_institution,
        "action": e.action,
        "subject_person_id": e.subject_person_id,
        "purpose": e.purpose,
        "outcome": e.outcome,
        "client_address": e.client_address,
        "details": e.details,
        "prev_hash": e.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def seal(key: AuditKey, e: AuditEntry) -> str:
    return hmac.new(key.key, _canonical(e), hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class Record:
    """What to write down. No clear ID number is kept: ``details`` and the free-text fields are masked on the
    way in."""

    action: str
    actor: str
    outcome: str = "ok"
    subject_person_id: str | None = None
    purpose: str | None = None
    actor_institution: str | None = None
    client_address: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


# The chain's head as this process last appended it, per engine: (seq, hash). Only a hint, checked by the insert
# itself (see ``append``), so a head another process moved, or a transaction that rolled back, costs a re-read.
_heads: weakref.WeakKeyDictionary[Engine, tuple[int, str]] = weakref.WeakKeyDictionary()


_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def _guarded_insert() -> Insert:
    """``append``'s usual statement, built once: the entry's values (``v_<column>``) inserted only while the entry
    ``h_seq`` with hash ``h_hash`` is the chain's head."""
    table = AuditEntry.__table__
    # "nothing after the head" as the highest seq, not as NOT EXISTS (seq > :h_seq): PostgreSQL plans a prepared
    # statement once for every parameter value, and for a range on an unknown value that generic plan is a scan
    # of the whole table, at every append; max(seq) is one step down the primary key whatever the value.
    head = select(func.max(table.c.seq)).scalar_subquery()
    guard = select(*(bindparam(f"v_{c.key}", type_=c.type) for c in table.columns)).where(
        exists().where(table.c.seq == bindparam("h_seq"), table.c.hash == bindparam("h_hash")),
        head == bindparam("h_seq"),
    )
    return insert(table).from_select([c.key for c in table.columns], guard)


_GUARDED_INSERT = _guarded_insert()


async def append(session: AsyncSession, key: AuditKey, record: Record) -> AuditEntry:
    """Append an entry under the chain's lock (the caller commits; the lock is held until then).

    The usual step is one statement: an ``INSERT ... SELECT`` that writes the entry only when the head this process
    remembers is still the chain's head (that entry exists with that hash, and nothing after it). Otherwise (another
    process appended, the remembered entry was rolled back, a cold start) the head is read and the entry inserted.
    The entry's seal needs the previous hash and a key the database does not hold, so it is made here either way.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        await session.execute(_LOCK, {"k": _PG_LOCK_KEY})
    table = AuditEntry.__table__
    head = _heads.get(bind)
    if head is not None:
        entry = _entry(key, record, head[0] + 1, head[1])
        params = {f"v_{k}": v for k, v in _values(entry).items()}
        params["h_seq"], params["h_hash"] = head
        res = await session.execute(_GUARDED_INSERT, params)
        if res.rowcount == 1:
            _heads[bind] = (entry.seq, entry.hash)
            return entry
    last = (
        await session.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1))
    ).first()
    entry = _entry(key, record, (last.seq + 1) if last else 1, last.hash if last else GENESIS)
    await session.execute(insert(table).values(**_values(entry)))
    _heads[bind] = (entry.seq, entry.hash)
    return entry


def _entry(key: AuditKey, record: Record, seq: int, prev_hash: str) -> AuditEntry:
    entry = AuditEntry(
        seq=seq,
        at=utcnow(),
        actor=_text(record.actor, 200),
        actor_institution=_text(record.actor_institution, 32),
        action=record.action,
        subject_person_id=record.subject_person_id,
        purpose=_text(record.purpose, 40),
        outcome=record.outcome,
        client_address=_text(record.client_address, 64),
        details=_clean(record.details),
        prev_hash=prev_hash,
    )
    entry.hash = seal(key, entry)
    return entry


def _values(entry: AuditEntry) -> dict[str, Any]:
    return {c.key: getattr(entry, c.key) for c in AuditEntry.__table__.columns}


@dataclasses.dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None


async def _entries(session: AsyncSession, batch: int = 2000) -> AsyncIterator[AuditEntry]:
    after = 0
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        after = rows[-1].seq
        session.expunge_all()


async def verify(session: AsyncSession, key: AuditKey) -> Verification:
    """Walk the whole chain; name the first entry that was edited, removed or inserted."""
    expected_seq, prev, checked = 1, GENESIS, 0
    async for e in _entries(session):
        if e.seq != expected_seq:
            return Verification(False, checked, expected_seq, f"entry {expected_seq} is missing (next is {e.seq})")
        if e.prev_hash != prev:
            return Verification(False, checked, e.seq, "its link to the previous entry is broken")
        if not hmac.compare_digest(seal(key, e), e.hash):
            return Verification(False, checked, e.seq, "its content does not match its seal (edited)")
        prev, expected_seq, checked = e.hash, e.seq + 1, checked + 1
    return Verification(True, checked)


async def entries_about(
    session: AsyncSession, person_id: str, *, limit: int = 100, before: int | None = None
) -> list[AuditEntry]:
    q = select(AuditEntry).where(AuditEntry.subject_person_id == person_id)
    if before is not None:
        q = q.where(AuditEntry.seq < before)
    return list((await session.execute(q.order_by(AuditEntry.seq.desc()).limit(limit))).scalars())
