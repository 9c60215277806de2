"""FHIR ingest against a real database: what is stored, linked and refused, and that a refusal stores nothing."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from federation.audit.models import AuditEntry
from federation.db import OutboxMessage
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import Identifier, IdentifierType, Person
from federation.services import Services
from health.fhir.ingest import (
    IMAGING_SYSTEM,
    RESULTS_CHANGED,
    SOURCE_UPDATED_URL,
    SOURCE_VERSION_URL,
    IngestRefused,
    IngestResult,
    UnknownHospital,
    ingest_bundle,
)
from health.models import ResourceLink, StoredResource
from tests.fixtures import fhir as fx

ACTOR = "apikey:CQH1:test"


async def ingest(svc: Services, bundle: dict[str, Any], institution: str = "CQH1") -> IngestResult:
    return await ingest_bundle(svc, bundle, institution=institution, actor=ACTOR)


async def rows(svc: Services, **where: Any) -> list[StoredResource]:
    async with svc.db.reader() as s:
        q = select(StoredResource).where(*(getattr(StoredResource, k) == v for k, v in where.items()))
        return list((await s.execute(q.order_by(StoredResource.resource_type, StoredResource.source_id))).scalars())


async def counts(svc: Services) -> dict[str, int]:
    out = {}
    async with svc.db.reader() as s:
        for model in (StoredResource, ResourceLink, Person, Identifier, AuditEntry, OutboxMessage):
            out[model.__tablename__] = (await s.execute(select(func.count()).select_from(model))).scalar_one()
    return out


def resident_patient(n: int = 0, **kw: Any) -> dict[str, Any]:
    r = RESIDENTS[n]
    return fx.patient(number=r.id_number, name=(r.name[0], r.name[1:]), **kw)


def basics() -> list[dict[str, Any]]:
    """A patient, the lab, a practitioner and a specimen: what the fixtures' references need."""
    return [resident_patient(), fx.load("organization"), fx.load("practitioner"), fx.load("specimen")]


async def person_of(svc: Services, number: str) -> str:
    async with svc.db.reader() as s:
        person = await identity.resolve_credential(
            s, svc.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, number)
        )
    return person.id


