"""The catalogue kept in the database: seeding, versions over time, removals, local codes, QC, the generation that
tells each process when to reload, and verdicts judged from stored results on both engines."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, func, select

from federation.audit.models import AuditEntry
from federation.members.models import Institution
from health import catalogue, catalogue_seed
from health.models import CatalogueGeneration, ItemVersion, StoredResource
from health.recognition import LOINC_SYSTEM, Reason, current_generation, judge_rows, load_catalogue

TODAY = dt.date(2025, 9, 1)
ADMIN = "staff:admin@federation"


async def _seeded(svc) -> None:  # noqa: ANN001
    counts = await catalogue_seed.load_demo(svc)
    assert counts["recognition items"] == len(catalogue_seed.DEFAULT)


async def _ids(svc) -> dict[str, str]:  # noqa: ANN001
    async with svc.db.reader() as s:
        return {code: iid for code, iid in await s.execute(select(Institution.code, Institution.id))}


async def _result(
    svc, hospital_id: str, code: str, issued: dt.date, *, system: str = LOINC_SYSTEM, status: str = "final"
) -> StoredResource:  # noqa: ANN001, E501
    row = StoredResource(
        resource_type="Observation",
        institution_id=hospital_id,
        source_id=f"{code}-{issued}-{system}",
        status=status,
        category="laboratory",
        code_system=system,
        code=code,
        issued_at=dt.datetime.combine(issued, dt.time(9, 0), tzinfo=dt.UTC),
        body={"resourceType": "Observation"},
    )
    async with svc.db.uow() as uow:
        uow.session.add(row)
        await uow.commit()
    return row


async def test_seed_is_idempotent_audited_and_bumps_the_generation(demo) -> None:
    svc = demo
    async with svc.db.reader() as s:
        before = await current_generation(s)
    await _seeded(svc)
    again = await catalogue_seed.load_demo(svc)
    assert again == {"recognition items": 0, "qc certifications": 0, "local codes": 0}
    async with svc.db.reader() as s:
        assert await current_generation(s) > before
        cat = await load_catalogue(s)
        actions = (await s.scalars(select(AuditEntry.action).where(AuditEntry.action.like("health.%")))).all()
    assert len(cat.in_force(dt.date(2025, 1, 1))) == len(catalogue_seed.DEFAULT)
    assert cat.in_force(dt.date(2022, 12, 31)) == []
    assert actions.count("health.catalogue.item_create") == len(catalogue_seed.DEFAULT)
    assert "health.qc.certify" in actions and "health.catalogue.local_code_map" in actions
    assert len({i.loinc for i in cat.items.values() if i.loinc}) == len([i for i in cat.items.values() if i.loinc])


async def test_the_snapshot_is_cached_until_the_generation_moves(demo) -> None:
    svc = demo
    await _seeded(svc)
    async with svc.db.reader() as s:
        first = await load_catalogue(s)
    async with svc.db.reader() as s:
        assert await load_catalogue(s) is first
    async with svc.db.uow() as uow:
        await catalogue.add_version(
            uow, svc, "LAB-GLU", catalogue.Rules(dt.date(2025, 6, 1), 3, catalogue_seed.LEVELS), actor=ADMIN
        )
        # read inside the changing transaction: seen, but never cached, since it may yet roll back (it does:
        # leaving the block without commit)
        inside = await load_catalogue(uow.session)
        assert inside.items["LAB-GLU"].version_on(dt.date(2025, 7, 1)).window_days == 3  # type: ignore[union-attr]
    async with svc.db.reader() as s:
        assert await load_catalogue(s) is first
    async with svc.db.uow() as uow:
        await catalogue.add_version(
            uow, svc, "LAB-GLU", catalogue.Rules(dt.date(2025, 6, 1), 3, catalogue_seed.LEVELS), actor=ADMIN
        )
        await uow.commit()
    async with svc.db.reader() as s:
        second = await load_catalogue(s)
    assert second is not first and second.generation > first.generation
    assert second.items["LAB-GLU"].version_on(dt.date(2025, 7, 1)).window_days == 3  # type: ignore[union-attr]


async def test_a_missing_generation_row_is_created_on_the_first_change(demo) -> None:
    svc = demo
    async with svc.db.uow() as uow:
        await uow.session.execute(delete(CatalogueGeneration))
        await uow.commit()
    async with svc.db.reader() as s:
        assert await current_generation(s) == 0
    await _seeded(svc)
    async with svc.db.reader() as s:
        assert await current_generation(s) >= 1


async def test_verdicts_follow_the_catalogue_and_the_hospitals_over_time(demo) -> None:
    svc = demo
    await _seeded(svc)
    ids = await _ids(svc)
    glucose_cq = await _result(svc, ids["CQH1"], "2345-7", dt.date(2025, 8, 29))
    glucose_sch2 = await _result(svc, ids["SCH2"], "2345-7", dt.date(2025, 8, 29))  # SCH2's QC ran out 2025-06-30
    glucose_sch2_old = await _result(svc, ids["SCH2"], "2345-7", dt.date(2025, 6, 30))
    local = await _result(svc, ids["SCH2"], "HGB", dt.date(2025, 6, 28), system="urn:twincity:SCH2:lis")
    hba1c = await _result(svc, ids["SCH1"], "4548-4", dt.date(2025, 7, 1))
    tsh = await _result(svc, ids["SCH1"], "3016-3", dt.date(2025, 8, 1), status="preliminary")
    unknown = await _result(svc, ids["CQH1"], "0000-0", dt.date(2025, 8, 1))
    rows = [glucose_cq, glucose_sch2, glucose_sch2_old, local, hba1c, tsh, unknown]

    async with svc.db.reader() as s:
        got = await judge_rows(s, rows, TODAY)
    assert [v.reasons for v in got] == [
        (),
        (Reason.QC_MISSING,),
        (Reason.EXPIRED,),  # QC valid on its last day; but a week-old glucose is past its window
        (Reason.EXPIRED,),
        (),
        (Reason.NOT_FINAL,),
        (Reason.NOT_IN_CATALOGUE,),
    ]
    assert got[0].item_code == "LAB-GLU" and got[0].valid_until == dt.date(2025, 9, 5)
    assert got[3].item_code == "LAB-HGB"

    # HbA1c's window shortened from 90 to 30 days from 2025-08-15: applies to July's result at once
    # glucose removed from 2025-09-01: not recognised any more, whatever its age
    async with svc.db.uow() as uow:
        await catalogue.add_version(
            uow, svc, "LAB-HBA1C", catalogue.Rules(dt.date(2025, 8, 15), 30, catalogue_seed.LEVELS), actor=ADMIN
        )
        await catalogue.remove_item(uow, svc, "LAB-GLU", dt.date(2025, 9, 1), actor=ADMIN)
        await uow.commit()
    async with svc.db.reader() as s:
        later = await judge_rows(s, [glucose_cq, hba1c], TODAY)
        earlier = await judge_rows(s, [glucose_cq], dt.date(2025, 8, 31))
    assert later[0].reasons == (Reason.NOT_IN_CATALOGUE,)
    assert later[1].reasons == (Reason.EXPIRED,) and later[1].catalogue_version == 1
    assert earlier[0].recognised

    # SCH2 renews its QC: its recent result is recognised again
    async with svc.db.uow() as uow:
        await catalogue_seed.seed_qc(
            uow, svc, "SCH2", ["clinical_chemistry"], dt.date(2025, 8, 1), dt.date(2026, 7, 31)
        )
        await uow.commit()
    async with svc.db.reader() as s:
        (renewed,) = await judge_rows(s, [glucose_sch2], dt.date(2025, 8, 31))
    assert renewed.recognised


async def test_versions_are_never_rewritten(demo) -> None:
    svc = demo
    await _seeded(svc)
    rules = catalogue.Rules(dt.date(2022, 6, 1), 10, catalogue_seed.LEVELS)
    with pytest.raises(catalogue.OverlappingDates):
        async with svc.db.uow() as uow:
            await catalogue.add_version(uow, svc, "LAB-K", rules, actor=ADMIN)
    with pytest.raises(catalogue.ItemNotFound):
        async with svc.db.uow() as uow:
            await catalogue.add_version(uow, svc, "LAB-NOPE", rules, actor=ADMIN)
    async with svc.db.uow() as uow:
        await catalogue.remove_item(uow, svc, "LAB-K", dt.date(2024, 1, 1), actor=ADMIN)
        await uow.commit()
    with pytest.raises(catalogue.AlreadyRemoved):
        async with svc.db.uow() as uow:
            await catalogue.remove_item(uow, svc, "LAB-K", dt.date(2024, 2, 1), actor=ADMIN)
    with pytest.raises(catalogue.OverlappingDates):  # back in the catalogue only after it left
        async with svc.db.uow() as uow:
            await catalogue.add_version(uow, svc, "LAB-K", catalogue.Rules(dt.date(2023, 6, 1), 7), actor=ADMIN)
    async with svc.db.uow() as uow:
        await catalogue.add_version(uow, svc, "LAB-K", catalogue.Rules(dt.date(2024, 6, 1), 5), actor=ADMIN)
        await uow.commit()
    async with svc.db.reader() as s:
        detail = await catalogue.item_detail(s, "lab-k")
        cat = await load_catalogue(s)
    assert [(v.version, v.effective_from, v.effective_to) for v in detail.versions] == [
        (1, dt.date(2023, 1, 1), dt.date(2024, 1, 1)),
        (2, dt.date(2024, 6, 1), None),
    ]
    k = cat.items["LAB-K"]
    assert k.version_on(dt.date(2024, 3, 1)) is None and k.version_on(dt.date(2024, 7, 1)).window_days == 5  # type: ignore[union-attr]


async def test_bad_changes_leave_nothing_behind(demo) -> None:
    svc = demo
    await _seeded(svc)
    async with svc.db.reader() as s:
        generation = await current_generation(s)
        versions = await s.scalar(select(func.count()).select_from(ItemVersion))
    bad = [
        catalogue.NewItem("LAB-GLU", "laboratory", "dup", "clinical_chemistry", catalogue.Rules(TODAY, 7), "1-8"),
        catalogue.NewItem("LAB-X", "laboratory", "same LOINC", "x", catalogue.Rules(TODAY, 7), "2345-7"),
        catalogue.NewItem(
            "IMG-X", "imaging", "same site", "imaging", catalogue.Rules(TODAY, 7), None, "CT", "51185008"
        ),
        catalogue.NewItem("LAB-Y", "laboratory", "no LOINC", "x", catalogue.Rules(TODAY, 7)),
        catalogue.NewItem("LAB-Z", "laboratory", "bad window", "x", catalogue.Rules(TODAY, 0), "9-9"),
    ]
    for cmd in bad:
        with pytest.raises((catalogue.ItemExists, catalogue.StandardCodeTaken, catalogue.InvalidItem)):
            async with svc.db.uow() as uow:
                await catalogue.create_item(uow, svc, cmd, actor=ADMIN)
    with pytest.raises(catalogue.LocalCodeTaken):
        async with svc.db.uow() as uow:
            await catalogue.map_local_code(
                uow, svc, catalogue.Mapping("SCH2", "urn:twincity:SCH2:lis", "GLU", "LAB-K"), actor=ADMIN
            )
    with pytest.raises(catalogue.NotAHospital):
        async with svc.db.uow() as uow:
            await catalogue.map_local_code(uow, svc, catalogue.Mapping("CQL", "urn:x", "1", "LAB-K"), actor=ADMIN)
    with pytest.raises(catalogue.OtherHospital):
        async with svc.db.uow() as uow:
            await catalogue.map_local_code(
                uow, svc, catalogue.Mapping("SCH2", "urn:x", "1", "LAB-K"), actor="apikey", acting_for="CQH1"
            )
    with pytest.raises(catalogue.InvalidPeriod):
        async with svc.db.uow() as uow:
            await catalogue.add_qc(
                uow, svc, catalogue.NewQc("SCH1", "imaging", dt.date(2025, 2, 1), dt.date(2025, 1, 1)), actor=ADMIN
            )
    async with svc.db.reader() as s:
        assert await current_generation(s) == generation
        assert await s.scalar(select(func.count()).select_from(ItemVersion)) == versions


async def test_a_hospital_downgraded_in_the_member_registry_is_judged_by_its_new_level(demo) -> None:
    """The member registry is the core's; its change reaches the cached snapshot through the outbox."""
    from federation.jobs import outbox
    from federation.members import service as members

    svc = demo
    await _seeded(svc)
    ids = await _ids(svc)
    glucose = await _result(svc, ids["CQH1"], "2345-7", dt.date(2025, 8, 29))
    async with svc.db.reader() as s:
        (before,) = await judge_rows(s, [glucose], TODAY)
    assert before.recognised

    async with svc.db.uow() as uow:
        inst = await members.get(uow.session, "CQH1")
        await members.upsert(
            uow,
            members.NewInstitution(
                "CQH1",
                inst.name,
                "hospital",
                inst.province,
                inst.city,
                "一级",
                inst.ownership,
                participation_since=inst.participation_since,
            ),
        )
        await uow.commit()
    while await outbox.relay(svc):
        pass
    async with svc.db.reader() as s:
        (after,) = await judge_rows(s, [glucose], TODAY)
    assert after.reasons == (Reason.INSTITUTION_NOT_ELIGIBLE,)
