"""Appending to and verifying the hash-chained audit trail.

Each entry's hash is an HMAC over its own fields and the previous entry's hash,
keyed with a secret the database does not hold: editing, deleting or
inserting a row breaks the chain at that row, and the chain cannot be re-forged
without the key.

The trail is several chains. An append holds its chain's lock (an advisory
lock on PostgreSQL; SQLite has one writer and one chain) until its transaction
commits, so the chain never forks; with one chain every audited write on
PostgreSQL waited for the one before it to commit, and twenty concurrent
checkouts queued there. Each transaction now takes a chain no other one holds.
A chain's tail, like the single chain's before, can be cut without a trace in
the chain itself: ``verify`` reports every chain's head so that they can be
kept elsewhere and compared.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import json
import random
import re
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Insert, bindparam, exists, func, insert, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.models import AuditEntry
from federation.db import DomainEvent, json_dumps, new_id, utcnow
from federation.direct import Statement
from federation.identity.idnumber import mask_id_numbers_in_text

GENESIS = "0" * 64
# Chains that writers on PostgreSQL spread over: more than the connections one process writes on at once, so a
# process's transactions never wait for each other's chain, and few enough that a verification walks them at once.
CHAINS = 32
_PG_LOCK_KEY = 0x7C17_A0D1  # chain 0's lock, the single chain's before there were more; chain k's: k * 2**32 more


def _lock_key(chain: int) -> int:
    return _PG_LOCK_KEY + (chain << 32)


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
    """What an entry's seal covers. Its place in its chain is sealed under the name "seq", which it had when the
    trail was one chain (there ``link`` equals ``seq``), and a chain other than 0 is named: entries sealed then
    verify unchanged."""
    fields = {
        "seq": e.link,
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
    if e.chain:
        fields["chain"] = e.chain
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


class _Chains:
    """This process's view of the chains on one engine: the heads it last appended (chain -> (link, hash); only
    hints, checked by the insert itself, see ``append``, so a head another process moved, or a transaction that
    rolled back, costs a re-read); which chains its open transactions hold; and the order it tries the others in:
    the one released last first (its head is still a good hint), those another process held last."""

    def __init__(self) -> None:
        self.heads: dict[int, tuple[int, str]] = {}
        self.order: deque[int] = deque(random.sample(range(CHAINS), CHAINS))  # each process starts elsewhere
        self.held: Counter[int] = Counter()

    def free(self) -> list[int]:
        return [c for c in self.order if not self.held[c]]

    def take(self, chain: int) -> None:
        self.held[chain] += 1

    def release(self, chain: int) -> None:
        self.held[chain] -= 1
        self.order.remove(chain)
        self.order.appendleft(chain)

    def busy_elsewhere(self, chain: int) -> None:
        self.order.remove(chain)
        self.order.append(chain)


_chains: weakref.WeakKeyDictionary[Engine, _Chains] = weakref.WeakKeyDictionary()


def _chains_of(bind: Engine) -> _Chains:
    chains = _chains.get(bind)
    if chains is None:
        chains = _chains[bind] = _Chains()
    return chains


_TRY_LOCK = Statement(text("SELECT pg_try_advisory_xact_lock(:k)"))
_LOCK = Statement(text("SELECT pg_advisory_xact_lock(:k)"))
# the same, writing the transaction's outbox rows on the way: one round trip for both
_WITH_OUTBOX = """WITH outbox_rows AS (
    INSERT INTO outbox (id, topic, payload, created_at, attempts)
    SELECT u.id, u.topic, CAST(u.payload AS JSON), u.created_at, 0
    FROM unnest(
        CAST(:ids AS VARCHAR[]), CAST(:topics AS VARCHAR[]), CAST(:payloads AS TEXT[]), CAST(:ats AS TIMESTAMPTZ[])
    ) AS u (id, topic, payload, created_at)
) """
_TRY_LOCK_WITH_OUTBOX = Statement(text(_WITH_OUTBOX + "SELECT pg_try_advisory_xact_lock(:k)"))
_LOCK_WITH_OUTBOX = Statement(text(_WITH_OUTBOX + "SELECT pg_advisory_xact_lock(:k)"))
Events = Callable[[], Sequence[DomainEvent]]


async def _lock(session: AsyncSession, chain: int, events: Events | None, *, wait: bool) -> bool:
    """Lock ``chain`` (``wait``: until it is free; else only if it is free now), writing the events ``events`` hands
    over (those not yet in the outbox) with the same statement."""
    params: dict[str, Any] = {"k": _lock_key(chain)}
    unsent = events() if events is not None else ()
    if unsent:
        params.update(
            ats=[utcnow() for _ in unsent],  # one by one, as the outbox's own INSERT stamps them: the relay's order
            ids=[new_id() for _ in unsent],
            topics=[ev.topic for ev in unsent],
            payloads=[json_dumps(ev.payload) for ev in unsent],
        )
        statement = _LOCK_WITH_OUTBOX if wait else _TRY_LOCK_WITH_OUTBOX
    else:
        statement = _LOCK if wait else _TRY_LOCK
    locked = (await statement.run(session, params)).scalar()
    return wait or bool(locked)


async def take_chain(session: AsyncSession, events: Events | None = None) -> tuple[int, Callable[[], None]]:
    """A chain for this transaction's entries, locked until it ends, and what to call when it has ended.

    PostgreSQL: the first chain of this process's order that no transaction of this process holds and whose lock
    is free, one statement per try (usually one: other processes start their order elsewhere); when every one is
    taken, the least held one, waiting for its lock. The first statement sent also writes the outbox rows of what
    ``events`` hands over (``UnitOfWork.unsent_events``). SQLite: chain 0, under the database's one writer, and no
    statement (the events are left to the unit of work)."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return 0, _nothing
    chains = _chains_of(bind)
    for chain in chains.free():
        if chains.held[chain]:  # taken by a transaction of this process while this one tried another
            continue
        chains.take(chain)  # before the await: a concurrent transaction of this process tries another one
        try:
            locked = await _lock(session, chain, events, wait=False)
        except BaseException:
            chains.held[chain] -= 1
            raise
        if locked:
            return chain, functools.partial(chains.release, chain)
        chains.held[chain] -= 1
        chains.busy_elsewhere(chain)
    chain = min(chains.order, key=lambda c: chains.held[c])
    chains.take(chain)
    try:
        await _lock(session, chain, events, wait=True)
    except BaseException:
        chains.release(chain)
        raise
    return chain, functools.partial(chains.release, chain)