async def test_every_fixture_is_stored_with_its_columns(demo: Services) -> None:
    result = await ingest(demo, fx.bundle([resident_patient(), *fx.lab_set()]))
    assert result.ok, result.issues()
    person = await person_of(demo, RESIDENTS[0].id_number)
    stored = {(r.resource_type, r.source_id): r for r in await rows(demo)}
    for t in fx.VALUE_TYPES:
        source = fx.load(f"observation-{t}")
        row = stored[("Observation", source["id"])]
        value_key = next(k for k in source if k.startswith("value"))
        assert row.body[value_key] == source[value_key], t
        assert row.person_id == person
        assert row.body["subject"]["reference"] == f"Patient/{person}"
        assert row.version == 1 and row.body["meta"]["versionId"] == "1"
        assert row.body["meta"]["source"] == "urn:twincity:member:CQH1"
        assert row.body["id"] == row.id
    glu = stored[("Observation", "glu")]
    assert (glu.category, glu.code_system, glu.code, glu.status) == (
        "laboratory",
        "http://loinc.org",
        "15074-8",
        "final",
    )
    assert glu.effective_at.isoformat() == "2024-03-01T01:30:00+00:00"
    assert glu.issued_at.isoformat() == "2024-03-01T02:30:00+00:00"
    assert glu.body["referenceRange"][0]["high"]["value"] == 6.2
    assert stored[("Observation", "lmp")].category == "exam"
    bp = stored[("Observation", "bp")]
    assert bp.effective_at.isoformat() == "2024-03-01T01:00:00+00:00"
    assert [c["valueQuantity"]["value"] for c in bp.body["component"]] == [107, 60]
    cbc = stored[("DiagnosticReport", "cbc1")]
    assert (cbc.category, cbc.code_system, cbc.code) == ("laboratory", "http://loinc.org", "58410-2")
    assert cbc.body["result"][0]["reference"] == f"Observation/{stored[('Observation', 'hb')].id}"
    assert cbc.body["specimen"][0]["reference"] == f"Specimen/{stored[('Specimen', 'spec1')].id}"
    assert "reference" not in cbc.body["encounter"] and cbc.body["encounter"]["display"] == "门诊"
    ct = stored[("ImagingStudy", "ct1")]
    assert (ct.category, ct.code_system, ct.code) == ("imaging", IMAGING_SYSTEM, "CT|51185008")
    assert stored[("DiagnosticReport", "ct-report-1")].category == "imaging"
    pat = stored[("Patient", "pat1")]
    assert pat.person_id == person and pat.body["id"] == pat.id
    assert RESIDENTS[0].id_number not in json.dumps(pat.body)
    # links: report -> results, specimen, imaging study; observation -> specimen; provenance -> target
    async with demo.db.reader() as s:
        links = {(x.source_id, x.rel, x.target_id) for x in (await s.execute(select(ResourceLink))).scalars()}
    assert (cbc.id, "result", stored[("Observation", "hb")].id) in links
    assert (cbc.id, "specimen", stored[("Specimen", "spec1")].id) in links
    assert (glu.id, "specimen", stored[("Specimen", "spec1")].id) in links
    ct_report = stored[("DiagnosticReport", "ct-report-1")]
    assert (ct_report.id, "imagingStudy", ct.id) in links
    # one Provenance per patient (and one for what belongs to no patient), naming every version the load made
    provenances = await rows(demo, resource_type="Provenance")
    non_prov = {r.id: r for r in stored.values() if r.resource_type != "Provenance"}
    assert len(provenances) == len({r.person_id for r in non_prov.values()})
    named: list[str] = []
    for prov in provenances:
        targets = sorted(t for source, rel, t in links if source == prov.id and rel == "target")
        assert targets and {non_prov[t].person_id for t in targets} == {prov.person_id}
        assert sorted(x["reference"] for x in prov.body["target"]) == sorted(
            f"{non_prov[t].resource_type}/{t}/_history/1" for t in targets
        )
        assert prov.body["activity"]["coding"][0]["code"] == "CREATE"
        assert prov.body["agent"][0]["who"]["display"] == "重庆医科大学附属第一医院"
        named += targets
    assert sorted(named) == sorted(non_prov)


async def test_generated_multi_patient_transaction(demo: Services) -> None:
    bundle = fx.generated_transaction(patients=20, per_patient=3)
    before = await counts(demo)
    result = await ingest(demo, bundle)
    assert result.ok, result.issues()
    assert len(result.person_ids) == 20
    after = await counts(demo)
    assert after["persons"] == before["persons"] + 20
    reports = await rows(demo, resource_type="DiagnosticReport")
    assert len(reports) == 20
    observations = {r.id: r for r in await rows(demo, resource_type="Observation")}
    for report in reports:
        ids = [x["reference"].split("/")[1] for x in report.body["result"]]
        assert len(ids) == 3 and all(observations[i].person_id == report.person_id for i in ids)
    # the record numbers are cross-referenced now
    async with demo.db.reader() as s:
        found = await identity.find_identifier(
            s, demo.cipher, identity.IdentifierInput(IdentifierType.LOCAL, "GEN00007", "CQH1", "hospital_record")
        )
    assert found is not None and found.kind == "hospital_record"
    async with demo.db.reader() as s:
        events = [m for m in (await s.execute(select(OutboxMessage))).scalars() if m.topic == RESULTS_CHANGED]
        audits = [a for a in (await s.execute(select(AuditEntry))).scalars() if a.action == "health.ingest"]
    assert len(events) == 1 and len(events[0].payload["person_ids"]) == 20
    assert len(audits) == 1 and audits[0].details["counts"]["Observation"] == {"created": 60}


