"""The recognition catalogue held in memory, and the verdict on a prior result: recognised (HR), or not and why.

A verdict is computed when a result is read, never stored: the catalogue, the issuing hospital's standing and the
result's age all change after the result was made. Judging is pure Python over a snapshot (:class:`Catalogue`)
loaded once per catalogue generation, so a doctor's query judges a thousand results without a query each.

The rules, all read from data (``health.models`` and the member registry), none written into the logic:

* **Which item.** The issuing hospital's local mapping ``(institution_id, code_system, code)`` first; else a LOINC
  code (``code_system == "http://loinc.org"``) names the item with that ``loinc``; else an imaging study stored as
  ``code_system == "urn:twincity:imaging"`` and ``code == "<MODALITY>|<body site SNOMED code>"`` names the item
  with that modality and body site. No item: ``not_in_catalogue``.
* **The issue day** is ``issued_at`` (else ``effective_at``) as a date in China time (UTC+8).
* **In the catalogue.** A version of the item must be in force on the issue day *and* on the day of the query: an
  item added after the result, or removed since, is ``not_in_catalogue``.
* **Eligibility** comes from the version in force on the issue day (when there is none, from today's, else from
  the version nearest the issue day, so the other reasons can still be told): ``institution_not_eligible`` when the
  hospital's level is not among the version's levels (an empty list admits any level), when the version is
  ``public_only`` and the hospital is not registered as public, when the result was issued before the hospital's
  ``participation_since``, or when the issuer is not a hospital member at all.
* **Quality control.** When the version requires it, the hospital must have held a certification of the item's
  ``qc_category`` valid on the issue day (both ends inclusive); otherwise ``qc_missing``.
* **Window.** The shorter of the issue-day version's and today's version's ``window_days`` applies (a window
  shortened applies at once); ``expired`` when ``(today - issue day).days > window``. A result with no date at all
  cannot show it is within any window: ``expired``.
* **Status.** ``not_final`` unless the status is final, amended or corrected.

Several reasons are reported together when several hold, always in the order of :class:`Reason`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.members.models import Institution, InstitutionKind, Ownership
from health.models import CatalogueGeneration, ItemVersion, LocalCode, QcCertification, RecognitionItem, StoredResource

CHINA = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")
_CHINA_OFFSET = dt.timedelta(hours=8)
LOINC_SYSTEM = "http://loinc.org"
IMAGING_SYSTEM = "urn:twincity:imaging"
FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
GENERATION_ROW = 1


class Reason(enum.StrEnum):
    """Why a result is not recognised; the declaration order is the order verdicts list them in."""

    NOT_IN_CATALOGUE = "not_in_catalogue"
    INSTITUTION_NOT_ELIGIBLE = "institution_not_eligible"
    EXPIRED = "expired"
    NOT_FINAL = "not_final"
    QC_MISSING = "qc_missing"


class Verdict(NamedTuple):
    """Recognised, or not and why. ``valid_until`` is the issue day plus the window when the item is known.
    (A named tuple: every result on a page gets one.)"""

    recognised: bool
    reasons: tuple[Reason, ...]
    item_code: str | None
    item_name: str | None
    category: str | None
    catalogue_version: int | None
    valid_until: dt.date | None


class ResultFacts(NamedTuple):
    """What a verdict needs to know of a stored result (a named tuple: a page builds fifty of them)."""

    institution_id: str
    code_system: str | None
    code: str | None
    status: str | None
    issued_on: dt.date | None


@dataclasses.dataclass(frozen=True)
class VersionRules:
    """One version of an item's rules, in force over ``[effective_from, effective_to)``."""

    version: int
    effective_from: dt.date
    effective_to: dt.date | None
    window_days: int
    levels: frozenset[str]
    public_only: bool
    qc_required: bool
    note: str = ""

    def in_force(self, day: dt.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day < self.effective_to)


