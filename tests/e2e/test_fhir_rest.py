"""The FHIR REST endpoint through HTTP as a FHIR client uses it: the CapabilityStatement, read, search with every
parameter it declares, includes, $lastn, the federated Patient, the verdict on each result, and every refusal
as an OperationOutcome in application/fhir+json."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from sqlalchemy import select

from federation.accounts.service import create_api_key
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from health.fhir import rest, search
from tests import fhir_support as fx
from tests.conftest import token_for

FHIR = "application/fhir+json"
CST = dt.timezone(dt.timedelta(hours=8))
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ZHANG, WANG = RESIDENTS[0], RESIDENTS[1]  # 张伟 consents to result sharing; 王芳 does not


@pytest.fixture
async def world(demo):
    """张伟's results at CQH1 (old and fresh, final and not, one withdrawn, a report with a Provenance) and one of
    王芳's; serum glucose is in the recognition catalogue."""
    svc = demo
    zhang, wang = await fx.person_of(svc, ZHANG.id_number), await fx.person_of(svc, WANG.id_number)
    cqh1 = await fx.institution(svc, "CQH1")
    rows = {
        "g1": fx.observation(zhang, cqh1, dt.datetime(2024, 3, 5, 10, tzinfo=CST), value=5.1),
        "g2": fx.observation(zhang, cqh1, dt.datetime(2024, 3, 20, 9, tzinfo=CST), value=5.6),
        "h1": fx.observation(zhang, cqh1, dt.datetime(2024, 7, 1, 8, tzinfo=CST), code=fx.HBA1C, value=6.1),
        "g3": fx.observation(zhang, cqh1, NOW - dt.timedelta(days=10), value=5.9),
        "pre": fx.observation(zhang, cqh1, NOW - dt.timedelta(days=5), status="preliminary"),
        "gone": fx.observation(zhang, cqh1, NOW - dt.timedelta(days=3), withdrawn=True),
        "img": fx.observation(zhang, cqh1, NOW - dt.timedelta(days=20), category="imaging", code=("x", "CT", "CT")),
        "w1": fx.observation(wang, cqh1, NOW - dt.timedelta(days=2)),
    }
    rows["dr"] = fx.report(zhang, cqh1, NOW - dt.timedelta(days=10), [rows["g3"], rows["h1"]])
    rows["prov"] = fx.provenance(cqh1, [rows["dr"], rows["g3"]], NOW - dt.timedelta(days=9))
    links = [(rows["dr"]["id"], "result", rows["g3"]["id"]), (rows["dr"]["id"], "result", rows["h1"]["id"])]
    links += [(rows["prov"]["id"], "target", rows["dr"]["id"]), (rows["prov"]["id"], "target", rows["g3"]["id"])]
    await fx.store(svc, list(rows.values()), links)
    await fx.glucose_in_catalogue(svc)
    return {"svc": svc, "zhang": zhang, "wang": wang, "ids": {k: v["id"] for k, v in rows.items()}}


async def fhir_json(resp, status: int = 200) -> dict:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == FHIR
    return json.loads(text)


async def outcome_of(resp, status: int) -> dict:
    body = await fhir_json(resp, status)
    OperationOutcome.model_validate(body)
    return body