async def test_sending_twice_changes_nothing(demo: Services) -> None:
    bundle = fx.bundle([resident_patient(), *fx.lab_set()])
    await ingest(demo, bundle)
    first = {(r.resource_type, r.source_id): (r.id, r.version, r.body) for r in await rows(demo)}
    result = await ingest(demo, copy.deepcopy(bundle))
    assert {i.outcome for i in result.items} == {"unchanged"}
    assert {(r.resource_type, r.source_id): (r.id, r.version, r.body) for r in await rows(demo)} == first


async def test_newer_version_supersedes_and_older_is_ignored(demo: Services) -> None:
    glu = fx.load("observation-quantity")
    await ingest(demo, fx.bundle([*basics(), glu]))
    newer = copy.deepcopy(glu)
    newer["meta"] = {"versionId": "2", "lastUpdated": "2024-03-02T08:00:00+08:00"}
    newer["valueQuantity"]["value"] = 5.1
    newer["status"] = "amended"
    result = await ingest(demo, fx.bundle([newer]))
    assert [(i.outcome, i.version) for i in result.items] == [("updated", 2)]
    (row,) = await rows(demo, resource_type="Observation")
    assert (row.version, row.status, row.body["valueQuantity"]["value"]) == (2, "amended", 5.1)
    (update,) = [
        p for p in await rows(demo, resource_type="Provenance") if p.body["activity"]["coding"][0]["code"] == "UPDATE"
    ]
    assert update.body["target"] == [{"reference": f"Observation/{row.id}/_history/2"}]
    assert update.person_id == row.person_id
    # the old version arriving late is answered with the stored one
    result = await ingest(demo, fx.bundle([glu]))
    assert [(i.outcome, i.version, i.id) for i in result.items] == [("stale", 2, row.id)]
    (again,) = await rows(demo, resource_type="Observation")
    assert (again.version, again.body["valueQuantity"]["value"]) == (2, 5.1)


async def test_entered_in_error_withdraws(demo: Services) -> None:
    glu = fx.load("observation-quantity")
    await ingest(demo, fx.bundle([*basics(), glu]))
    gone = copy.deepcopy(glu)
    gone["status"] = "entered-in-error"
    gone["meta"]["versionId"] = "2"
    await ingest(demo, fx.bundle([gone]))
    (row,) = await rows(demo, resource_type="Observation")
    assert row.withdrawn and row.status == "entered-in-error" and row.version == 2


async def test_failed_transaction_stores_nothing(demo: Services) -> None:
    bad = fx.load("observation-string")
    bad["effectiveDateTime"] = "2024-13-45"
    bundle = fx.bundle([resident_patient(), *fx.lab_set()[:3], bad])
    before = await counts(demo)
    with pytest.raises(IngestRefused) as caught:
        await ingest(demo, bundle)
    assert caught.value.issues[0]["expression"] == ["Bundle.entry[4].resource.effectiveDateTime"]
    assert await counts(demo) == before
    # a patient new to the federation, in a transaction that then fails: no person is left behind
    stranger = fx.patient(number=fx.id_number(region="510107", birth="19990101", seq="011"))
    with pytest.raises(IngestRefused):
        await ingest(demo, fx.bundle([stranger, bad]))
    assert await counts(demo) == before


async def test_batch_stores_the_good_entries(demo: Services) -> None:
    bad = fx.load("observation-boolean")
    bad["status"] = "bogus"
    dangling = fx.load("observation-integer")
    dangling["specimen"] = {"reference": "Specimen/nowhere"}
    bundle = fx.bundle([resident_patient(), fx.load("organization"), fx.load("observation-string"), bad, dangling])
    bundle["type"] = "batch"
    result = await ingest(demo, bundle)
    assert [i.outcome for i in result.items] == ["created", "created", "created", "error", "error"]
    assert result.items[3].issues[0]["expression"] == ["Bundle.entry[3].resource.status"]
    assert result.items[4].issues[0]["expression"] == ["Bundle.entry[4].resource.specimen.reference"]
    assert {r.source_id for r in await rows(demo, resource_type="Observation")} == {"urine-color"}


