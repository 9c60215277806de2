"""The identity API over HTTP: who may call what, what comes back (masked), and the problem codes of refusals."""

from __future__ import annotations

import re

from sqlalchemy import select

from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.identity.idnumber import check_digit
from tests.conftest import token_for

PERSONS = "/api/v1/identity/persons"
LOOKUPS = "/api/v1/identity/lookups"
CROSSREFS = "/api/v1/identity/crossrefs"
CARD_STATUS = "/api/v1/identity/credential-status"
MERGES = "/api/v1/identity/merges"
REVIEWS = "/api/v1/identity/reviews"
CHECKS = "/api/v1/identity/checks"
MASKED = re.compile(r"^[0-9]{6}\*{8}[0-9X]{4}$")

ZHANG, WANG, WU = RESIDENTS[0], RESIDENTS[1], RESIDENTS[9]  # 张伟 (CQL), 王芳 (CQL), 吴强 (CDL, ends in X)
assert ZHANG.name == "张伟" and WU.id_number.endswith("X")


def id_number(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + check_digit(first17)


NEW = id_number("510107", "19920415", "371")  # a resident not in the demo: male, born 1992-04-15


def old_form(number: str) -> str:
    return number[:6] + number[8:17]


def forms(number: str) -> list[str]:
    return [number, number.lower(), old_form(number)]


ALL_NUMBERS = [f for n in [r.id_number for r in RESIDENTS] + [NEW] for f in forms(n)]


def assert_no_clear_number(text: str) -> None:
    for number in ALL_NUMBERS:
        assert number not in text, f"clear ID number {number[:6]}... in a response"


def masked(number: str) -> str:
    return number[:6] + "*" * 8 + number[-4:]


def ident(type_: str, value: str, institution: str = "", kind: str | None = None) -> dict:
    out = {"type": type_, "value": value}
    if institution:
        out["institution"] = institution
    if kind:
        out["kind"] = kind
    return out


async def call(client, method: str, path: str, headers: dict, body: dict | None = None, expect: int = 200) -> dict:
    resp = await client.request(method, path, json=body, headers=headers)
    text = await resp.text()
    assert resp.status == expect, text
    assert_no_clear_number(text)
    if expect >= 400:
        assert resp.content_type == "application/problem+json"
    return await resp.json() if text else {}


async def problem(client, path: str, headers: dict, body: dict, status: int, code: str) -> dict:
    out = await call(client, "POST", path, headers, body, expect=status)
    assert out["code"] == code, out
    assert out["status"] == status
    return out


async def audit_actions(svc) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())


# ---------------------------------------------------------------------------------------------- persons


async def test_register_finds_the_same_person_in_any_form(client, demo):
    headers = await token_for(client, "librarian@SCL")
    body = {
        "name": "郑凯",
        "phone": "13900000001",
        "home_institution": "SCL",
        "identifiers": [
            ident("id_number", NEW),
            ident("social_security_card", "SC0000500"),
            ident("local", "SCL000500", "SCL", "library_card"),
        ],
    }
    created = await call(client, "POST", PERSONS, headers, body, expect=201)
    assert created["outcome"] == "created"
    person = created["person"]
    assert (person["name"], person["birth_date"], person["sex"], person["status"]) == (
        "郑凯",
        "1992-04-15",
        "male",
        "active",
    )
    assert person["merged_into"] is None
    by_type = {i["type"]: i for i in person["identifiers"]}
    assert by_type["id_number"]["masked"] == masked(NEW)
    assert MASKED.match(by_type["id_number"]["masked"])
    assert by_type["social_security_card"]["masked"] == "*****0500"
    assert by_type["local"] == {
        "id": by_type["local"]["id"],
        "type": "local",
        "institution": "SCL",
        "kind": "library_card",
        "masked": "*****0500",
        "status": "active",
    }

    for variant in (old_form(NEW), f"{NEW[:6]} {NEW[6:14]} {NEW[14:]}"):
        again = await call(
            client, "POST", PERSONS, headers, {"name": "郑凯", "identifiers": [ident("id_number", variant)]}, 201
        )
        assert (again["outcome"], again["person"]["id"]) == ("existing", person["id"])

    got = await call(client, "GET", f"{PERSONS}/{person['id']}", headers)
    assert got == person
    resp = await client.get(f"{PERSONS}/0123456789abcdef0123456789abcdef", headers=headers)
    assert resp.status == 404 and (await resp.json())["code"] == "identity.person_not_found"

    registers = [e for e in await audit_actions(demo) if e.action == "identity.register" and e.actor != "system:demo"]
    assert [e.details["outcome"] for e in registers] == ["created", "existing", "existing"]
    assert {e.actor for e in registers} == {"staff:librarian@SCL"}


