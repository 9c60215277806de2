"""Concurrent registrations of one person make one person, on SQLite and on PostgreSQL.

On SQLite writers queue at BEGIN IMMEDIATE; on PostgreSQL they really race, and the loser of the unique
constraint on identifiers must come back with the winner's person instead of an error or a second person.
A gate holds every registration after its first lookup until all have looked (or a short timeout passes,
which is what happens on SQLite, where the first writer holds the lock), so on PostgreSQL all of them miss
and all of them try to insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from federation.audit.models import AuditEntry
from federation.audit.service import verify
from federation.identity import service
from federation.identity.idnumber import check_digit
from federation.identity.models import Identifier, IdentifierType, Person
from federation.identity.service import IdentifierInput, RegisterPerson
from tests.conftest import token_for

ID = IdentifierType.ID_NUMBER
SS = IdentifierType.SOCIAL_SECURITY_CARD
N = 8


def id_number(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + check_digit(first17)


WU = id_number("511002", "19830228", "955")  # ends in X


def formats(number: str) -> list[str]:
    """Eight spellings of one number."""
    return [
        number,
        number.lower(),
        f"{number[:6]} {number[6:14]} {number[14:]}",
        f"{number[:6]}-{number[6:14]}-{number[14:].lower()}",
        number[:6] + number[8:17],  # the 15-digit form
        " " + number + " ",
        "".join(chr(ord(c) + 0xFEE0) for c in number),  # full-width
        f"{number[:3]} {number[3:6]} {number[6:10]} {number[10:14]} {number[14:]}",
    ]


@pytest.fixture
def gate(monkeypatch, svc):
    """Hold each registration after its first identifier lookup until N have looked (or a timeout passes)."""
    state = {"looked": 0}
    everyone = asyncio.Event()
    state["everyone"] = everyone
    # SQLite: the first writer holds the lock while it waits, so the others cannot look; do not wait long
    timeout = 0.05 if svc.db.is_sqlite else 5.0
    original = service._known_person

    async def gated(uow, svc, cmd):
        found = await original(uow, svc, cmd)
        if not getattr(uow, "_gated", False):
            uow._gated = True
            state["looked"] += 1
            if state["looked"] >= N:
                everyone.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(everyone.wait(), timeout)
        return found

    monkeypatch.setattr(service, "_known_person", gated)
    return state


async def _register(svc, cmd: RegisterPerson) -> service.Registration:
    async with svc.db.uow() as uow:
        reg = await service.register(uow, svc, cmd, actor="staff:test")
        await uow.commit()
    return reg


async def _counts(svc) -> tuple[int, dict[str, int]]:
    async with svc.db.reader() as s:
        persons = (await s.execute(select(func.count()).select_from(Person))).scalar_one()
        rows = (await s.execute(select(Identifier.type, func.count()).group_by(Identifier.type))).all()
    return persons, dict(rows)


async def test_concurrent_registrations_of_one_number_create_one_person(svc, gate):
    spellings = formats(WU)
    assert len(spellings) == N
    results = await asyncio.gather(
        *(
            _register(
                svc,
                RegisterPerson(name="吴强", identifiers=[IdentifierInput(ID, v), IdentifierInput(SS, "SC0000010")]),
            )
            for v in spellings
        )
    )
    assert gate["looked"] >= N
    if not svc.db.is_sqlite:
        assert gate["everyone"].is_set()  # all missed the number and raced to insert it
    assert len({r.person.id for r in results}) == 1
    assert sorted(r.outcome for r in results) == ["created"] + ["existing"] * (N - 1)
    persons, identifiers = await _counts(svc)
    assert persons == 1
    assert identifiers == {ID.value: 1, SS.value: 1}
    async with svc.db.reader() as s:
        p = await service.resolve_credential(s, svc.cipher, IdentifierInput(ID, WU))
        assert p.id == results[0].person.id and p.birth_date == dt.date(1983, 2, 28)
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
        assert actions == ["identity.register"] * N
        assert (await verify(s, svc.audit_key)).ok


async def test_concurrent_registrations_by_card_without_number_create_one_person(svc, gate):
    # no exact key: each would score against nothing and create; the card's unique constraint decides
    cmd = RegisterPerson(name="吴强", identifiers=[IdentifierInput(SS, "SC0000010")])
    results = await asyncio.gather(*(_register(svc, cmd) for _ in range(N)))
    assert len({r.person.id for r in results}) == 1
    assert sorted(r.outcome for r in results) == ["created"] + ["existing"] * (N - 1)
    assert await _counts(svc) == (1, {SS.value: 1})


async def test_concurrent_registrations_of_different_numbers_all_succeed(svc, gate):
    numbers = [id_number("500103", f"1985031{i}", f"23{i}") for i in range(N)]
    results = await asyncio.gather(
        *(
            _register(svc, RegisterPerson(name=f"张{i}", identifiers=[IdentifierInput(ID, n)]))
            for i, n in enumerate(numbers)
        )
    )
    assert [r.outcome for r in results] == ["created"] * N
    assert len({r.person.id for r in results}) == N
    assert await _counts(svc) == (N, {ID.value: N})
    async with svc.db.reader() as s:
        result = await verify(s, svc.audit_key)
    assert result.ok and result.checked == N


async def test_repeated_races_never_duplicate(svc):
    # without the gate, many rounds of ordinary interleaving
    for round_ in range(5):
        number = id_number("510104", f"1988011{round_}", "517")
        results = await asyncio.gather(
            *(
                _register(svc, RegisterPerson(name="杨磊", identifiers=[IdentifierInput(ID, v)]))
                for v in formats(number)
            )
        )
        assert len({r.person.id for r in results}) == 1, round_
    assert await _counts(svc) == (5, {ID.value: 5})


async def test_concurrent_http_registrations_create_one_person(client, svc, demo, gate):
    headers = await token_for(client, "librarian@CDL")
    number = id_number("510108", "19750925", "733")
    body = {
        "name": "黄勇",
        "identifiers": [{"type": "id_number", "value": ""}, {"type": "social_security_card", "value": "SC0000123"}],
    }

    async def post(value: str):
        payload = {**body, "identifiers": [{**body["identifiers"][0], "value": value}, body["identifiers"][1]]}
        resp = await client.post("/api/v1/identity/persons", json=payload, headers=headers)
        return resp.status, await resp.text()

    before, _ = await _counts(svc)
    responses = await asyncio.gather(*(post(v) for v in formats(number)))
    bodies = [json.loads(text) for _, text in responses]
    assert [status for status, _ in responses] == [201] * N, responses
    assert len({b["person"]["id"] for b in bodies}) == 1
    assert sorted(b["outcome"] for b in bodies) == ["created"] + ["existing"] * (N - 1)
    for _, text in responses:
        assert number not in text and number[:6] + number[8:17] not in text
    masked = {i["masked"] for b in bodies for i in b["person"]["identifiers"] if i["type"] == "id_number"}
    assert masked == {number[:6] + "*" * 8 + number[-4:]}
    after, _ = await _counts(svc)
    assert after == before + 1


@pytest.mark.parametrize("with_number", [True, False], ids=["id_number", "card_only"])
async def test_registration_that_lost_the_race_after_its_lookup_returns_the_winner(svc, monkeypatch, with_number):
    """B misses in its lookup, A registers and commits, then B goes on: B must come back with A's person."""
    if svc.db.is_sqlite:
        pytest.skip("SQLite serialises writers at BEGIN IMMEDIATE: A cannot commit while B is inside its transaction")
    looked, proceed = asyncio.Event(), asyncio.Event()
    original = service._known_person

    async def gated(uow, svc_, cmd):
        found = await original(uow, svc_, cmd)
        if cmd.name == "B" and not getattr(uow, "_gated", False):
            uow._gated = True
            looked.set()
            await proceed.wait()
        return found

    monkeypatch.setattr(service, "_known_person", gated)
    identifiers = [IdentifierInput(SS, "SC0000010")]
    if with_number:
        identifiers.insert(0, IdentifierInput(ID, WU))
    late = asyncio.create_task(_register(svc, RegisterPerson(name="B", identifiers=identifiers)))
    await asyncio.wait_for(looked.wait(), 5)
    winner = await _register(svc, RegisterPerson(name="A", identifiers=identifiers))
    proceed.set()
    loser = await asyncio.wait_for(late, 10)
    assert (winner.outcome, loser.outcome) == ("created", "existing")
    assert loser.person.id == winner.person.id
    assert await _counts(svc) == (1, {SS.value: 1, **({ID.value: 1} if with_number else {})})