def ids_of(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def verdict_of(resource: dict) -> tuple[str | None, dict]:
    tags = [t["code"] for t in resource["meta"].get("tag", []) if t["system"] == search.RECOGNITION_SYSTEM]
    assert len(tags) <= 1
    ext = [e for e in resource.get("extension", []) if e["url"] == search.VERDICT_URL]
    assert len(ext) <= 1
    parts: dict = {}
    for p in ext[0]["extension"] if ext else ():
        parts.setdefault(p["url"], []).append(next(v for k, v in p.items() if k.startswith("value")))
    return (tags[0] if tags else None), parts


async def test_capability_statement_tells_what_is_implemented(client):
    resp = await client.get("/fhir/metadata")
    cs = await fhir_json(resp)
    CapabilityStatement.model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1" and cs["kind"] == "instance"
    assert cs["implementation"]["url"].endswith("/fhir") and cs["implementation"]["url"].startswith("http")
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert set(by_type) == {"Patient", "Observation", "DiagnosticReport", "ImagingStudy", "Provenance"}
    for rtype in search.RESULT_TYPES:
        declared = {p["name"] for p in by_type[rtype]["searchParam"]}
        assert declared == search.RESULT_PARAMS - {"_revinclude"}
        assert by_type[rtype]["searchRevInclude"] == ["Provenance:target"]
    assert by_type["DiagnosticReport"]["searchInclude"] == ["DiagnosticReport:result"]
    assert "searchInclude" not in by_type["Observation"]
    assert [o["name"] for o in by_type["Observation"]["operation"]] == ["lastn"]
    assert {i["code"] for i in by_type["ImagingStudy"]["interaction"]} == {"read"}
    system = {i["code"] for i in cs["rest"][0].get("interaction", ())}
    posts = {r.resource.canonical for r in client.app.router.routes() if r.method == "POST"}
    assert system == ({"transaction", "batch"} if "/fhir" in posts else set())
    assert ("operation" in cs["rest"][0]) == ("/fhir/$import" in posts)
    # each route the statement declares is served, and each served /fhir GET route is declared
    served = {(r.method, r.resource.canonical) for r in client.app.router.routes()}
    for rtype, res in by_type.items():
        codes = {i["code"] for i in res["interaction"]}
        assert ("GET", f"/fhir/{rtype}/{{id}}") in served
        assert (("GET", f"/fhir/{rtype}") in served) == ("search-type" in codes)
        assert (("POST", f"/fhir/{rtype}/_search") in served) == ("search-type" in codes)


async def test_read_carries_the_verdict_and_is_audited(client, world):
    headers = await token_for(client, "doctor@SCH1")
    ids = world["ids"]
    resp = await client.get(f"/fhir/Observation/{ids['g3']}", headers=headers)
    obs = await fhir_json(resp)
    Observation.model_validate(obs)
    assert obs["id"] == ids["g3"] and resp.headers["ETag"] == 'W/"1"'
    tag, parts = verdict_of(obs)
    assert tag == "HR"
    assert parts["recognised"] == [True] and "reason" not in parts and parts["item"] == ["LAB-GLU"]
    assert dt.date.fromisoformat(parts["validUntil"][0]) > dt.date.today()

    old = await fhir_json(await client.get(f"/fhir/Observation/{ids['g1']}", headers=headers))
    assert verdict_of(old) == ("not-recognised", {"recognised": [False], "reason": ["expired"], **_item(old)})
    hba1c = await fhir_json(await client.get(f"/fhir/Observation/{ids['h1']}", headers=headers))
    assert verdict_of(hba1c)[1]["reason"] == ["not_in_catalogue"]
    pre = await fhir_json(await client.get(f"/fhir/Observation/{ids['pre']}", headers=headers))
    assert verdict_of(pre)[1]["reason"] == ["not_final"]

    async with world["svc"].db.reader() as s:
        entries = (await s.execute(select(AuditEntry).where(AuditEntry.action == "health.fhir.read"))).scalars().all()
    assert len(entries) == 4
    assert all(e.subject_person_id == world["zhang"] and e.outcome == "ok" for e in entries)
    assert all(e.actor == "staff:doctor@SCH1" and e.details["basis"] == "consent" for e in entries)


def _item(resource: dict) -> dict:
    parts = verdict_of(resource)[1]
    return {k: parts[k] for k in ("item", "validUntil") if k in parts}


async def test_a_forged_recognition_tag_is_replaced(client, world):
    svc = world["svc"]
    cqh1 = await fx.institution(svc, "CQH1")
    forged = fx.observation(
        world["zhang"],
        cqh1,
        dt.datetime(2020, 1, 2, tzinfo=CST),
        extra={
            "meta": {"versionId": "1", "tag": [{"system": search.RECOGNITION_SYSTEM, "code": "HR"}]},
            "extension": [{"url": search.VERDICT_URL, "extension": [{"url": "recognised", "valueBoolean": True}]}],
        },
    )
    await fx.store(svc, [forged])
    headers = await token_for(client, "doctor@SCH1")
    obs = await fhir_json(await client.get(f"/fhir/Observation/{forged['id']}", headers=headers))
    tag, parts = verdict_of(obs)
    assert tag == "not-recognised" and parts["recognised"] == [False]


async def test_reads_refused_without_consent_and_withdrawn_is_gone(client, world):
    ids = world["ids"]
    doctor = await token_for(client, "doctor@SCH1")
    refused = await outcome_of(await client.get(f"/fhir/Observation/{ids['w1']}", headers=doctor), 403)
    assert refused["issue"][0]["code"] == "forbidden"
    await outcome_of(await client.get(f"/fhir/Patient/{world['wang']}", headers=doctor), 403)
    gone = await outcome_of(await client.get(f"/fhir/Observation/{ids['gone']}", headers=doctor), 410)
    assert gone["issue"][0]["code"] == "deleted"
    await outcome_of(await client.get("/fhir/Observation/0123456789abcdef0123456789abcdef", headers=doctor), 404)
    await outcome_of(await client.get(f"/fhir/DiagnosticReport/{ids['g1']}", headers=doctor), 404)  # wrong type
    await outcome_of(await client.get("/fhir/Observation/a%20b", headers=doctor), 404)
    await outcome_of(await client.get(f"/fhir/Observation/{ids['g1']}"), 401)
    async with world["svc"].db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.outcome == "refused", AuditEntry.subject_person_id == world["wang"])
        assert len((await s.execute(q)).scalars().all()) == 2