async def test_register_refusals_have_problem_codes(client, demo):
    headers = await token_for(client, "librarian@CQL")
    bad = NEW[:17] + ("1" if NEW[17] != "1" else "2")
    out = await problem(
        client,
        PERSONS,
        headers,
        {"name": "郑凯", "identifiers": [ident("id_number", bad)]},
        422,
        "identity.invalid_identifier",
    )
    assert out["reason_code"] == "id_number.checksum"
    assert bad not in str(out) and NEW[:17] not in str(out)

    await problem(
        client,
        PERSONS,
        headers,
        {"name": "郑凯", "birth_date": "1992-04-16", "identifiers": [ident("id_number", NEW)]},
        422,
        "identity.conflicting_demographics",
    )
    # 王芳's social-security card with 张伟's number
    await problem(
        client,
        PERSONS,
        headers,
        {
            "name": "张伟",
            "identifiers": [ident("id_number", ZHANG.id_number), ident("social_security_card", WANG.ss_card)],
        },
        409,
        "identity.identifier_taken",
    )
    # a local identifier without its member
    await problem(
        client,
        PERSONS,
        headers,
        {"name": "郑凯", "identifiers": [ident("local", "X1")]},
        422,
        "identity.invalid_identifier",
    )
    # unknown fields, at the top and inside an identifier
    for body in (
        {"name": "郑凯", "id_number": NEW},
        {"name": "郑凯", "identifiers": [{**ident("id_number", NEW), "verified": True}]},
        {"name": "郑凯", "sex": "M"},
    ):
        out = await problem(client, PERSONS, headers, body, 422, "validation_failed")
        assert out["errors"]
    # nothing was written by any of these
    resp = await client.post(LOOKUPS, json={"identifier": ident("id_number", NEW)}, headers=headers)
    assert resp.status == 404


# ---------------------------------------------------------------------------------------------- lookups, crossrefs


async def test_lookups_by_any_identifier(client, demo):
    headers = await token_for(client, "doctor@SCH1")
    by_number = await call(
        client, "POST", LOOKUPS, headers, {"identifier": ident("id_number", ZHANG.id_number.lower()), "purpose": "care"}
    )
    assert by_number["name"] == "张伟"
    assert [i["masked"] for i in by_number["identifiers"] if i["type"] == "id_number"] == [masked(ZHANG.id_number)]
    by_card = await call(client, "POST", LOOKUPS, headers, {"identifier": ident("social_security_card", ZHANG.ss_card)})
    by_library = await call(client, "POST", LOOKUPS, headers, {"identifier": ident("local", "cql000001", "CQL")})
    by_old = await call(client, "POST", LOOKUPS, headers, {"identifier": ident("id_number", old_form(ZHANG.id_number))})
    assert by_card == by_library == by_old == by_number

    await problem(
        client, LOOKUPS, headers, {"identifier": ident("local", "CQL000001", "SCL")}, 404, "identity.unknown_credential"
    )
    await problem(
        client, LOOKUPS, headers, {"identifier": ident("id_number", "12345")}, 422, "identity.invalid_identifier"
    )
    await problem(
        client, LOOKUPS, headers, {"identifier": ident("id_number", NEW), "why": "x"}, 422, "validation_failed"
    )

    lookups = [e for e in await audit_actions(demo) if e.action == "identity.lookup"]
    assert len(lookups) == 4
    assert {e.subject_person_id for e in lookups} == {by_number["id"]}
    assert lookups[0].purpose == "care" and lookups[0].actor == "staff:doctor@SCH1"
    assert lookups[0].actor_institution == "SCH1"

    # a purpose holding a number is masked in the audit trail
    await call(
        client,
        "POST",
        LOOKUPS,
        headers,
        {"identifier": ident("social_security_card", ZHANG.ss_card), "purpose": ZHANG.id_number},
    )
    last = (await audit_actions(demo))[-1]
    assert last.action == "identity.lookup" and last.purpose == masked(ZHANG.id_number)


