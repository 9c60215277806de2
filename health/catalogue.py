"""Keeping the recognition catalogue: items, their versions and removals, hospitals' local codes, QC certifications.

Administrators change the catalogue over time and every past version stays: a version is never edited, a change
closes the open version and opens the next, a removal closes it and opens none. Every change is audited and bumps
``CatalogueGeneration`` in the same unit of work, so each process's in-memory snapshot
(``health.recognition.load_catalogue``) is reloaded on its next read.

The generation bump is the first write of every change: on PostgreSQL its row lock serialises catalogue writers
(SQLite's single writer does the same), so two administrators closing the same open version cannot both win.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.db import UnitOfWork, dialect_insert
from federation.errors import Conflict, Forbidden, InvalidInput, NotFound
from federation.members.models import Institution, InstitutionKind
from federation.members.service import MEMBER_CHANGED
from federation.services import Services
from health.models import CatalogueGeneration, ItemVersion, LocalCode, QcCertification, RecognitionItem
from health.recognition import GENERATION_ROW, UNCOMMITTED_CHANGE, imaging_code

CATEGORIES = ("laboratory", "imaging")


class ItemNotFound(NotFound):
    code = "health.catalogue.item_not_found"
    title = "No such catalogue item"


class ItemExists(Conflict):
    code = "health.catalogue.item_exists"
    title = "An item with this code exists"


class StandardCodeTaken(Conflict):
    code = "health.catalogue.standard_code_taken"
    title = "Another item already stands for this LOINC code or modality and body site"


class OverlappingDates(Conflict):
    code = "health.catalogue.overlapping_dates"
    title = "The dates overlap a version already in the catalogue"


class AlreadyRemoved(Conflict):
    code = "health.catalogue.already_removed"
    title = "The item has no open version to close"


class InvalidItem(InvalidInput):
    code = "health.catalogue.invalid_item"
    title = "The item is incomplete for its category"


class HospitalNotFound(NotFound):
    code = "health.catalogue.hospital_not_found"
    title = "No such member"


class NotAHospital(InvalidInput):
    code = "health.catalogue.not_a_hospital"
    title = "The member is not a hospital"


class LocalCodeTaken(Conflict):
    code = "health.catalogue.local_code_taken"
    title = "The hospital's code is already mapped to another item"


class OtherHospital(Forbidden):
    code = "health.catalogue.other_hospital"
    title = "A hospital's system may map only its own codes"


class InvalidPeriod(InvalidInput):
    code = "health.catalogue.invalid_period"
    title = "The period ends before it starts"


@dataclasses.dataclass(frozen=True)
class Rules:
    """What a version says: from when, how long a result stays valid, and who may issue recognised results."""

    effective_from: dt.date
    window_days: int
    levels: Sequence[str] = ()
    public_only: bool = False
    qc_required: bool = True
    note: str = ""


@dataclasses.dataclass(frozen=True)
class NewItem:
    code: str
    category: str
    name: str
    qc_category: str
    rules: Rules
    loinc: str | None = None
    modality: str | None = None
    body_site: str | None = None


@dataclasses.dataclass(frozen=True)
class Mapping:
    """A hospital's own code (its LIS/PACS system and code) for a catalogue item."""

    hospital: str
    system: str
    code: str
    item_code: str


@dataclasses.dataclass(frozen=True)
class NewQc:
    hospital: str
    category: str
    valid_from: dt.date
    valid_to: dt.date
    scheme: str = ""


@dataclasses.dataclass(frozen=True)
class ItemDetail:
    item: RecognitionItem
    versions: list[ItemVersion]
    local_codes: list[tuple[str, LocalCode]]  # (hospital code, mapping)


async def bump_generation(uow: UnitOfWork) -> None:
    """Move the generation on (creating its row when a fresh database lacks it) and mark the session, so a read
    of the catalogue later in this same transaction is not cached."""
    stmt = dialect_insert(uow.session, CatalogueGeneration).values(id=GENERATION_ROW, generation=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CatalogueGeneration.id], set_={"generation": CatalogueGeneration.generation + 1}
    )
    await uow.session.execute(stmt)
    uow.session.info[UNCOMMITTED_CHANGE] = True


def _norm_code(code: str) -> str:
    return code.strip().upper()


async def _item(session: AsyncSession, code: str) -> RecognitionItem:
    item = await session.scalar(select(RecognitionItem).where(RecognitionItem.code == _norm_code(code)))
    if item is None:
        raise ItemNotFound(f"no catalogue item {_norm_code(code)}")
    return item


async def _versions(session: AsyncSession, item_id: str) -> list[ItemVersion]:
    q = select(ItemVersion).where(ItemVersion.item_id == item_id).order_by(ItemVersion.version)
    return list((await session.scalars(q)).all())


async def hospital(session: AsyncSession, code: str) -> Institution:
    """The hospital member with this code: 404 for no member, 422 for a member that is not a hospital."""
    inst = await session.scalar(select(Institution).where(Institution.code == code.strip().upper()))
    if inst is None:
        raise HospitalNotFound(f"no member {code.strip().upper()}")
    if inst.kind != InstitutionKind.HOSPITAL:
        raise NotAHospital(f"member {inst.code} is a {inst.kind}, not a hospital")
    return inst


