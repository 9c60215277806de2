"""The audit trail's hash chain: verification passes on an untouched trail and names the first entry that was edited,
removed or forged by hand in the database; the database itself refuses updates and deletes."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Sequence

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from federation import demo as demo_world
from federation.audit import service as audit_service
from federation.audit.models import AuditEntry
from federation.audit.service import Record, verify
from federation.extensions import build_services
from federation.services import Services
from tests.conftest import token_for

WANG = next(r for r in demo_world.RESIDENTS if r.name == "王芳")
LI = next(r for r in demo_world.RESIDENTS if r.name == "李娜")

SQLITE_TRIGGERS = {
    "audit_entries_no_update": "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END",
    "audit_entries_no_delete": "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END",
}


async def append(svc: Services, n: int) -> list[int]:
    async with svc.db.uow() as uow:
        for i in range(n):
            details = {"i": i, "note": f"entry {i}", "nested": {"list": [1, "two", None, 2.5]}, "中": "文"}
            await svc.audit(uow, Record(action="test.event", actor="staff:tester@CQL", details=details))
        await uow.commit()
    async with svc.db.reader() as s:
        return list((await s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq))).scalars())


async def check(svc: Services):  # noqa: ANN201
    async with svc.db.reader() as s:
        return await verify(s, svc.audit_key)


async def by_hand(svc: Services, statements: Sequence[tuple[str, dict]]) -> None:
    """Run SQL the way someone with database access would, with the append-only triggers out of the way."""
    async with svc.db.engine.begin() as conn:
        if svc.db.is_sqlite:
            for name in SQLITE_TRIGGERS:
                await conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            await conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
        for sql, params in statements:
            await conn.execute(text(sql), params)
        if svc.db.is_sqlite:
            for ddl in SQLITE_TRIGGERS.values():
                await conn.execute(text(ddl))
        else:
            await conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only"))


async def test_untouched_trail_verifies(svc: Services) -> None:
    assert (await check(svc)).ok  # an empty trail too
    seqs = await append(svc, 6)
    assert seqs == [1, 2, 3, 4, 5, 6]
    result = await check(svc)
    assert (result.ok, result.checked, result.first_broken_seq, result.reason) == (True, 6, None, None)
    # appends in later transactions continue a chain, each chain links from its first entry to its head
    await append(svc, 3)
    assert (await check(svc)).checked == 9
    async with svc.db.reader() as s:
        rows = list((await s.execute(select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.link))).scalars())
    chains: dict[int, list[AuditEntry]] = {}
    for row in rows:
        chains.setdefault(row.chain, []).append(row)
    for chain in chains.values():
        assert [e.link for e in chain] == list(range(1, len(chain) + 1))
        assert chain[0].prev_hash == "0" * 64
        assert all(b.prev_hash == a.hash for a, b in zip(chain, chain[1:], strict=False))
    heads = (await check(svc)).heads
    assert {(h.chain, h.link, h.hash) for h in heads} == {(c, len(es), es[-1].hash) for c, es in chains.items()}


async def test_edited_details_name_the_entry(svc: Services) -> None:
    await append(svc, 6)
    await by_hand(svc, [("UPDATE audit_entries SET details = :d WHERE seq = 4", {"d": json.dumps({"i": 99})})])
    result = await check(svc)
    assert not result.ok
    assert result.first_broken_seq == 4
    assert "edited" in (result.reason or "")
    assert result.checked == 3


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "staff:someone-else@CQL"),
        ("action", "test.other"),
        ("outcome", "refused"),
        ("subject_person_id", "f" * 32),
        ("client_address", "10.0.0.1"),
    ],
)
async def test_any_edited_column_names_the_entry(svc: Services, column: str, value: str) -> None:
    await append(svc, 4)
    await by_hand(svc, [(f"UPDATE audit_entries SET {column} = :v WHERE seq = 2", {"v": value})])  # noqa: S608
    result = await check(svc)
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "edited" in (result.reason or "")


async def test_edited_link_names_the_entry(svc: Services) -> None:
    await append(svc, 4)
    await by_hand(svc, [("UPDATE audit_entries SET prev_hash = :h WHERE seq = 3", {"h": "a" * 64})])
    result = await check(svc)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "link" in (result.reason or "")


async def test_deleted_middle_entry_is_named(svc: Services) -> None:
    await append(svc, 6)
    await by_hand(svc, [("DELETE FROM audit_entries WHERE seq = 3", {})])
    result = await check(svc)
    assert not result.ok
    assert result.first_broken_seq == 4  # the entry after the gap: the removed one's place is named in the reason
    assert f"entry 3 of chain {result.chain} is missing" in (result.reason or "")
    assert result.checked == 2


async def test_deleted_first_entry_is_named(svc: Services) -> None:
    await append(svc, 3)
    await by_hand(svc, [("DELETE FROM audit_entries WHERE seq = 1", {})])
    result = await check(svc)
    assert (result.ok, result.first_broken_seq, result.checked) == (False, 2, 0)
    assert f"entry 1 of chain {result.chain} is missing" in (result.reason or "")


async def test_entry_forged_without_the_key_is_named(svc: Services) -> None:
    await append(svc, 3)
    async with svc.db.reader() as s:
        last = (await s.execute(select(AuditEntry).where(AuditEntry.seq == 3))).scalar_one()
    # a well-formed row chained to the last one, sealed with a guessed key
    forged = hmac.new(b"guess", b"anything", hashlib.sha256).hexdigest()
    await by_hand(
        svc,
        [
            (
                "INSERT INTO audit_entries (seq, chain, link, at, actor, actor_institution, action,"
                " subject_person_id, purpose, outcome, client_address, details, prev_hash, hash) VALUES (4, :chain,"
                " :link, :at, 'staff:x@CQL', NULL, 'test.event', NULL, NULL, 'ok', NULL, :d, :prev, :hash)",
                {
                    "chain": last.chain,
                    "link": last.link + 1,
                    "at": last.at,
                    "d": json.dumps({}),
                    "prev": last.hash,
                    "hash": forged,
                },
            )
        ],
    )
    result = await check(svc)
    assert (result.ok, result.first_broken_seq) == (False, 4)


async def test_database_refuses_update_and_delete(svc: Services) -> None:
    await append(svc, 3)
    for sql in ("UPDATE audit_entries SET actor = 'x' WHERE seq = 2", "DELETE FROM audit_entries WHERE seq = 2"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with svc.db.engine.begin() as conn:
                await conn.execute(text(sql))
    # the ORM meets the same refusal
    async with svc.db.uow() as uow:
        entry = await uow.session.get(AuditEntry, 1)
        assert entry is not None
        entry.actor = "staff:someone@CQL"
        with pytest.raises(DBAPIError, match="append-only"):
            await uow.commit()
    result = await check(svc)
    assert (result.ok, result.checked) == (True, 3)


async def test_id_numbers_never_reach_the_trail_in_clear(svc: Services) -> None:
    number = WANG.id_number
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="test.event",
                actor=f"login:{number}",
                purpose=f"p {number}",
                details={"text": f"looked up {number}", "list": [number], number: "as a key"},
            ),
        )
        await uow.commit()
    async with svc.db.reader() as s:
        raw = repr((await s.execute(text("SELECT * FROM audit_entries"))).all())
    assert number not in raw
    assert f"{number[:6]}********{number[-4:]}" in raw
    assert (await check(svc)).ok


async def test_over_long_free_text_is_cut_to_fit(svc: Services) -> None:
    async with svc.db.uow() as uow:
        await svc.audit(uow, Record(action="test.event", actor="x" * 500, client_address="y" * 200))
        await uow.commit()
    async with svc.db.reader() as s:
        stored = (await s.execute(select(AuditEntry))).scalar_one()
    assert len(stored.actor) == 200
    assert len(stored.client_address or "") == 64
    assert (await check(svc)).ok


async def test_admin_verification_over_http(client: TestClient, demo: Services) -> None:
    admin = await token_for(client, "admin@federation")
    body = await (await client.get("/api/v1/audit/verification", headers=admin)).json()
    assert body["ok"] is True
    assert body["checked"] > 0
    assert sum(h["link"] for h in body["heads"]) == body["checked"]
    target = body["checked"] // 2
    await by_hand(demo, [("UPDATE audit_entries SET outcome = 'edited' WHERE seq = :s", {"s": target})])
    body = await (await client.get("/api/v1/audit/verification", headers=admin)).json()
    assert (body["ok"], body["first_broken_seq"]) == (False, target)
    assert "edited" in body["reason"]


async def person_id(client: TestClient, headers: dict[str, str]) -> str:
    return (await (await client.get("/api/v1/me", headers=headers)).json())["person_id"]


async def test_access_log_lists_only_entries_about_me(client: TestClient, demo: Services) -> None:
    wang = await token_for(client, WANG.id_number)
    li = await token_for(client, LI.id_number)
    wang_id, li_id = await person_id(client, wang), await person_id(client, li)
    doctor = await token_for(client, "doctor@SCH1")
    for who in (WANG, LI, WANG):
        resp = await client.post(
            "/api/v1/identity/lookups",
            json={"identifier": {"type": "id_number", "value": who.id_number}, "purpose": "treatment"},
            headers=doctor,
        )
        assert resp.status == 200, await resp.text()

    resp = await client.get("/api/v1/me/access-log", headers=wang)
    assert resp.status == 200
    items = (await resp.json())["items"]
    lookups = [e for e in items if e["action"] == "identity.lookup"]
    assert [(e["actor"], e["actor_institution"], e["purpose"]) for e in lookups] == [
        ("staff:doctor@SCH1", "SCH1", "treatment")
    ] * 2
    assert [e["seq"] for e in items] == sorted((e["seq"] for e in items), reverse=True)

    async with demo.db.reader() as s:
        subjects = dict((await s.execute(select(AuditEntry.seq, AuditEntry.subject_person_id))).all())
    assert {subjects[e["seq"]] for e in items} == {wang_id}
    li_items = (await (await client.get("/api/v1/me/access-log", headers=li)).json())["items"]
    assert {subjects[e["seq"]] for e in li_items} == {li_id}
    assert len([e for e in li_items if e["action"] == "identity.lookup"]) == 1
    assert not {e["seq"] for e in items} & {e["seq"] for e in li_items}
    # nothing in the log shows the number in clear
    assert WANG.id_number not in json.dumps(items, ensure_ascii=False)


async def test_access_log_pages(client: TestClient, demo: Services) -> None:
    wang = await token_for(client, WANG.id_number)
    doctor = await token_for(client, "doctor@CQH1")
    for _ in range(3):
        await client.post(
            "/api/v1/identity/lookups",
            json={"identifier": {"type": "id_number", "value": WANG.id_number}},
            headers=doctor,
        )
    everything = (await (await client.get("/api/v1/me/access-log?limit=500", headers=wang)).json())["items"]
    page = await (await client.get("/api/v1/me/access-log?limit=2", headers=wang)).json()
    assert [e["seq"] for e in page["items"]] == [e["seq"] for e in everything[:2]]
    assert page["next_before"] == everything[1]["seq"]
    rest = await (
        await client.get(f"/api/v1/me/access-log?limit=500&before={page['next_before']}", headers=wang)
    ).json()
    assert [e["seq"] for e in rest["items"]] == [e["seq"] for e in everything[2:]]
    assert rest["next_before"] is None


def test_our_hex_ids_are_never_mistaken_for_id_numbers():
    from federation.audit.service import _clean
    from federation.identity.idnumber import check_digit

    first17 = next(f"1101051949123100{i}" for i in range(10) if check_digit(f"1101051949123100{i}") != "X")
    number = first17 + check_digit(first17)
    hex_id = "ab" + number.lower() + "cdef0123456a"
    assert len(hex_id) == 32
    assert _clean({"loan": hex_id}) == {"loan": hex_id}
    assert number not in str(_clean({"note": f"reader {number}"}))


async def test_the_usual_append_never_scans_the_trail(svc: Services) -> None:
    """Every write appends an entry: its guard must cost one step down the primary key however long the trail is.

    PostgreSQL plans a statement the driver prepared once for all parameter values (the generic plan, used after
    a few executions); that plan is what every append runs, so it is the one checked here."""
    from federation.audit import service as audit

    if svc.db.is_sqlite:
        pytest.skip("PostgreSQL's generic plans")
    async with svc.db.uow() as uow:
        for i in range(3):
            await svc.audit(uow, Record(action="test.plan", actor=f"tester-{i}"))
        await uow.commit()
    compiled = audit._GUARDED_INSERT.statement.compile(dialect=svc.db.engine.dialect)
    nulls = ", ".join(["NULL"] * len(compiled.positiontup or ()))
    async with svc.db.engine.connect() as conn:
        await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        await conn.exec_driver_sql(f"PREPARE guarded_append AS {compiled.string}")
        plan = "\n".join(r[0] for r in (await conn.exec_driver_sql(f"EXPLAIN EXECUTE guarded_append({nulls})")))
        await conn.rollback()
    assert "Seq Scan on audit_entries" not in plan, plan


async def audited(svc: Services, action: str, *, hold: float = 0.0) -> None:
    """One audited transaction; ``hold``: seconds it keeps its chain after appending, before it commits."""
    async with svc.db.uow() as uow:
        await svc.audit(uow, Record(action=action, actor="staff:tester@CQL"))
        if hold:
            uow.before_commit(lambda: asyncio.sleep(hold))  # runs after the audit's hook: the chain is held
        await uow.commit()


async def test_writers_do_not_wait_for_each_others_chain(svc: Services) -> None:
    """While one transaction holds a chain until its commit, another one appends to another chain and commits."""
    if svc.db.is_sqlite:
        pytest.skip("SQLite has one writer, and one chain")
    slow = asyncio.ensure_future(audited(svc, "test.slow", hold=2.0))
    await asyncio.sleep(0.5)  # the slow one holds its chain now
    started = time.perf_counter()
    await audited(svc, "test.fast")
    assert time.perf_counter() - started < 1.0
    assert not slow.done()
    await slow
    async with svc.db.reader() as s:
        rows = {e.action: e for e in (await s.execute(select(AuditEntry))).scalars()}
    assert rows["test.fast"].chain != rows["test.slow"].chain
    # the trail's order is the order entries were written in, not the order their transactions committed in
    assert rows["test.slow"].seq < rows["test.fast"].seq
    assert (await check(svc)).ok


async def test_processes_writing_at_once_keep_every_chain_whole(settings, svc: Services) -> None:
    """Two processes (two engines with their own chain orders and head hints), each with many transactions at
    once: no chain forks, no entry is lost, the trail verifies."""
    other = build_services(settings)
    try:
        await asyncio.gather(*(audited(s, f"test.{i}") for i in range(40) for s in (svc, other)))
        await asyncio.gather(*(audited(s, f"test.again.{i}") for i in range(10) for s in (other, svc)))
    finally:
        await other.close()
    result = await check(svc)
    assert (result.ok, result.checked) == (True, 100)
    assert sum(h.link for h in result.heads) == 100
    async with svc.db.reader() as s:
        seqs = list((await s.execute(select(AuditEntry.seq))).scalars())
    assert len(set(seqs)) == 100
    if not svc.db.is_sqlite:
        assert len(result.heads) > 1


async def test_entry_moved_to_another_chain_is_named(svc: Services) -> None:
    await append(svc, 4)
    async with svc.db.reader() as s:
        last = (await s.execute(select(AuditEntry).where(AuditEntry.seq == 4))).scalar_one()
    other = (last.chain + 1) % audit_service.CHAINS
    # its place after the head of another (empty) chain: the chain is sealed with the entry
    await by_hand(
        svc,
        [("UPDATE audit_entries SET chain = :c, link = 1, prev_hash = :g WHERE seq = 4", {"c": other, "g": "0" * 64})],
    )
    result = await check(svc)
    assert (result.ok, result.first_broken_seq, result.chain) == (False, 4, other)
    assert "edited" in (result.reason or "")


async def test_entry_in_a_chain_that_is_not_ours_is_named(svc: Services) -> None:
    await append(svc, 2)
    await by_hand(svc, [("UPDATE audit_entries SET chain = :c WHERE seq = 2", {"c": audit_service.CHAINS})])
    result = await check(svc)
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "not one of ours" in (result.reason or "")


async def test_a_cut_tail_shows_in_the_heads(svc: Services) -> None:
    """A chain's last entries removed leave a chain that verifies: the heads, kept elsewhere, show the cut."""
    await append(svc, 5)
    before = (await check(svc)).heads
    await by_hand(svc, [("DELETE FROM audit_entries WHERE seq = 5", {})])
    after = await check(svc)
    assert after.ok
    assert [(h.chain, h.link) for h in after.heads] == [(h.chain, h.link - 1) for h in before]