async def test_crossrefs(client, demo):
    headers = await token_for(client, "librarian@SCL")
    to_library = await call(
        client,
        "POST",
        CROSSREFS,
        headers,
        {"identifier": ident("id_number", ZHANG.id_number), "target_type": "local", "target_institution": "CQL"},
    )
    assert to_library["identifiers"] == [
        {"type": "local", "institution": "CQL", "kind": "library_card", "value": "CQL000001", "status": "active"}
    ]
    to_number = await call(
        client,
        "POST",
        CROSSREFS,
        headers,
        {"identifier": ident("local", "CQL000001", "CQL"), "target_type": "id_number"},
    )
    assert to_number["person_id"] == to_library["person_id"]
    assert [i["value"] for i in to_number["identifiers"]] == [masked(ZHANG.id_number)]
    to_card = await call(
        client,
        "POST",
        CROSSREFS,
        headers,
        {"identifier": ident("id_number", WU.id_number.lower()), "target_type": "social_security_card"},
    )
    assert [i["value"] for i in to_card["identifiers"]] == [WU.ss_card]
    none = await call(
        client,
        "POST",
        CROSSREFS,
        headers,
        {"identifier": ident("id_number", ZHANG.id_number), "target_type": "local", "target_institution": "CDL"},
    )
    assert none["identifiers"] == []
    await problem(
        client,
        CROSSREFS,
        headers,
        {"identifier": ident("social_security_card", "CQ7777777"), "target_type": "local"},
        404,
        "identity.unknown_credential",
    )
    await problem(
        client,
        CROSSREFS,
        headers,
        {"identifier": ident("id_number", ZHANG.id_number), "target_type": "passport"},
        422,
        "validation_failed",
    )
    crossrefs = [e for e in await audit_actions(demo) if e.action == "identity.crossref"]
    assert len(crossrefs) == 4
    assert crossrefs[0].details == {"from": "id_number", "to": "local", "institution": "CQL"}


# ---------------------------------------------------------------------------------------------- card status


async def test_credential_status_is_for_admins_and_takes_effect_at_once(client, demo):
    librarian = await token_for(client, "librarian@CQL")
    admin = await token_for(client, "admin@federation")
    lost = {"identifier": ident("social_security_card", WANG.ss_card), "status": "lost"}

    await problem(client, CARD_STATUS, librarian, lost, 403, "forbidden")
    assert (await client.post(CARD_STATUS, json=lost)).status == 401
    await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("social_security_card", WANG.ss_card)})

    out = await call(client, "POST", CARD_STATUS, admin, lost)
    assert (out["type"], out["status"], out["masked"]) == ("social_security_card", "lost", "*****0002")
    refused = await problem(
        client,
        LOOKUPS,
        librarian,
        {"identifier": ident("social_security_card", WANG.ss_card)},
        403,
        "identity.credential_inactive",
    )
    assert refused["credential_status"] == "lost"
    await problem(
        client,
        CROSSREFS,
        librarian,
        {"identifier": ident("social_security_card", WANG.ss_card), "target_type": "local"},
        403,
        "identity.credential_inactive",
    )
    # her number still works
    wang = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("id_number", WANG.id_number)})

    # the library card is reissued with a new number
    old_card = ident("local", "CQL000002", "CQL", "library_card")
    await problem(
        client, CARD_STATUS, admin, {"identifier": old_card, "status": "reissued"}, 422, "identity.invalid_identifier"
    )
    await problem(
        client,
        CARD_STATUS,
        admin,
        {"identifier": old_card, "status": "reissued", "replacement": "CQL000001"},  # 张伟's card
        409,
        "identity.identifier_taken",
    )
    await call(
        client, "POST", CARD_STATUS, admin, {"identifier": old_card, "status": "reissued", "replacement": "CQL100092"}
    )
    await problem(client, LOOKUPS, librarian, {"identifier": old_card}, 403, "identity.credential_inactive")
    renewed = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("local", "CQL100092", "CQL")})
    assert renewed["id"] == wang["id"]
    statuses = {(i["type"], i["masked"]): i["status"] for i in renewed["identifiers"]}
    assert statuses == {
        ("id_number", masked(WANG.id_number)): "active",
        ("social_security_card", "*****0002"): "lost",
        ("local", "*****0002"): "reissued",
        ("local", "*****0092"): "active",
    }

    await problem(
        client,
        CARD_STATUS,
        admin,
        {"identifier": ident("social_security_card", "CQ9999999"), "status": "lost"},
        404,
        "identity.unknown_credential",
    )
    await problem(client, CARD_STATUS, admin, {**lost, "status": "stolen"}, 422, "validation_failed")
    changes = [e for e in await audit_actions(demo) if e.action == "identity.credential_status"]
    assert [e.details["status"] for e in changes] == ["lost", "reissued"]
    assert all(e.actor == "staff:admin@federation" for e in changes)