def _check_rules(rules: Rules) -> None:
    if not 1 <= rules.window_days <= 3650:
        raise InvalidItem("window_days must be between 1 and 3650")


def _version_row(item_id: str, number: int, rules: Rules, actor: str) -> ItemVersion:
    return ItemVersion(
        item_id=item_id,
        version=number,
        effective_from=rules.effective_from,
        effective_to=None,
        window_days=rules.window_days,
        levels=list(dict.fromkeys(x.strip() for x in rules.levels if x.strip())),
        public_only=rules.public_only,
        qc_required=rules.qc_required,
        changed_by=actor,
        note=rules.note,
    )


def _rules_details(rules: Rules) -> dict[str, Any]:
    return {
        "effective_from": rules.effective_from.isoformat(),
        "window_days": rules.window_days,
        "levels": list(rules.levels),
        "public_only": rules.public_only,
        "qc_required": rules.qc_required,
    }


async def create_item(uow: UnitOfWork, svc: Services, cmd: NewItem, *, actor: str) -> RecognitionItem:
    """Add an item with its first version. Laboratory items need a LOINC code; imaging items a modality and a
    body site (and may name their report's LOINC code). One item per standard code, or results would match two."""
    code = _norm_code(cmd.code)
    if cmd.category not in CATEGORIES:
        raise InvalidItem(f"category must be one of {', '.join(CATEGORIES)}")
    if cmd.category == "laboratory" and not cmd.loinc:
        raise InvalidItem("a laboratory item needs its LOINC code")
    if cmd.category == "imaging" and not (cmd.modality and cmd.body_site):
        raise InvalidItem("an imaging item needs its DICOM modality and SNOMED body site")
    _check_rules(cmd.rules)
    await bump_generation(uow)
    s = uow.session
    if await s.scalar(select(RecognitionItem.id).where(RecognitionItem.code == code)):
        raise ItemExists(f"catalogue item {code} exists")
    if cmd.loinc and await s.scalar(select(RecognitionItem.code).where(RecognitionItem.loinc == cmd.loinc)):
        raise StandardCodeTaken(f"LOINC {cmd.loinc} is already an item of the catalogue")
    modality = cmd.modality.upper() if cmd.modality else None
    if modality and cmd.body_site:
        taken = await s.scalar(
            select(RecognitionItem.code).where(
                RecognitionItem.modality == modality, RecognitionItem.body_site == cmd.body_site
            )
        )
        if taken:
            raise StandardCodeTaken(f"{imaging_code(modality, cmd.body_site)} is already item {taken}")
    item = RecognitionItem(
        code=code,
        category=cmd.category,
        name=cmd.name,
        loinc=cmd.loinc or None,
        modality=modality,
        body_site=cmd.body_site or None,
        qc_category=cmd.qc_category,
    )
    s.add(item)
    await s.flush()
    s.add(_version_row(item.id, 1, cmd.rules, actor))
    await s.flush()
    await svc.audit(
        uow,
        Record(
            action="health.catalogue.item_create",
            actor=actor,
            details={"item": code, "category": cmd.category, **_rules_details(cmd.rules)},
        ),
    )
    return item


async def add_version(uow: UnitOfWork, svc: Services, item_code: str, rules: Rules, *, actor: str) -> ItemVersion:
    """New rules from ``rules.effective_from`` on: the open version is closed that day. A date before the open
    version's start (or, for a removed item, before its removal) would rewrite history and is refused."""
    _check_rules(rules)
    await bump_generation(uow)
    item = await _item(uow.session, item_code)
    versions = await _versions(uow.session, item.id)
    last = versions[-1] if versions else None
    if last is not None:
        if last.effective_to is None:
            if rules.effective_from < last.effective_from:
                raise OverlappingDates(
                    f"version {last.version} of {item.code} starts {last.effective_from}: "
                    f"a new version cannot start before it"
                )
            last.effective_to = rules.effective_from
        elif rules.effective_from < last.effective_to:
            raise OverlappingDates(
                f"{item.code} is in the catalogue until {last.effective_to}: it can return from that day on"
            )
    row = _version_row(item.id, (last.version if last else 0) + 1, rules, actor)
    uow.session.add(row)
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="health.catalogue.version_add",
            actor=actor,
            details={"item": item.code, "version": row.version, **_rules_details(rules)},
        ),
    )
    return row


async def remove_item(
    uow: UnitOfWork, svc: Services, item_code: str, effective_to: dt.date, *, actor: str, note: str = ""
) -> ItemVersion:
    """Take an item out of the catalogue from ``effective_to`` on (exclusive end of its open version)."""
    await bump_generation(uow)
    item = await _item(uow.session, item_code)
    versions = await _versions(uow.session, item.id)
    open_version = versions[-1] if versions and versions[-1].effective_to is None else None
    if open_version is None:
        raise AlreadyRemoved(f"{item.code} is not in the catalogue now or later: nothing to remove")
    if effective_to < open_version.effective_from:
        raise OverlappingDates(
            f"version {open_version.version} of {item.code} starts {open_version.effective_from}: "
            f"it cannot end before it starts"
        )
    open_version.effective_to = effective_to
    if note:
        open_version.note = (open_version.note + " | " if open_version.note else "") + note[:200]
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="health.catalogue.item_remove",
            actor=actor,
            details={"item": item.code, "version": open_version.version, "effective_to": effective_to.isoformat()},
        ),
    )
    return open_version


