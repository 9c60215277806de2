"""The recognition catalogue over HTTP: public reads, administrators' changes, a hospital mapping its own codes,
QC certifications, and clear problem+json refusals that leave nothing half-stored."""

from __future__ import annotations

from federation.accounts.service import create_api_key
from health import catalogue_seed
from tests.conftest import token_for

BASE = "/api/v1/health/catalogue"


async def _setup(client, demo) -> dict[str, dict[str, str]]:  # noqa: ANN001
    await catalogue_seed.load_demo(demo)
    async with demo.db.uow() as uow:
        _, secret = await create_api_key(uow, demo, "CQH1", ["health.catalogue"], actor="test")
        await uow.commit()
    return {
        "admin": await token_for(client, "admin@federation"),
        "doctor": await token_for(client, "doctor@SCH1"),
        "key": {"Authorization": f"Bearer {secret}"},
    }


async def _problem(resp, status: int, code: str) -> None:  # noqa: ANN001
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == code


async def test_anyone_reads_the_catalogue_in_force_on_a_day(client, demo) -> None:
    await _setup(client, demo)
    resp = await client.get(f"{BASE}/items", params={"at": "2025-01-01"})
    assert resp.status == 200
    body = await resp.json()
    assert len(body["items"]) == len(catalogue_seed.DEFAULT) and body["at"] == "2025-01-01"
    glu = next(i for i in body["items"] if i["code"] == "LAB-GLU")
    assert (glu["loinc"], glu["window_days"], glu["version"], glu["qc_required"]) == ("2345-7", 7, 1, True)
    imaging = await (await client.get(f"{BASE}/items", params={"category": "imaging"})).json()
    assert {i["category"] for i in imaging["items"]} == {"imaging"}
    assert len(imaging["items"]) == len(catalogue_seed.IMAGING)
    before = await (await client.get(f"{BASE}/items", params={"at": "2022-12-31"})).json()
    assert before["items"] == []
    await _problem(await client.get(f"{BASE}/items", params={"at": "someday"}), 422, "validation_failed")
    detail = await (await client.get(f"{BASE}/items/lab-hgb")).json()
    assert detail["code"] == "LAB-HGB" and detail["local_codes"][0]["hospital"] == "SCH2"
    await _problem(await client.get(f"{BASE}/items/LAB-NOPE"), 404, "health.catalogue.item_not_found")


async def test_administrators_add_change_and_remove_items(client, demo) -> None:
    h = await _setup(client, demo)
    new = {
        "code": "LAB-CRP",
        "category": "laboratory",
        "name": "C反应蛋白 CRP",
        "qc_category": "immunology",
        "loinc": "1988-5",
        "effective_from": "2025-01-01",
        "window_days": 7,
        "levels": ["三级甲等"],
    }
    resp = await client.post(f"{BASE}/items", json=new, headers=h["admin"])
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["versions"][0]["levels"] == ["三级甲等"]
    await _problem(
        await client.post(f"{BASE}/items", json=new, headers=h["admin"]), 409, "health.catalogue.item_exists"
    )
    same_loinc = {**new, "code": "LAB-CRP2"}
    await _problem(
        await client.post(f"{BASE}/items", json=same_loinc, headers=h["admin"]),
        409,
        "health.catalogue.standard_code_taken",
    )
    no_site = {**new, "code": "IMG-X", "category": "imaging", "loinc": None, "modality": "CT"}
    await _problem(
        await client.post(f"{BASE}/items", json=no_site, headers=h["admin"]), 422, "health.catalogue.invalid_item"
    )
    await _problem(
        await client.post(f"{BASE}/items", json={**new, "window_days": 0}, headers=h["admin"]), 422, "validation_failed"
    )
    await _problem(await client.post(f"{BASE}/items", json=new, headers=h["doctor"]), 403, "forbidden")

    shorter = {"effective_from": "2025-06-01", "window_days": 3, "levels": ["三级甲等"], "note": "faster turnover"}
    resp = await client.post(f"{BASE}/items/LAB-CRP/versions", json=shorter, headers=h["admin"])
    assert resp.status == 201, await resp.text()
    versions = (await resp.json())["versions"]
    assert [(v["version"], v["effective_to"], v["window_days"]) for v in versions] == [
        (1, "2025-06-01", 7),
        (2, None, 3),
    ]
    await _problem(
        await client.post(
            f"{BASE}/items/LAB-CRP/versions", json={**shorter, "effective_from": "2025-05-01"}, headers=h["admin"]
        ),
        409,
        "health.catalogue.overlapping_dates",
    )
    await _problem(
        await client.post(f"{BASE}/items/LAB-NOPE/versions", json=shorter, headers=h["admin"]),
        404,
        "health.catalogue.item_not_found",
    )
    resp = await client.post(f"{BASE}/items/LAB-CRP/removal", json={"effective_to": "2026-01-01"}, headers=h["admin"])
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["versions"][-1]["effective_to"] == "2026-01-01"
    await _problem(
        await client.post(f"{BASE}/items/LAB-CRP/removal", json={"effective_to": "2026-02-01"}, headers=h["admin"]),
        409,
        "health.catalogue.already_removed",
    )
    listed = await (await client.get(f"{BASE}/items", params={"at": "2026-01-01"})).json()
    assert "LAB-CRP" not in {i["code"] for i in listed["items"]}
    listed = await (await client.get(f"{BASE}/items", params={"at": "2025-12-31"})).json()
    assert next(i for i in listed["items"] if i["code"] == "LAB-CRP")["window_days"] == 3