# ---------------------------------------------------------------------------------------------- merges, reviews


async def test_merge_and_undo(client, demo):
    librarian = await token_for(client, "librarian@CDL")
    admin = await token_for(client, "admin@federation")
    zhang = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("id_number", ZHANG.id_number)})
    # the same man registered at CDL from his library card alone, under a romanised name and no birth date
    dup = await call(
        client,
        "POST",
        PERSONS,
        librarian,
        {"name": "WEI Zhang", "identifiers": [ident("local", "CDL900001", "CDL", "library_card")]},
        201,
    )
    assert dup["person"]["id"] != zhang["id"]

    body = {"survivor_id": zhang["id"], "merged_id": dup["person"]["id"], "reason": "same man, card at CDL"}
    await problem(client, MERGES, librarian, body, 403, "forbidden")
    merge = await call(client, "POST", MERGES, admin, body, 201)
    assert (merge["survivor_id"], merge["merged_id"], merge["undone_at"]) == (zhang["id"], dup["person"]["id"], None)
    found = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("local", "CDL900001", "CDL")})
    assert found["id"] == zhang["id"]
    old = await call(client, "GET", f"{PERSONS}/{dup['person']['id']}", librarian)
    assert old["id"] == zhang["id"]  # follows the merge
    await problem(client, MERGES, admin, body, 409, "identity.merge_refused")

    resp = await client.post(f"{MERGES}/{merge['id']}/undo", headers=librarian)
    assert resp.status == 403
    undone = await call(client, "POST", f"{MERGES}/{merge['id']}/undo", admin)
    assert undone["id"] == merge["id"] and undone["undone_at"] is not None
    found = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("local", "CDL900001", "CDL")})
    assert found["id"] == dup["person"]["id"] and found["status"] == "active"
    await problem(client, f"{MERGES}/{merge['id']}/undo", admin, None, 409, "identity.merge_refused")
    await problem(
        client, f"{MERGES}/0123456789abcdef0123456789abcdef/undo", admin, None, 404, "identity.person_not_found"
    )

    wang = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("id_number", WANG.id_number)})
    await problem(
        client,
        MERGES,
        admin,
        {"survivor_id": zhang["id"], "merged_id": wang["id"], "reason": "x"},
        409,
        "identity.merge_refused",
    )
    await problem(
        client,
        MERGES,
        admin,
        {"survivor_id": zhang["id"], "merged_id": "nobody", "reason": "x"},
        404,
        "identity.person_not_found",
    )
    await problem(client, MERGES, admin, {**body, "force": True}, 422, "validation_failed")
    actions = [e.action for e in await audit_actions(demo)]
    assert actions.count("identity.merge") == 1 and actions.count("identity.unmerge") == 1