async def test_entries_depending_on_a_refused_patient_are_refused(demo: Services) -> None:
    nobody = fx.patient(mrn="UNKNOWN-1")
    obs = fx.load("observation-string")
    del obs["performer"]
    bundle = fx.bundle([nobody, obs], kind="batch")
    result = await ingest(demo, bundle)
    assert [i.outcome for i in result.items] == ["error", "error"]
    assert "cannot link" in result.items[0].issues[0]["diagnostics"]
    assert result.items[1].issues[0]["expression"] == ["Bundle.entry[1].resource.subject.reference"]
    assert await rows(demo) == []


@pytest.mark.parametrize("how", ["id_number", "ss_card", "mrn"])
async def test_patient_linking(demo: Services, how: str) -> None:
    r = RESIDENTS[1]
    person = await person_of(demo, r.id_number)
    if how == "mrn":  # cross-reference the record number first, the way a hospital does when it registers one
        await ingest(demo, fx.bundle([fx.patient("first", number=r.id_number, mrn="MRN-778")]))
        p = fx.patient(mrn="MRN-778")
    elif how == "ss_card":
        p = fx.patient(ss_card=r.ss_card, mrn="MRN-779")
    else:
        p = fx.patient(number=r.id_number)
    result = await ingest(demo, fx.bundle([p]))
    assert result.ok, result.issues()
    (row,) = await rows(demo, resource_type="Patient", source_id="pat1")
    assert row.person_id == person
    for ident in row.body["identifier"]:
        assert ident["value"] not in (r.id_number, r.ss_card, "MRN-778", "MRN-779")
    if how == "ss_card":  # the record number it carried is cross-referenced for next time
        async with demo.db.reader() as s:
            found = await identity.find_identifier(
                s, demo.cipher, identity.IdentifierInput(IdentifierType.LOCAL, "MRN-779", "CQH1", "hospital_record")
            )
        assert found is not None and found.person_id == person


async def test_unlinkable_patient_is_refused(demo: Services) -> None:
    before = await counts(demo)
    for p in (fx.patient(mrn="NEVER-SEEN"), fx.patient(ss_card="ZZ9999999"), fx.patient()):
        with pytest.raises(IngestRefused) as caught:
            await ingest(demo, fx.bundle([p]))
        assert caught.value.status == 422
        assert "cannot link" in caught.value.issues[0]["diagnostics"]
    bad_number = fx.patient(number="500103198503122310")
    with pytest.raises(IngestRefused) as caught:
        await ingest(demo, fx.bundle([bad_number]))
    assert caught.value.issues[0]["expression"] == ["Bundle.entry[0].resource.identifier[0].value"]
    assert "500103198503122310" not in json.dumps(caught.value.issues)
    assert await counts(demo) == before


async def test_no_identity_refused(demo: Services) -> None:
    obs = fx.load("observation-string")
    del obs["id"], obs["identifier"]
    with pytest.raises(IngestRefused) as caught:
        await ingest(demo, fx.bundle([resident_patient(), fx.load("organization"), obs]))
    assert "neither an id nor an identifier" in caught.value.issues[0]["diagnostics"]


async def test_only_hospitals_push(demo: Services) -> None:
    with pytest.raises(UnknownHospital):
        await ingest(demo, fx.bundle([resident_patient()]), institution="CQL")