@dataclasses.dataclass(frozen=True)
class CatalogueItem:
    """An item with every version of its rules, oldest first."""

    id: str
    code: str
    category: str
    name: str
    loinc: str | None
    modality: str | None
    body_site: str | None
    qc_category: str
    versions: tuple[VersionRules, ...]

    def version_on(self, day: dt.date) -> VersionRules | None:
        for v in reversed(self.versions):
            if v.in_force(day):
                return v
        return None

    def nearest_version(self, day: dt.date) -> VersionRules | None:
        """The last version that started on or before ``day``, else the first: rules to judge by when none was in
        force."""
        before = [v for v in self.versions if v.effective_from <= day]
        if before:
            return before[-1]
        return self.versions[0] if self.versions else None


@dataclasses.dataclass(frozen=True)
class HospitalFacts:
    """What recognition reads of a member institution."""

    id: str
    code: str
    name: str
    kind: str
    level: str | None
    ownership: str | None
    participation_since: dt.date | None
    province: str | None
    city: str | None


@dataclasses.dataclass(frozen=True)
class QcPeriod:
    category: str
    valid_from: dt.date
    valid_to: dt.date

    def covers(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_to


def imaging_code(modality: str, body_site: str) -> str:
    """How an imaging study's code is stored (``CT|51185008``): the key imaging items are found by."""
    return f"{modality.upper()}|{body_site}"


def china_day(at: dt.datetime | None) -> dt.date | None:
    """The calendar day of an instant in China time; a naive value is taken as UTC, as the store keeps it."""
    if at is None:
        return None
    # shifting by the difference of the offsets is the same day as astimezone(CHINA), in a quarter of the time
    offset = at.utcoffset()
    return (at + (_CHINA_OFFSET if offset is None else _CHINA_OFFSET - offset)).date()


def today_in_china() -> dt.date:
    return dt.datetime.now(CHINA).date()


def facts_of(row: StoredResource) -> ResultFacts:
    """The facts of a stored result a verdict is computed from."""
    return ResultFacts(
        institution_id=row.institution_id,
        code_system=row.code_system,
        code=row.code,
        status=row.status,
        issued_on=china_day(row.issued_at or row.effective_at),
    )


class Catalogue:
    """A snapshot of the catalogue, the hospitals and their QC certifications: everything a verdict reads."""

    def __init__(
        self,
        items: Iterable[CatalogueItem],
        *,
        local_codes: dict[tuple[str, str, str], str] | None = None,
        institutions: Iterable[HospitalFacts] = (),
        qc: Iterable[tuple[str, QcPeriod]] = (),
        generation: int = 0,
    ) -> None:
        self.generation = generation
        self.items: dict[str, CatalogueItem] = {i.code: i for i in items}
        self.by_id: dict[str, CatalogueItem] = {i.id: i for i in self.items.values()}
        self.by_loinc: dict[str, CatalogueItem] = {i.loinc: i for i in self.items.values() if i.loinc}
        self.by_imaging: dict[str, CatalogueItem] = {
            imaging_code(i.modality, i.body_site): i for i in self.items.values() if i.modality and i.body_site
        }
        # (institution_id, system, code) -> item id
        self.local_codes: dict[tuple[str, str, str], str] = dict(local_codes or {})
        self.institutions: dict[str, HospitalFacts] = {i.id: i for i in institutions}
        self.institutions_by_code: dict[str, HospitalFacts] = {i.code: i for i in self.institutions.values()}
        self.qc: dict[tuple[str, str], tuple[QcPeriod, ...]] = {}
        grouped: dict[tuple[str, str], list[QcPeriod]] = {}
        for institution_id, period in qc:
            grouped.setdefault((institution_id, period.category), []).append(period)
        self.qc = {k: tuple(v) for k, v in grouped.items()}

    def item_for(self, facts: ResultFacts) -> CatalogueItem | None:
        """The catalogue item a result is an instance of, or None."""
        if facts.code_system is None or facts.code is None:
            return None
        local = self.local_codes.get((facts.institution_id, facts.code_system, facts.code))
        if local is not None:
            return self.by_id.get(local)
        if facts.code_system == LOINC_SYSTEM:
            return self.by_loinc.get(facts.code)
        if facts.code_system == IMAGING_SYSTEM:
            modality, sep, site = facts.code.partition("|")
            return self.by_imaging.get(imaging_code(modality, site)) if sep else None
        return None

    def qc_held(self, institution_id: str, category: str, day: dt.date) -> bool:
        # a loop, not any() over a generator: a third of the time, and every result on a page asks
        for period in self.qc.get((institution_id, category), ()):  # noqa: SIM110
            if period.covers(day):
                return True
        return False

    def in_force(self, day: dt.date, category: str | None = None) -> list[tuple[CatalogueItem, VersionRules]]:
        """The items in the catalogue on ``day`` with the version then in force, by item code."""
        out = []
        for code in sorted(self.items):
            item = self.items[code]
            if category is not None and item.category != category:
                continue
            v = item.version_on(day)
            if v is not None:
                out.append((item, v))
        return out

    def judge(self, facts: ResultFacts, today: dt.date) -> Verdict:
        """The verdict on one result as of ``today`` (see the module's rules)."""
        reasons: set[Reason] = set()
        if facts.status not in FINAL_STATUSES:
            reasons.add(Reason.NOT_FINAL)
        day = facts.issued_on
        hospital = self.institutions.get(facts.institution_id)
        item = self.item_for(facts)
        if item is None:
            reasons.add(Reason.NOT_IN_CATALOGUE)
            if not _eligible(hospital, None, day):
                reasons.add(Reason.INSTITUTION_NOT_ELIGIBLE)
            return _verdict(reasons, None, None, None)

        now_version = item.version_on(today)
        issue_version = item.version_on(day) if day is not None else None
        if now_version is None or (day is not None and issue_version is None):
            reasons.add(Reason.NOT_IN_CATALOGUE)
        rules = issue_version or now_version or item.nearest_version(day or today)
        if not _eligible(hospital, rules, day):
            reasons.add(Reason.INSTITUTION_NOT_ELIGIBLE)
        if rules is None:  # an item without versions is not in the catalogue on any day
            return _verdict(reasons, item, None, None)

        if day is None:
            reasons.add(Reason.EXPIRED)
            return _verdict(reasons, item, rules, None)

        if rules.qc_required and not self.qc_held(facts.institution_id, item.qc_category, day):
            reasons.add(Reason.QC_MISSING)
        window = rules.window_days  # the shortest of the rules judged by and those in force then and now
        if issue_version is not None and issue_version.window_days < window:
            window = issue_version.window_days
        if now_version is not None and now_version.window_days < window:
            window = now_version.window_days
        if (today - day).days > window:
            reasons.add(Reason.EXPIRED)
        return _verdict(reasons, item, rules, day + dt.timedelta(days=window))


def _eligible(hospital: HospitalFacts | None, rules: VersionRules | None, day: dt.date | None) -> bool:
    """Whether the issuer may issue recognised results under ``rules`` (None: only what holds for every item)."""
    if hospital is None or hospital.kind != InstitutionKind.HOSPITAL:
        return False
    if day is not None and hospital.participation_since is not None and day < hospital.participation_since:
        return False
    if rules is None:
        return True
    if rules.levels and hospital.level not in rules.levels:
        return False
    return not (rules.public_only and hospital.ownership != Ownership.PUBLIC)


_REASON_ORDER = {r: i for i, r in enumerate(Reason)}  # reasons are listed in the order Reason declares them


def _verdict(
    reasons: set[Reason], item: CatalogueItem | None, rules: VersionRules | None, valid_until: dt.date | None
) -> Verdict:
    ordered = tuple(sorted(reasons, key=_REASON_ORDER.__getitem__)) if reasons else ()
    return Verdict(
        recognised=not ordered,
        reasons=ordered,
        item_code=item.code if item else None,
        item_name=item.name if item else None,
        category=item.category if item else None,
        catalogue_version=rules.version if rules else None,
        valid_until=valid_until,
    )


# engine -> (generation, snapshot): one cache per database a process talks to
_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, Catalogue]] = weakref.WeakKeyDictionary()
# set on a session whose transaction changed the catalogue: what it sees may yet be rolled back, so never cache it
UNCOMMITTED_CHANGE = "health.catalogue_changed"