async def test_reviews_list_and_resolution(client, demo):
    librarian = await token_for(client, "librarian@CQL")
    admin = await token_for(client, "admin@federation")
    zhang = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("id_number", ZHANG.id_number)})
    # a homophone with the same birth date: 章伟 for 张伟
    reg = await call(
        client,
        "POST",
        PERSONS,
        librarian,
        {
            "name": "章伟",
            "birth_date": "1985-03-12",
            "identifiers": [ident("local", "CQL555555", "CQL", "library_card")],
        },
        201,
    )
    assert reg["outcome"] == "review" and reg["review_id"]
    assert reg["person"]["id"] != zhang["id"]
    assert 0.6 <= reg["score"] < 0.9

    await call(client, "GET", REVIEWS, librarian, expect=403)
    listed = await call(client, "GET", REVIEWS, admin)
    [review] = [r for r in listed["items"] if r["id"] == reg["review_id"]]
    assert (review["person_id"], review["candidate_id"], review["state"]) == (reg["person"]["id"], zhang["id"], "open")
    assert any("homophone" in r for r in review["reasons"])

    path = f"{REVIEWS}/{reg['review_id']}/resolution"
    await problem(client, path, librarian, {"same_person": True}, 403, "forbidden")
    await problem(client, path, admin, {"same_person": "perhaps"}, 422, "validation_failed")
    await problem(client, path, admin, {}, 422, "validation_failed")
    resolved = await call(client, "POST", path, admin, {"same_person": True})
    assert resolved["state"] == "linked"
    found = await call(client, "POST", LOOKUPS, librarian, {"identifier": ident("local", "CQL555555", "CQL")})
    assert found["id"] == zhang["id"]
    await problem(client, path, admin, {"same_person": False}, 409, "identity.review_closed")
    await problem(
        client,
        f"{REVIEWS}/0123456789abcdef0123456789abcdef/resolution",
        admin,
        {"same_person": True},
        404,
        "identity.person_not_found",
    )
    listed = await call(client, "GET", REVIEWS, admin)
    assert reg["review_id"] not in {r["id"] for r in listed["items"]}
    actions = [
        e.action for e in await audit_actions(demo) if e.action in ("identity.merge", "identity.review_resolved")
    ]
    assert actions == ["identity.merge", "identity.review_resolved"]


# ---------------------------------------------------------------------------------------------- checks, residents


async def test_checks(client, demo):
    headers = await token_for(client, "doctor@CQH1")
    ok = await call(client, "POST", CHECKS, headers, {"value": old_form(ZHANG.id_number)})
    assert ok["valid"] is True
    assert ok["masked"] == masked(ZHANG.id_number)
    assert (ok["birth_date"], ok["sex"], ok["upgraded_from_15"]) == ("1985-03-12", "male", True)
    assert ok["code"] is None
    female = await call(client, "POST", CHECKS, headers, {"value": WANG.id_number})
    assert (female["valid"], female["sex"], female["upgraded_from_15"]) == (True, "female", False)
    bad = ZHANG.id_number[:17] + ("0" if ZHANG.id_number[17] != "0" else "1")
    out = await call(client, "POST", CHECKS, headers, {"value": bad})
    assert (out["valid"], out["code"], out["masked"]) == (False, "id_number.checksum", None)
    assert bad not in str(out)
    await problem(client, CHECKS, headers, {"value": ZHANG.id_number, "strict": True}, 422, "validation_failed")
    assert (await client.post(CHECKS, json={"value": ZHANG.id_number})).status == 401


async def test_resident_sees_own_record_only(client, demo):
    resident = await token_for(client, WU.id_number)
    me = await call(client, "GET", "/api/v1/me/person", resident)
    assert me["name"] == "吴强"
    types = {i["type"]: i for i in me["identifiers"]}
    assert types["id_number"]["masked"] == masked(WU.id_number)
    assert types["social_security_card"]["masked"] == "*****0010"
    assert types["local"]["institution"] == "CDL"

    # the old 15-digit form, lower-case x and spaces log in the same resident
    for username in (old_form(WU.id_number), WU.id_number.lower(), f"{WU.id_number[:6]} {WU.id_number[6:]}"):
        again = await token_for(client, username)
        assert (await call(client, "GET", "/api/v1/me/person", again))["id"] == me["id"]

    # staff-only routes are refused to residents, and staff have no own person
    await problem(client, LOOKUPS, resident, {"identifier": ident("id_number", ZHANG.id_number)}, 403, "forbidden")
    await problem(client, PERSONS, resident, {"name": "x"}, 403, "forbidden")
    staff = await token_for(client, "librarian@CDL")
    await call(client, "GET", "/api/v1/me/person", staff, expect=403)
    assert (await client.get("/api/v1/me/person")).status == 401

    # a failed login with an ID number leaves only its masked form behind
    resp = await client.post("/api/v1/auth/token", json={"username": WU.id_number, "password": "wrong"})
    assert resp.status == 401
    assert_no_clear_number(await resp.text())
    failed = [e for e in await audit_actions(demo) if e.action == "auth.login_failed"]
    assert [e.actor for e in failed] == [f"login:{masked(WU.id_number)}"]