def _nothing() -> None:
    return None


_SEALED_COLUMNS = tuple(c for c in AuditEntry.__table__.columns if c.key != "seq")  # seq: the database's


def _guarded_insert() -> Insert:
    """``append``'s usual statement, built once: the entry's values (``v_<column>``) inserted only while the entry
    ``h_link`` of chain ``h_chain``, with hash ``h_hash``, is that chain's head."""
    table = AuditEntry.__table__
    # "nothing after the head" as the chain's highest link, not as NOT EXISTS (link > :h_link): PostgreSQL plans a
    # prepared statement once for every parameter value, and for a range on an unknown value that generic plan is
    # a scan of the chain, at every append; max(link) is one step down the (chain, link) index whatever the value.
    head = select(func.max(table.c.link)).where(table.c.chain == bindparam("h_chain")).scalar_subquery()
    guard = select(*(bindparam(f"v_{c.key}", type_=c.type) for c in _SEALED_COLUMNS)).where(
        exists().where(
            table.c.chain == bindparam("h_chain"),
            table.c.link == bindparam("h_link"),
            table.c.hash == bindparam("h_hash"),
        ),
        head == bindparam("h_link"),
    )
    return insert(table).from_select([c.key for c in _SEALED_COLUMNS], guard)


_GUARDED_INSERT = Statement(_guarded_insert())