async def test_residents_read_their_own_only(client, world):
    ids = world["ids"]
    me = await token_for(client, ZHANG.id_number)
    mine = await fhir_json(await client.get("/fhir/Observation?_count=100", headers=me))
    assert set(ids_of(mine)) == {ids[k] for k in ("g1", "g2", "h1", "g3", "pre", "img")}
    await fhir_json(await client.get(f"/fhir/DiagnosticReport/{ids['dr']}", headers=me))
    await outcome_of(await client.get(f"/fhir/Observation/{ids['w1']}", headers=me), 403)
    await outcome_of(await client.get(f"/fhir/Observation?patient={world['wang']}", headers=me), 403)
    own = await fhir_json(await client.get("/fhir/Patient", headers=me))
    assert ids_of(own) == [world["zhang"]]


async def test_doctors_must_name_the_patient(client, world):
    doctor = await token_for(client, "doctor@SCH1")
    async with world["svc"].db.uow() as uow:
        _, secret = await create_api_key(uow, world["svc"], "CQH1", ["health.read"], actor="test")
        await uow.commit()
    system = {"Authorization": f"Bearer {secret}"}
    for who in (doctor, system):
        for path in ("/fhir/Observation", "/fhir/DiagnosticReport?code=x", "/fhir/Observation/$lastn", "/fhir/Patient"):
            body = await outcome_of(await client.get(path, headers=who), 400)
            assert "patient" in body["issue"][0]["diagnostics"]
    # a hospital system reads with the patient's consent for its institution, and is audited as itself
    found = await fhir_json(await client.get(f"/fhir/Observation?patient={world['zhang']}&_count=1", headers=system))
    assert found["total"] == 6
    await outcome_of(await client.get(f"/fhir/Observation?patient={world['wang']}", headers=system), 403)


async def test_search_parameters(client, world):
    ids, zhang = world["ids"], world["zhang"]
    doctor = await token_for(client, "doctor@SCH1")

    async def found(query: str, rtype: str = "Observation") -> list[str]:
        bundle = await fhir_json(await client.get(f"/fhir/{rtype}?patient={zhang}&_count=100&{query}", headers=doctor))
        Bundle.model_validate(bundle)
        assert bundle["total"] == len(ids_of(bundle))
        return ids_of(bundle)

    def named(*keys: str) -> list[str]:
        return [ids[k] for k in keys]

    # newest first by default; withdrawn never returned
    assert await found("") == named("pre", "g3", "img", "h1", "g2", "g1")
    assert await found("_sort=date") == named("g1", "g2", "h1", "img", "g3", "pre")
    assert await found("_sort=-_lastUpdated") == named("pre", "g3", "img", "h1", "g2", "g1")
    assert await found("code=http://loinc.org|2345-7") == named("pre", "g3", "g2", "g1")
    assert await found("code=4548-4") == named("h1")
    assert await found("code=http://loinc.org|2345-7,http://loinc.org|4548-4&_sort=date") == named(
        "g1", "g2", "h1", "g3", "pre"
    )
    assert await found("code=http://snomed.info/sct|2345-7") == []
    assert await found("code=http://loinc.org|") == named("pre", "g3", "h1", "g2", "g1")
    assert await found("category=imaging") == named("img")
    assert await found(f"category={fx.OBS_CATEGORY}|imaging") == named("img")
    assert await found("status=preliminary") == named("pre")
    assert await found("status=final,amended&date=2024") == named("h1", "g2", "g1")
    assert await found("date=2024-03") == named("g2", "g1")
    assert await found("date=2024-03-05") == named("g1")
    assert await found("date=ge2024-03-06&date=lt2024-07") == named("g2")
    assert await found("date=gt2024-03-05&date=le2024-03") == named("g2")
    assert await found("date=lt2024-03-05") == []
    assert await found("date=gt2024-03-05T10:00:00%2B08:00&date=lt2024-03-21") == named("g2")
    assert await found("date=2024-03-05T10:00:00+08:00") == named("g1")  # '+' sent unencoded
    assert await found(f"_lastUpdated=ge{(NOW - dt.timedelta(days=15)).date()}") == named("pre", "g3")
    # subject as an absolute URL, the same patient
    url = f"subject=https://elsewhere.example/fhir/Patient/{zhang}"
    bundle = await fhir_json(await client.get(f"/fhir/Observation?{url}&code=4548-4", headers=doctor))
    assert ids_of(bundle) == named("h1")
    # POST _search, form-encoded
    resp = await client.post(
        "/fhir/Observation/_search", data={"patient": f"Patient/{zhang}", "code": "4548-4"}, headers=doctor
    )
    assert ids_of(await fhir_json(resp)) == named("h1")
    # _count=0: the total only
    counted = await fhir_json(await client.get(f"/fhir/Observation?patient={zhang}&_count=0", headers=doctor))
    assert counted["total"] == 6 and "entry" not in counted


