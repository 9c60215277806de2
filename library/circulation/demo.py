"""Demo circulation: a few demo residents borrowing the demo catalogue's well-known titles across the libraries.

Registered with ``registry.on_demo`` after the catalogue's loader (loaders run in registration order), so the
copies exist. Everything goes through the circulation service (checkout, renew, checkin), so counters, the
catalogue's item status, audit entries and events are what a desk would have made; only the overdue loan's due
date is then moved into the past, as time would have. Loading again adds nothing: a copy that already has a
demo loan is skipped. The copies are the famous titles' (keys 900 001 and up), which exist whatever the
catalogue's size.

What it makes (with the figures the tests check):

* 6 loans, 5 still active; 4 cross-city (a Chongqing reader at a Chengdu library or the other way round);
* one loan renewed once, one overdue (due 10 days ago);
* one copy in transit: CQL's copy lent at CQL and returned at SCL-B1, travelling home to CQL-MAIN.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from sqlalchemy import select, update

from federation.db import utcnow
from federation.demo import RESIDENTS
from federation.errors import NotFound
from library.circulation import service
from library.circulation.models import Loan

log = logging.getLogger(__name__)

ACTOR = "system:demo"
OVERDUE_DAYS = 10


@dataclasses.dataclass(frozen=True)
class DemoLoan:
    barcode: str
    owner: str
    desk: str
    resident: int  # index into federation.demo.RESIDENTS
    renew: bool = False
    overdue: bool = False
    return_at: str | None = None  # a desk: checked in there after the checkout


LOANS = (
    DemoLoan("CQL9000010", "CQL", "CQL-MAIN", 0, renew=True),  # 张伟 (CQL) at home
    DemoLoan("SCL9000020", "SCL", "SCL-MAIN", 0),  # 张伟 (CQL) in Chengdu: cross-city
    DemoLoan("CQL9000030", "CQL", "CQL-B1", 5),  # 杨磊 (SCL) in Chongqing: cross-city
    DemoLoan("SCL9000060", "SCL", "SCL-MAIN", 7),  # 黄勇 (CDL) at SCL: same city
    DemoLoan("CDL9000060", "CDL", "CDL-MAIN", 1, overdue=True),  # 王芳 (CQL) in Chengdu: cross-city, overdue
    DemoLoan("CQL9000090", "CQL", "CQL-MAIN", 6, return_at="SCL-B1"),  # 赵敏 (SCL): returned in Chengdu, in transit
)


def _staff(desk: str) -> service.Staff:
    return service.Staff(actor=ACTOR, library=desk.split("-", 1)[0])


async def load(svc: Any) -> dict[str, int]:
    """Lend, renew, backdate and return the demo loans not yet made; returns {"loans": new, "transits": new}."""
    counts = {"loans": 0, "transits": 0}
    for spec in LOANS:
        async with svc.db.reader() as s:
            known = (
                await s.execute(
                    select(Loan.id).where(Loan.owner_library == spec.owner, Loan.barcode == spec.barcode).limit(1)
                )
            ).first()
        if known:
            continue
        resident = RESIDENTS[spec.resident]
        cmd = service.Checkout(
            item_barcode=spec.barcode,
            credential=service.Credential("social_security_card", resident.ss_card),
            service_point=spec.desk,
            item_library=spec.owner,
        )
        try:
            async with svc.db.uow() as uow:
                loan = await service.checkout(uow, svc, cmd, _staff(spec.desk))
                if spec.renew:
                    await service.renew(uow, svc, service.Renewal(loan_id=loan.id), _staff(spec.desk))
                if spec.overdue:
                    await uow.session.execute(
                        update(Loan)
                        .where(Loan.id == loan.id)
                        .values(due_at=utcnow() - dt.timedelta(days=OVERDUE_DAYS))
                        .execution_options(synchronize_session=False)
                    )
                if spec.return_at:
                    back = service.Checkin(
                        item_barcode=spec.barcode, service_point=spec.return_at, item_library=spec.owner
                    )
                    result = await service.checkin(uow, svc, back, _staff(spec.return_at))
                    counts["transits"] += result.transit is not None
                await uow.commit()
        except NotFound as exc:  # the catalogue's demo (or the core's) is not loaded: nothing to lend
            log.warning("demo circulation: %s skipped: %s", spec.barcode, exc)
            continue
        counts["loans"] += 1
    return counts