async def append(session: AsyncSession, key: AuditKey, record: Record, chain: int = 0) -> AuditEntry:
    """Append an entry to ``chain``, whose lock the caller holds (``take_chain``; the caller commits).

    The usual step is one statement: an ``INSERT ... SELECT`` that writes the entry only when the head this process
    remembers is still the chain's head (that entry exists with that hash, and nothing after it). Otherwise (another
    process appended, the remembered entry was rolled back, a cold start) the head is read and the entry inserted.
    The entry's seal needs the previous hash and a key the database does not hold, so it is made here either way.
    """
    heads = _chains_of(session.get_bind()).heads
    head = heads.get(chain)
    if head is not None:
        entry = _entry(key, record, chain, head[0] + 1, head[1])
        params = {f"v_{k}": v for k, v in _values(entry).items()}
        params["h_chain"], params["h_link"], params["h_hash"] = chain, *head
        res = await _GUARDED_INSERT.run(session, params)
        if res.rowcount == 1:
            heads[chain] = (entry.link, entry.hash)
            return entry
    last = (
        await session.execute(
            select(AuditEntry.link, AuditEntry.hash)
            .where(AuditEntry.chain == chain)
            .order_by(AuditEntry.link.desc())
            .limit(1)
        )
    ).first()
    entry = _entry(key, record, chain, (last.link + 1) if last else 1, last.hash if last else GENESIS)
    await session.execute(insert(AuditEntry.__table__).values(**_values(entry)))
    heads[chain] = (entry.link, entry.hash)
    return entry


def _entry(key: AuditKey, record: Record, chain: int, link: int, prev_hash: str) -> AuditEntry:
    entry = AuditEntry(
        chain=chain,
        link=link,
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
    return {c.key: getattr(entry, c.key) for c in _SEALED_COLUMNS}


@dataclasses.dataclass(frozen=True)
class Head:
    """The last entry of a chain: ``link`` entries long, ending in ``hash``."""

    chain: int
    link: int
    hash: str


@dataclasses.dataclass(frozen=True)
class Verification:
    """``first_broken_seq``: the first entry found edited, forged or out of its chain (for a removed entry, the one
    after it in its chain); ``chain``: its chain. ``heads``: every chain's last entry, when the trail is intact."""

    ok: bool
    checked: int
    first_broken_seq: int | None = None
    reason: str | None = None
    chain: int | None = None
    heads: tuple[Head, ...] = ()


async def _entries(session: AsyncSession, batch: int = 2000) -> AsyncIterator[AuditEntry]:
    """Every entry, chain by chain, each chain in its order."""
    after = (-1, 0)
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEntry)
                    .where(tuple_(AuditEntry.chain, AuditEntry.link) > tuple_(*after))
                    .order_by(AuditEntry.chain, AuditEntry.link)
                    .limit(batch)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        after = (rows[-1].chain, rows[-1].link)
        session.expunge_all()


async def verify(session: AsyncSession, key: AuditKey) -> Verification:
    """Walk every chain; name the first entry that was edited, removed or inserted."""
    heads: list[Head] = []
    chain, expected, prev, checked = None, 1, GENESIS, 0
    async for e in _entries(session):
        if e.chain != chain:
            if chain is not None:
                heads.append(Head(chain, expected - 1, prev))
            chain, expected, prev = e.chain, 1, GENESIS
        if not 0 <= e.chain < CHAINS:
            return Verification(False, checked, e.seq, f"it is in chain {e.chain}, which is not one of ours", e.chain)
        if e.link != expected:
            reason = f"entry {expected} of chain {e.chain} is missing (the next in it is {e.link}, seq {e.seq})"
            return Verification(False, checked, e.seq, reason, e.chain)
        if e.prev_hash != prev:
            return Verification(False, checked, e.seq, "its link to the previous entry is broken", e.chain)
        if not hmac.compare_digest(seal(key, e), e.hash):
            return Verification(False, checked, e.seq, "its content does not match its seal (edited)", e.chain)
        prev, expected, checked = e.hash, e.link + 1, checked + 1
    if chain is not None:
        heads.append(Head(chain, expected - 1, prev))
    return Verification(True, checked, heads=tuple(heads))


async def entries_about(
    session: AsyncSession, person_id: str, *, limit: int = 100, before: int | None = None
) -> list[AuditEntry]:
    q = select(AuditEntry).where(AuditEntry.subject_person_id == person_id)
    if before is not None:
        q = q.where(AuditEntry.seq < before)
    return list((await session.execute(q.order_by(AuditEntry.seq.desc()).limit(limit))).scalars())