async def test_reports_with_results_and_provenance(client, world):
    ids, zhang = world["ids"], world["zhang"]
    doctor = await token_for(client, "doctor@SCH1")
    q = f"patient={zhang}&_include=DiagnosticReport:result&_revinclude=Provenance:target&category=LAB"
    bundle = await fhir_json(await client.get(f"/fhir/DiagnosticReport?{q}", headers=doctor))
    Bundle.model_validate(bundle)
    assert bundle["total"] == 1
    assert ids_of(bundle) == [ids["dr"]]
    assert sorted(ids_of(bundle, "include")) == sorted([ids["g3"], ids["h1"], ids["prov"]])
    for e in bundle["entry"]:
        assert e["fullUrl"].startswith("http://")
        assert e["fullUrl"].endswith(f"/fhir/{e['resource']['resourceType']}/{e['resource']['id']}")
        if e["resource"]["resourceType"] in ("Observation", "DiagnosticReport"):
            assert verdict_of(e["resource"])[0] in ("HR", "not-recognised")
    cat = f"http://terminology.hl7.org/CodeSystem/v2-0074|LAB&patient={zhang}"
    assert ids_of(await fhir_json(await client.get(f"/fhir/DiagnosticReport?category={cat}", headers=doctor))) == [
        ids["dr"]
    ]
    # Observations with their Provenance; a Provenance is readable by those who may read what it names
    obs = await fhir_json(
        await client.get(f"/fhir/Observation?patient={zhang}&_revinclude=Provenance:target", headers=doctor)
    )
    assert ids_of(obs, "include") == [ids["prov"]]
    prov = await fhir_json(await client.get(f"/fhir/Provenance/{ids['prov']}", headers=doctor))
    assert prov["resourceType"] == "Provenance" and "meta" in prov and "tag" not in prov["meta"]


async def test_lastn(client, world):
    ids, zhang = world["ids"], world["zhang"]
    doctor = await token_for(client, "doctor@SCH1")
    one = await fhir_json(await client.get(f"/fhir/Observation/$lastn?patient={zhang}", headers=doctor))
    Bundle.model_validate(one)
    assert sorted(ids_of(one)) == sorted([ids["pre"], ids["h1"], ids["img"]])
    two = await fhir_json(
        await client.get(f"/fhir/Observation/$lastn?patient={zhang}&max=2&category=laboratory", headers=doctor)
    )
    assert ids_of(two) == [ids["pre"], ids["g3"], ids["h1"]]  # by code, newest first within each
    coded = await fhir_json(
        await client.get(f"/fhir/Observation/%24lastn?patient={zhang}&code=4548-4&max=5", headers=doctor)
    )
    assert ids_of(coded) == [ids["h1"]]
    await outcome_of(await client.get(f"/fhir/Observation/$lastn?patient={zhang}&max=0", headers=doctor), 400)