async def current_generation(session: AsyncSession) -> int:
    value = await session.scalar(select(CatalogueGeneration.generation).where(CatalogueGeneration.id == GENERATION_ROW))
    return int(value or 0)


GENERATION_SEEN = "health.catalogue_generation_seen"


def note_generation(session: AsyncSession, generation: int | None) -> None:
    """The session's caller read ``CatalogueGeneration`` along with something else (the access check does): the
    next :func:`load_catalogue` in this session takes it instead of reading it again."""
    session.info[GENERATION_SEEN] = int(generation or 0)


async def load_catalogue(session: AsyncSession) -> Catalogue:
    """The catalogue snapshot, loaded again only when ``CatalogueGeneration`` moved (one small SELECT a call, or
    none when the session's caller noted the generation it read just before)."""
    generation = session.info.pop(GENERATION_SEEN, None)
    if generation is None:
        generation = await current_generation(session)
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    dirty = bool(session.info.get(UNCOMMITTED_CHANGE))
    cached = _CACHE.get(engine)
    if cached is not None and cached[0] == generation and not dirty:
        return cached[1]
    catalogue = await _load(session, generation)
    if not dirty:
        _CACHE[engine] = (generation, catalogue)
    return catalogue


async def _load(session: AsyncSession, generation: int) -> Catalogue:
    versions: dict[str, list[VersionRules]] = {}
    for v in (await session.scalars(select(ItemVersion).order_by(ItemVersion.item_id, ItemVersion.version))).all():
        versions.setdefault(v.item_id, []).append(
            VersionRules(
                version=v.version,
                effective_from=v.effective_from,
                effective_to=v.effective_to,
                window_days=v.window_days,
                levels=frozenset(str(x) for x in v.levels or ()),
                public_only=v.public_only,
                qc_required=v.qc_required,
                note=v.note,
            )
        )
    items = [
        CatalogueItem(
            id=i.id,
            code=i.code,
            category=i.category,
            name=i.name,
            loinc=i.loinc,
            modality=i.modality,
            body_site=i.body_site,
            qc_category=i.qc_category,
            versions=tuple(versions.get(i.id, ())),
        )
        for i in (await session.scalars(select(RecognitionItem))).all()
    ]
    local = {
        (r.institution_id, r.system, r.code): r.item_id
        for r in (
            await session.execute(select(LocalCode.institution_id, LocalCode.system, LocalCode.code, LocalCode.item_id))
        )
    }
    hospitals = [
        HospitalFacts(
            id=r.id,
            code=r.code,
            name=r.name,
            kind=r.kind,
            level=r.level,
            ownership=r.ownership,
            participation_since=r.participation_since,
            province=r.province,
            city=r.city,
        )
        for r in await session.execute(
            select(
                Institution.id,
                Institution.code,
                Institution.name,
                Institution.kind,
                Institution.level,
                Institution.ownership,
                Institution.participation_since,
                Institution.province,
                Institution.city,
            ).where(Institution.kind == InstitutionKind.HOSPITAL)
        )
    ]
    qc = [
        (r.institution_id, QcPeriod(r.category, r.valid_from, r.valid_to))
        for r in await session.execute(
            select(
                QcCertification.institution_id,
                QcCertification.category,
                QcCertification.valid_from,
                QcCertification.valid_to,
            )
        )
    ]
    return Catalogue(items, local_codes=local, institutions=hospitals, qc=qc, generation=generation)


async def judge_rows(
    session: AsyncSession, rows: Sequence[StoredResource], today: dt.date | None = None
) -> list[Verdict]:
    """Verdicts for stored results, in their order, as of ``today`` (default: today in China)."""
    catalogue = await load_catalogue(session)
    day = today or today_in_china()
    return [catalogue.judge(facts_of(r), day) for r in rows]
