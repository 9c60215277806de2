"""Doctors' decisions on prior results, and the figures the two governments evaluate the programme by.

A decision keeps the verdict the doctor saw, so the figures count what was recognised and what the doctor did with
it even after the catalogue changes. Declining needs one of the eight reasons the recognition rules allow (08,
"other", needs a text).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.db import UnitOfWork, utcnow
from federation.errors import InvalidInput, NotFound
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.members.models import Institution
from federation.services import Services
from health import recognition
from health.access import Grant
from health.models import Decision, StoredResource
from health.results import RESULT_TYPES, person_ids

REASONS: dict[str, tuple[str, str]] = {
    "01": ("病情变化", "the patient's condition has changed"),
    "02": ("检查检验结果随病情变化快", "the result changes quickly with the disease"),
    "03": ("对治疗至关重要（如手术、输血前）", "critical to treatment, such as before surgery or transfusion"),
    "04": ("急诊、急救等", "emergency or resuscitation"),
    "05": ("司法、伤残及病伤鉴定等", "forensic, disability or arbitration assessment"),
    "06": ("国家规定须由具备资质的机构出具", "the state requires a qualified body to issue it"),
    "07": ("接诊医师判断需要重新检查", "the treating doctor's judgement"),
    "08": ("其他", "other (with text)"),
}
CHINA = dt.timezone(dt.timedelta(hours=8))


class ResultNotFound(NotFound):
    code = "health.result_not_found"


class InvalidDecision(InvalidInput):
    code = "health.decision_invalid"


@dataclasses.dataclass(frozen=True)
class NewDecision:
    result_id: str
    decision: str  # accepted | declined
    reason_code: str | None = None
    reason_text: str | None = None
    note: str | None = None


def check(cmd: NewDecision) -> None:
    if cmd.decision not in ("accepted", "declined"):
        raise InvalidDecision("a decision is 'accepted' or 'declined'")
    if cmd.decision == "declined":
        if cmd.reason_code not in REASONS:
            raise InvalidDecision("declining needs a reason code 01-08", reasons=sorted(REASONS))
        if cmd.reason_code == "08" and not (cmd.reason_text or "").strip():
            raise InvalidDecision("reason 08 (other) needs a reason text")
    elif cmd.reason_code is not None:
        raise InvalidDecision("an accepted result takes no reason code")


async def result_for_decision(session: AsyncSession, result_id: str) -> StoredResource:
    row = await session.get(StoredResource, result_id)
    if row is None or row.resource_type not in RESULT_TYPES or row.withdrawn or row.person_id is None:
        raise ResultNotFound(f"no result {result_id}")
    return row


async def record(
    uow: UnitOfWork,
    svc: Services,
    cmd: NewDecision,
    grant: Grant,
    *,
    actor: str,
    institution: str | None,
) -> Decision:
    """Store a decision on a result of the person ``grant`` allows reading; the verdict is judged now."""
    check(cmd)
    row = await result_for_decision(uow.session, cmd.result_id)
    if row.person_id not in await person_ids(uow.session, grant.person_id):
        raise ResultNotFound(f"no result {cmd.result_id} for this patient")
    verdict = (await recognition.judge_rows(uow.session, [row]))[0]
    issuer = await uow.session.get(Institution, row.institution_id)
    decision = Decision(
        result_id=row.id,
        person_id=grant.person_id,
        decision=cmd.decision,
        reason_code=cmd.reason_code,
        # free text kept in clear never holds an ID number
        reason_text=mask_id_numbers_in_text((cmd.reason_text or "").strip())[:500] or None,
        note=mask_id_numbers_in_text((cmd.note or "").strip()) or None,
        recognised=verdict.recognised,
        reasons=[str(r) for r in verdict.reasons],
        item_code=verdict.item_code,
        issuing_institution=issuer.code if issuer else "?",
        deciding_institution=institution,
        actor=actor,
        decided_at=utcnow(),
    )
    uow.session.add(decision)
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="health.decision",
            actor=actor,
            actor_institution=institution,
            subject_person_id=grant.person_id,
            purpose="result_sharing",
            details={
                "decision": decision.id,
                "result": row.id,
                "outcome": cmd.decision,
                "reason_code": cmd.reason_code,
                "recognised": verdict.recognised,
                **({"override": grant.override_id, "flagged": True} if grant.override_id else {}),
            },
        ),
    )
    uow.emit("health.decision_made", decision_id=decision.id, person_id=grant.person_id)
    return decision


# -- figures -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    decided: int = 0
    recognised: int = 0
    accepted: int = 0
    accepted_recognised: int = 0
    declined: int = 0

    def add(self, decision: str, recognised: bool, n: int) -> None:
        self.decided += n
        self.recognised += n if recognised else 0
        if decision == "accepted":
            self.accepted += n
            self.accepted_recognised += n if recognised else 0
        else:
            self.declined += n

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            # of the results marked HR that doctors decided on, the share they accepted
            "recognition_rate": round(self.accepted_recognised / self.recognised, 4) if self.recognised else None,
        }


def _month(session: AsyncSession):  # noqa: ANN202 - a SQL expression
    """The China-time month of a decision, as YYYY-MM, on either engine."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("Asia/Shanghai", Decision.decided_at), "YYYY-MM")
    return func.strftime("%Y-%m", Decision.decided_at, "+8 hours")