async def test_no_clear_id_number_anywhere_in_the_database(demo: Services) -> None:
    number = fx.id_number(region="510104", birth="19880119", seq="555")
    p = fx.patient(number=number)
    p["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">张伟 {number}</div>'}
    p["id"] = number  # a hospital using the ID number as the Patient's id
    obs = fx.load("observation-string")
    obs["note"] = [{"text": f"身份证 {number}"}]
    obs["subject"] = {"reference": f"Patient/{number}"}
    result = await ingest(demo, fx.bundle([p, fx.load("organization"), obs]))
    assert result.ok, result.issues()
    later = fx.load("observation-boolean")  # refers to the Patient stored before, by the same id
    later["subject"] = {"reference": f"Patient/{number}"}
    result = await ingest(demo, fx.bundle([later]))
    assert result.ok, result.issues()
    assert result.items[0].person_id == (await rows(demo, resource_type="Patient"))[0].person_id
    again = await ingest(demo, fx.bundle([p]))
    assert [i.outcome for i in again.items] == ["unchanged"]
    async with demo.db.reader() as s:
        for model in (StoredResource, AuditEntry, OutboxMessage, Person, Identifier):
            table = model.__tablename__
            dump = json.dumps([list(map(str, r)) for r in (await s.execute(text(f"SELECT * FROM {table}"))).all()])  # noqa: S608
            assert number not in dump, table


async def test_the_hospitals_own_record_number_system_links_without_a_type(demo: Services) -> None:
    from federation.members.models import Institution

    async with demo.db.uow() as uow:
        hospital = (await uow.session.execute(select(Institution).where(Institution.code == "CQH1"))).scalar_one()
        hospital.attributes = {"mrn_systems": [fx.MRN_SYSTEM]}
        await uow.commit()
    first = fx.patient("a", number=RESIDENTS[2].id_number)
    first["identifier"].append({"system": fx.MRN_SYSTEM, "value": "H-0042"})  # no type: the system says it
    assert (await ingest(demo, fx.bundle([first]))).ok
    later = fx.patient("b")
    later["identifier"] = [{"system": fx.MRN_SYSTEM, "value": "H-0042"}]
    result = await ingest(demo, fx.bundle([later]))
    assert result.ok, result.issues()
    assert result.items[0].person_id == await person_of(demo, RESIDENTS[2].id_number)


PHONE = "13912345678"
STREET = "解放碑街道 12 号 3-1"


async def table_text(svc: Services, *tables: str) -> str:
    """Every column of every row of these tables, as text (PostgreSQL's JSON as its rendering, SQLite's as is)."""
    out = []
    async with svc.db.reader() as s:
        for table in tables:
            rows = (await s.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            out.append(json.dumps([list(map(str, r)) for r in rows], ensure_ascii=False))
    return "\n".join(out)


def card_only_load() -> dict[str, Any]:
    """A Patient sent without an id, known by its social-security card alone, with a phone and a street address;
    an Observation naming it both by reference and by that card (a logical reference)."""
    r = RESIDENTS[0]
    p = fx.patient(ss_card=r.ss_card, name=(r.name[0], r.name[1:]))
    del p["id"]
    p["telecom"].append({"system": "phone", "value": PHONE})
    p["address"][0]["line"] = [STREET]
    p["contact"] = [{"name": {"text": "李娜"}, "telecom": [{"system": "phone", "value": PHONE}]}]
    url = "urn:uuid:0b1c1c1e-1111-4111-8111-111111111111"
    obs = fx.load("observation-string")
    obs["subject"] = {
        "reference": url,
        "identifier": {"system": fx.SOCIAL_SECURITY_CARD_SYSTEM, "value": r.ss_card},
    }
    entries = [fx.entry(p, url, "POST"), fx.entry(fx.load("organization")), fx.entry(obs)]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def test_no_clear_card_or_phone_number_in_stored_results(demo: Services) -> None:
    card = RESIDENTS[0].ss_card
    bundle = card_only_load()
    result = await ingest(demo, copy.deepcopy(bundle))
    assert result.ok, result.issues()
    (patient,) = await rows(demo, resource_type="Patient")
    assert patient.person_id == await person_of(demo, RESIDENTS[0].id_number)
    assert patient.source_id.startswith("bi:")
    assert patient.body["address"] == [{"city": "重庆", "district": "渝中区"}]
    assert not {"telecom", "contact"} & set(patient.body)
    (obs,) = await rows(demo, resource_type="Observation")
    assert obs.body["subject"] == {
        "reference": f"Patient/{patient.person_id}",
        "identifier": {"system": fx.SOCIAL_SECURITY_CARD_SYSTEM, "value": "*" * (len(card) - 4) + card[-4:]},
    }
    # the blind-indexed key still recognises a re-send
    again = await ingest(demo, copy.deepcopy(bundle))
    assert {i.outcome for i in again.items} == {"unchanged"}
    dump = await table_text(demo, "fhir_resources", "fhir_links", "audit_entries", "outbox")
    for needle in (card, PHONE, "13800230001", STREET, "李娜"):
        assert needle not in dump, needle


async def test_an_identifier_keyed_observation_is_recognised_when_sent_again(demo: Services) -> None:
    obs = fx.load("observation-string")
    del obs["id"]
    result = await ingest(demo, fx.bundle([*basics(), obs]))
    assert result.ok, result.issues()
    (row,) = await rows(demo, resource_type="Observation")
    assert row.source_id.startswith("bi:") and "URINE-COLOR" not in row.source_id
    changed = copy.deepcopy(obs)
    changed["valueString"] = "Amber"
    result = await ingest(demo, fx.bundle([changed]))
    assert [(i.outcome, i.id) for i in result.items] == [("updated", row.id)]


@pytest.mark.parametrize(
    "stored_meta",
    [
        [{"url": SOURCE_UPDATED_URL, "valueInstant": "0001-01-01T00:00:00+14:00"}],
        [{"url": SOURCE_UPDATED_URL, "valueInstant": "9999-12-31T23:59:59-12:00"}],
        [{"url": SOURCE_UPDATED_URL, "valueInstant": 17}, {"url": SOURCE_VERSION_URL, "valueString": "²"}],
    ],
)
async def test_a_stored_date_past_the_calendar_does_not_break_later_loads(demo: Services, stored_meta: Any) -> None:
    """Bodies stored before the profile refused such dates may hold one: a later load containing the row works."""
    assert (await ingest(demo, fx.bundle(basics()))).ok
    (row,) = await rows(demo, resource_type="Patient")
    body = {**row.body, "meta": {**row.body["meta"], "extension": stored_meta}}
    async with demo.db.uow() as uow:
        await uow.session.execute(update(StoredResource).where(StoredResource.id == row.id).values(body=body))
        await uow.commit()
    newer = resident_patient()
    newer["meta"] = {"versionId": "2", "lastUpdated": "2024-03-02T08:00:00+08:00"}
    newer["active"] = False
    result = await ingest(demo, fx.bundle([newer, fx.load("organization"), fx.load("observation-string")]))
    assert result.ok, result.issues()
    assert result.items[0].outcome == "updated"
    (after,) = await rows(demo, resource_type="Patient")
    assert after.body["active"] is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("effectiveDateTime", "0001-01-01T00:00:00+14:00"),
        ("effectiveDateTime", "0001-01-01"),
        ("effectiveDateTime", "9999-12-31T23:59:59-12:00"),
        ("issued", "0001-01-01T00:00:00+14:00"),
        ("issued", "9999-12-31T23:59:59-12:00"),
    ],
)
async def test_dates_past_the_calendar_are_refused_and_store_nothing(demo: Services, field: str, value: str) -> None:
    obs = fx.load("observation-string")
    obs[field] = value
    before = await counts(demo)
    with pytest.raises(IngestRefused) as caught:
        await ingest(demo, fx.bundle([*basics(), obs]))
    assert caught.value.status == 422
    assert f"Bundle.entry[4].resource.{field}" in [x for i in caught.value.issues for x in i["expression"]]
    assert await counts(demo) == before
    batch = await ingest(demo, fx.bundle([*basics(), obs], kind="batch"))
    assert [i.outcome for i in batch.items][4] == "error"
    assert len(await rows(demo, resource_type="Observation")) == 0