async def test_a_hospital_system_maps_only_its_own_codes(client, demo) -> None:
    h = await _setup(client, demo)
    mapping = {"hospital": "CQH1", "system": "urn:twincity:CQH1:lis", "code": "2001", "item_code": "LAB-ALT"}
    resp = await client.post(f"{BASE}/local-codes", json=mapping, headers=h["key"])
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["item_code"] == "LAB-ALT"
    resp = await client.post(f"{BASE}/local-codes", json=mapping, headers=h["key"])
    assert resp.status == 200  # the same mapping again changes nothing
    await _problem(
        await client.post(f"{BASE}/local-codes", json={**mapping, "item_code": "LAB-AST"}, headers=h["key"]),
        409,
        "health.catalogue.local_code_taken",
    )
    await _problem(
        await client.post(f"{BASE}/local-codes", json={**mapping, "hospital": "SCH1"}, headers=h["key"]),
        403,
        "health.catalogue.other_hospital",
    )
    await _problem(
        await client.post(f"{BASE}/local-codes", json={**mapping, "hospital": "CQL"}, headers=h["admin"]),
        422,
        "health.catalogue.not_a_hospital",
    )
    await _problem(
        await client.post(f"{BASE}/local-codes", json={**mapping, "hospital": "NOPE"}, headers=h["admin"]),
        404,
        "health.catalogue.hospital_not_found",
    )
    detail = await (await client.get(f"{BASE}/items/LAB-ALT")).json()
    assert [(c["hospital"], c["code"]) for c in detail["local_codes"]] == [("CQH1", "2001")]


async def test_qc_certifications_are_kept_by_administrators_and_read_by_staff(client, demo) -> None:
    h = await _setup(client, demo)
    url = "/api/v1/health/hospitals/SCH2/qc-certifications"
    listed = await (await client.get(url, headers=h["doctor"])).json()
    assert {q["category"] for q in listed["items"]} == set(catalogue_seed.QC_CATEGORIES)
    assert {q["valid_to"] for q in listed["items"]} == {"2025-06-30"}
    cert = {"category": "imaging", "valid_from": "2025-07-01", "valid_to": "2027-06-30", "scheme": "省质控中心"}
    resp = await client.post(url, json=cert, headers=h["admin"])
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["hospital"] == "SCH2"
    assert (await client.post(url, json=cert, headers=h["admin"])).status == 200
    await _problem(
        await client.post(url, json={**cert, "valid_to": "2025-01-01"}, headers=h["admin"]),
        422,
        "health.catalogue.invalid_period",
    )
    await _problem(
        await client.post("/api/v1/health/hospitals/CQL/qc-certifications", json=cert, headers=h["admin"]),
        422,
        "health.catalogue.not_a_hospital",
    )
    await _problem(
        await client.get("/api/v1/health/hospitals/NOPE/qc-certifications", headers=h["doctor"]),
        404,
        "health.catalogue.hospital_not_found",
    )
    listed = await (await client.get(url, headers=h["doctor"])).json()
    assert len(listed["items"]) == len(catalogue_seed.QC_CATEGORIES) + 1