async def figures(session: AsyncSession, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Recognition per issuing hospital, per item and per city pair (issuing → deciding), declined reasons, and
    repeat tests avoided (accepted prior results) per month, for decisions made from ``start`` to ``end``
    inclusive (China time). Counted in the database: a year of decisions is never loaded."""
    lo = dt.datetime.combine(start, dt.time(), CHINA)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), CHINA)
    window = (Decision.decided_at >= lo, Decision.decided_at < hi)
    n = func.count()
    q = (
        select(
            Decision.issuing_institution,
            Decision.deciding_institution,
            Decision.item_code,
            Decision.decision,
            Decision.recognised,
            Decision.reason_code,
            n,
        )
        .where(*window)
        .group_by(
            Decision.issuing_institution,
            Decision.deciding_institution,
            Decision.item_code,
            Decision.decision,
            Decision.recognised,
            Decision.reason_code,
        )
    )
    cities = {r.code: r.city or "?" for r in await session.execute(select(Institution.code, Institution.city))}
    by_hospital: dict[str, Tally] = defaultdict(Tally)
    by_item: dict[str, Tally] = defaultdict(Tally)
    by_pair: dict[tuple[str, str], Tally] = defaultdict(Tally)
    reasons: Counter[str] = Counter()
    total = Tally()
    for issuer, decider, item, decision, recognised, reason, count in await session.execute(q):
        recognised = bool(recognised)
        for tally in (
            total,
            by_hospital[issuer],
            by_item[item or "(not in catalogue)"],
            by_pair[(cities.get(issuer, "?"), cities.get(decider or "", "?"))],
        ):
            tally.add(decision, recognised, count)
        if decision == "declined" and reason:
            reasons[reason] += count
    month = _month(session)
    avoided = await session.execute(
        select(month, n).where(*window, Decision.decision == "accepted").group_by(month).order_by(month)
    )
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "total": total.as_dict(),
        "by_hospital": [{"hospital": k, **v.as_dict()} for k, v in sorted(by_hospital.items())],
        "by_item": [{"item": k, **v.as_dict()} for k, v in sorted(by_item.items())],
        "by_city_pair": [
            {"issuing_city": a, "deciding_city": b, **v.as_dict()} for (a, b), v in sorted(by_pair.items())
        ],
        "declined_reasons": [
            {"code": code, "label": REASONS[code][0], "label_en": REASONS[code][1], "count": reasons[code]}
            for code in sorted(REASONS)
            if reasons[code]
        ],
        "repeat_tests_avoided": [{"month": m, "count": c} for m, c in avoided],
    }