async def test_patient_by_identifier_never_in_the_url(client, world):
    svc, zhang = world["svc"], world["zhang"]
    doctor = await token_for(client, "doctor@SCH1")
    refused = await outcome_of(
        await client.get(f"/fhir/Patient?identifier={rest.ID_NUMBER_SYSTEM}|{ZHANG.id_number}", headers=doctor), 400
    )
    assert "POST /fhir/Patient/_search" in refused["issue"][0]["diagnostics"]
    assert ZHANG.id_number not in json.dumps(refused)

    resp = await client.post(
        "/fhir/Patient/_search", data={"identifier": f"{rest.ID_NUMBER_SYSTEM}|{ZHANG.id_number}"}, headers=doctor
    )
    text = await resp.text()
    bundle = await fhir_json(resp)
    Bundle.model_validate(bundle)
    assert ZHANG.id_number not in text and ZHANG.id_number[:17] not in text
    assert bundle["total"] == 1 and ids_of(bundle) == [zhang]
    patient = bundle["entry"][0]["resource"]
    Patient.model_validate(patient)
    assert patient["name"] == [{"text": ZHANG.name}] and patient["gender"] == "male"
    assert patient["birthDate"] == "1985-03-12"
    assert {i["system"] for i in patient["identifier"]} == set(rest.IDENTIFIER_SYSTEMS)
    assert all("value" not in i for i in patient["identifier"])
    assert ZHANG.id_number not in bundle["link"][0]["url"]

    by_card = await client.post(
        "/fhir/Patient/_search", data={"identifier": f"{rest.SOCIAL_SECURITY_SYSTEM}|{ZHANG.ss_card}"}, headers=doctor
    )
    assert ids_of(await fhir_json(by_card)) == [zhang]
    nobody = await client.post(
        "/fhir/Patient/_search", data={"identifier": f"{rest.SOCIAL_SECURITY_SYSTEM}|NOSUCHCARD"}, headers=doctor
    )
    empty = await fhir_json(nobody)
    assert empty["total"] == 0 and "entry" not in empty
    await outcome_of(
        await client.post("/fhir/Patient/_search", data={"identifier": "urn:other|1"}, headers=doctor), 400
    )
    await outcome_of(await client.post("/fhir/Patient/_search", json={"identifier": "x"}, headers=doctor), 415)
    await outcome_of(
        await client.post(f"/fhir/Patient/_search?identifier=x|{ZHANG.ss_card}", data={}, headers=doctor), 400
    )
    # no consent: refused, and the refusal recorded
    await outcome_of(
        await client.post(
            "/fhir/Patient/_search", data={"identifier": f"{rest.ID_NUMBER_SYSTEM}|{WANG.id_number}"}, headers=doctor
        ),
        403,
    )
    read = await fhir_json(await client.get(f"/fhir/Patient/{zhang}", headers=doctor))
    assert read["id"] == zhang
    async with svc.db.reader() as s:
        rows = (await s.execute(select(AuditEntry).where(AuditEntry.action.like("health.fhir.%")))).scalars().all()
    assert ZHANG.id_number not in json.dumps([r.details for r in rows], ensure_ascii=False)
    assert {(r.action, r.outcome) for r in rows} == {
        ("health.fhir.search", "ok"),
        ("health.fhir.search", "not_found"),  # a search that found nobody is recorded too
        ("health.fhir.search", "refused"),
        ("health.fhir.read", "ok"),
    }


@pytest.mark.parametrize(
    "query",
    [
        "date=2024-13-01",
        "date=sa2024",
        "_count=100000",
        "_sort=name",
        "_cursor=not-a-cursor",
        "foo=bar",
        "patient=Observation/1",
        "_include=DiagnosticReport:result",
        "_format=xml",
    ],
)
async def test_bad_searches_are_operation_outcomes(client, world, query):
    doctor = await token_for(client, "doctor@SCH1")
    resp = await client.get(f"/fhir/Observation?patient={world['zhang']}&{query}", headers=doctor)
    body = await outcome_of(resp, 400)
    assert body["issue"][0]["severity"] == "error" and body["issue"][0]["diagnostics"]


async def test_a_merged_persons_results_follow_the_survivor(client, world):
    from federation.identity import service as identity

    svc, zhang = world["svc"], world["zhang"]
    other = await fx.person_by_record(svc, "张伟", "MRN-77", "CQH1")
    assert other != zhang
    cqh1 = await fx.institution(svc, "CQH1")
    before = fx.observation(other, cqh1, dt.datetime(2022, 5, 1, tzinfo=CST), code=fx.HBA1C)
    await fx.store(svc, [before])
    async with svc.db.uow() as uow:
        await identity.merge(uow, svc, zhang, other, reason="same patient", actor="test")
        await uow.commit()
    doctor = await token_for(client, "doctor@SCH1")
    for patient in (zhang, other):
        bundle = await fhir_json(await client.get(f"/fhir/Observation?patient={patient}&code=4548-4", headers=doctor))
        assert set(ids_of(bundle)) == {world["ids"]["h1"], before["id"]}
    read = await fhir_json(await client.get(f"/fhir/Patient/{other}", headers=doctor))
    assert read["id"] == zhang