def test_entries_sealed_when_the_trail_was_one_chain_verify_unchanged() -> None:
    """Chain 0's seal is the single chain's, with the entry's place named "seq", as it was sealed then."""
    key = audit_service.AuditKey(b"k" * 32)
    entry = AuditEntry(
        seq=7,
        chain=0,
        link=7,
        at=dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC),
        actor="staff:librarian@CQL",
        actor_institution="CQL",
        action="circulation.checkout",
        subject_person_id="a" * 32,
        purpose=None,
        outcome="ok",
        client_address="127.0.0.1",
        details={"loan": "b" * 32, "中": "文"},
        prev_hash="c" * 64,
    )
    single_chain_fields = {
        "seq": 7,
        "at": "2026-11-30T08:00:00.000000+00:00",
        "actor": "staff:librarian@CQL",
        "actor_institution": "CQL",
        "action": "circulation.checkout",
        "subject_person_id": "a" * 32,
        "purpose": None,
        "outcome": "ok",
        "client_address": "127.0.0.1",
        "details": {"loan": "b" * 32, "中": "文"},
        "prev_hash": "c" * 64,
    }
    text_then = json.dumps(single_chain_fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert audit_service.seal(key, entry) == hmac.new(key.key, text_then, hashlib.sha256).hexdigest()
    entry.chain = 1
    assert audit_service.seal(key, entry) != hmac.new(key.key, text_then, hashlib.sha256).hexdigest()


EVENTS = [
    ("test.lent", {"loan": "L1", "title": "红楼梦", "copies": [1, 2], "note": None}),
    ("test.lent", {"loan": "L2", "ratio": 0.5, "nested": {"城市": "成都"}}),
    ("test.returned", {}),
]


async def _outbox(svc: Services) -> list[tuple]:
    from federation.db import OutboxMessage

    async with svc.db.reader() as s:
        rows = (await s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id))).scalars()
        return [(m.topic, m.payload, m.attempts, m.published_at) for m in rows]