async def map_local_code(
    uow: UnitOfWork, svc: Services, cmd: Mapping, *, actor: str, acting_for: str | None = None
) -> tuple[LocalCode, bool]:
    """Map a hospital's code to an item; returns the mapping and whether it is new (the same mapping again is a
    no-op). ``acting_for`` is the hospital a member system's key belongs to: it maps only its own codes."""
    hosp_code = cmd.hospital.strip().upper()
    if acting_for is not None and acting_for.upper() != hosp_code:
        raise OtherHospital(f"this key belongs to {acting_for.upper()}, not {hosp_code}")
    await bump_generation(uow)
    s = uow.session
    inst = await hospital(s, hosp_code)
    item = await _item(s, cmd.item_code)
    existing = await s.scalar(
        select(LocalCode).where(
            LocalCode.institution_id == inst.id, LocalCode.system == cmd.system, LocalCode.code == cmd.code
        )
    )
    if existing is not None:
        if existing.item_id != item.id:
            other = await s.scalar(select(RecognitionItem.code).where(RecognitionItem.id == existing.item_id))
            raise LocalCodeTaken(f"{inst.code}'s code {cmd.code} in {cmd.system} is mapped to {other}")
        return existing, False
    row = LocalCode(institution_id=inst.id, system=cmd.system, code=cmd.code, item_id=item.id, created_by=actor)
    s.add(row)
    await s.flush()
    await svc.audit(
        uow,
        Record(
            action="health.catalogue.local_code_map",
            actor=actor,
            actor_institution=acting_for,
            details={"hospital": inst.code, "system": cmd.system, "code": cmd.code, "item": item.code},
        ),
    )
    return row, True


async def add_qc(uow: UnitOfWork, svc: Services, cmd: NewQc, *, actor: str) -> tuple[QcCertification, bool]:
    """Record a hospital's QC certification; the same certification again (category, scheme, dates) is a no-op.
    Overlapping periods are allowed: a renewal is often certified before the old one runs out."""
    if cmd.valid_to < cmd.valid_from:
        raise InvalidPeriod(f"valid_to {cmd.valid_to} is before valid_from {cmd.valid_from}")
    await bump_generation(uow)
    s = uow.session
    inst = await hospital(s, cmd.hospital)
    existing = await s.scalar(
        select(QcCertification).where(
            QcCertification.institution_id == inst.id,
            QcCertification.category == cmd.category,
            QcCertification.scheme == cmd.scheme,
            QcCertification.valid_from == cmd.valid_from,
            QcCertification.valid_to == cmd.valid_to,
        )
    )
    if existing is not None:
        return existing, False
    row = QcCertification(
        institution_id=inst.id,
        category=cmd.category,
        scheme=cmd.scheme,
        valid_from=cmd.valid_from,
        valid_to=cmd.valid_to,
        created_by=actor,
    )
    s.add(row)
    await s.flush()
    await svc.audit(
        uow,
        Record(
            action="health.qc.certify",
            actor=actor,
            details={
                "hospital": inst.code,
                "category": cmd.category,
                "valid_from": cmd.valid_from.isoformat(),
                "valid_to": cmd.valid_to.isoformat(),
            },
        ),
    )
    return row, True


async def item_detail(session: AsyncSession, code: str) -> ItemDetail:
    """An item with every version, oldest first, and every hospital's local code for it."""
    item = await _item(session, code)
    rows = await session.execute(
        select(Institution.code, LocalCode)
        .join(Institution, Institution.id == LocalCode.institution_id)
        .where(LocalCode.item_id == item.id)
        .order_by(Institution.code, LocalCode.system, LocalCode.code)
    )
    return ItemDetail(item, await _versions(session, item.id), [(c, lc) for c, lc in rows])


async def qc_certifications(session: AsyncSession, hospital_code: str) -> tuple[Institution, list[QcCertification]]:
    inst = await hospital(session, hospital_code)
    q = (
        select(QcCertification)
        .where(QcCertification.institution_id == inst.id)
        .order_by(QcCertification.category, QcCertification.valid_from)
    )
    return inst, list((await session.scalars(q)).all())


async def on_member_changed(svc: Services, payload: dict[str, Any]) -> None:
    """A hospital joined, or its level, ownership or participation date changed: verdicts read those from the
    catalogue snapshot, so move the generation on and every process reloads it."""
    if payload.get("kind") != "hospital":
        return
    async with svc.db.uow() as uow:
        await bump_generation(uow)
        await uow.commit()


def register(svc: Services) -> None:
    svc.on_event(MEMBER_CHANGED, on_member_changed)