async def test_no_id_number_is_quoted_back_in_an_error(client, world):
    doctor = await token_for(client, "doctor@SCH1")
    number = ZHANG.id_number
    for path in (
        f"/fhir/Observation?patient={world['zhang']}&date={number}",
        f"/fhir/Observation?patient={world['zhang']}&{number}=1",
        f"/fhir/Observation?patient={world['zhang']}&_sort={number}",
        f"/fhir/Observation/{number}",
        f"/fhir/Patient/{number}",
        f"/fhir/Observation?patient={number}",
    ):
        resp = await client.get(path, headers=doctor)
        assert resp.status in (400, 404), path
        text = await resp.text()
        assert number not in text and number[:17] not in text, path


async def test_imaging_studies_are_read_with_their_verdict(client, world):
    svc, zhang = world["svc"], world["zhang"]
    cqh1 = await fx.institution(svc, "CQH1")
    row = fx.observation(
        zhang, cqh1, NOW - dt.timedelta(days=4), category="imaging", code=("urn:twincity:imaging", "CT|", "CT")
    )
    row["resource_type"] = "ImagingStudy"
    row["body"] = {
        "resourceType": "ImagingStudy",
        "id": row["id"],
        "meta": {"versionId": "1"},
        "status": "available",
        "subject": {"reference": f"Patient/{zhang}"},
        "started": row["body"]["effectiveDateTime"],
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
    }
    await fx.store(svc, [row])
    doctor = await token_for(client, "doctor@SCH1")
    study = await fhir_json(await client.get(f"/fhir/ImagingStudy/{row['id']}", headers=doctor))
    tag, parts = verdict_of(study)
    assert tag == "not-recognised" and parts["reason"] == ["not_in_catalogue"]
    assert study["status"] == "available"


async def test_the_demo_hospitals_results_through_the_real_ingest_are_valid_fhir(client, demo):
    """Bodies as the ingest stores them, decorated with verdicts, parse as FHIR (R4B models; nothing R4B-only):
    every page of a patient's Observations, the DiagnosticReports with their results and Provenance."""
    from health import catalogue_seed
    from health import demo as health_demo

    await catalogue_seed.load_demo(demo)
    await health_demo.load(demo)
    zhang = await fx.person_of(demo, ZHANG.id_number)
    doctor = await token_for(client, "doctor@SCH1")
    tags: set[str] = set()
    for rtype, extra in (("Observation", ""), ("DiagnosticReport", "&_include=DiagnosticReport:result")):
        url = str(client.make_url(f"/fhir/{rtype}?patient={zhang}&_count=20&_revinclude=Provenance:target{extra}"))
        pages = 0
        while url:
            async with client.session.get(url, headers=doctor) as resp:
                bundle = await fhir_json(resp)
            Bundle.model_validate(bundle)
            for e in bundle.get("entry", ()):
                if e["resource"]["resourceType"] in ("Observation", "DiagnosticReport", "ImagingStudy"):
                    tag, parts = verdict_of(e["resource"])
                    assert tag is not None and parts["recognised"] == [tag == "HR"]
                    tags.add(tag)
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
            pages += 1
        assert pages >= 1
    assert tags == {"HR", "not-recognised"}


@pytest.mark.parametrize(
    "query",
    [
        "code=%00",
        "status=final%00",
        "category=%1f",
        "code=" + ",".join(["x"] * 60),
        "code=" + "x" * 5000,
        "_count=",
        "date=",
        "code=|",
        "category=,",
        "patient=",
        "_sort=",
        "_cursor=eyJrIjoiZGF0ZSIsImQiOjEsInYiOiIyMDI0LTAxLTAxIiwiaSI6IngifQ",  # a naive time in a cursor
        "_cursor=eyJrIjoiZGF0ZSIsImQiOjEsInYiOjEyMywiaSI6IngifQ",  # a number for the time
        "_cursor=WzFd",  # a JSON list
        "date=9999&_sort=date",
    ],
)
async def test_hostile_search_values_never_reach_a_500(client, world, query):
    doctor = await token_for(client, "doctor@SCH1")
    resp = await client.get(f"/fhir/Observation?patient={world['zhang']}&{query}", headers=doctor)
    assert resp.status < 500, await resp.text()
    assert resp.content_type == FHIR