async def _audited_with_events(svc: Services, *, fail: bool = False) -> None:
    async with svc.db.uow() as uow:
        for topic, payload in EVENTS:
            uow.emit(topic, **payload)
        await svc.audit(uow, Record(action="test.events", actor="staff:tester@CQL"))
        if fail:

            async def refuse() -> None:
                raise RuntimeError("refused after the audit entry")

            uow.before_commit(refuse)
        await uow.commit()


def _expected() -> list[str]:
    return _sorted([(topic, payload, 0, None) for topic, payload in EVENTS])


def _sorted(rows: list[tuple]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)


async def test_events_are_written_once_with_the_audit_entry(svc: Services) -> None:
    """On PostgreSQL the chain's lock carries the transaction's outbox rows (one statement for both): every event is
    written once, as emitted; a transaction that fails after its audit entry leaves neither."""
    await _audited_with_events(svc)
    assert _sorted(await _outbox(svc)) == _expected()
    with pytest.raises(RuntimeError):
        await _audited_with_events(svc, fail=True)
    assert _sorted(await _outbox(svc)) == _expected()
    async with svc.db.reader() as s:
        assert [e.action for e in (await s.execute(select(AuditEntry))).scalars()] == ["test.events"]


async def test_events_are_written_once_when_every_chain_is_busy(svc: Services) -> None:
    """Every chain locked by another session: each try fails (the first one wrote the rows), then the transaction
    waits for a chain; when it gets one, the events are there once."""
    if svc.db.is_sqlite:
        pytest.skip("SQLite has one writer, and one chain")
    keys = [audit_service._lock_key(c) for c in range(audit_service.CHAINS)]
    async with svc.db.engine.connect() as other:
        for k in keys:
            await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": k})
        writing = asyncio.ensure_future(_audited_with_events(svc))
        await asyncio.sleep(0.5)
        assert not writing.done()  # waiting for a chain
        for k in keys:
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": k})
        await other.commit()
    await writing
    assert _sorted(await _outbox(svc)) == _expected()
    assert (await check(svc)).ok
