"""The demo world: three libraries, three hospitals, a dozen residents of both provinces, one account per role.

Loading is idempotent: members are upserted, persons found by ID number,
accounts created only when missing. Every demo password is ``demo-password``.

Extensions add their own demo data (the union catalogue's records, say) through
``Registry.on_demo``; ``twincity demo load`` passes those loaders to ``load``,
which runs them after the core's world is committed. Without them (the tests'
``demo`` fixture) only the core's world is loaded, which is fast.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from federation.accounts import service as accounts
from federation.accounts.models import Account
from federation.consent import service as consent
from federation.consent.models import Consent
from federation.identity import service as identity
from federation.identity.idnumber import check_digit
from federation.identity.models import IdentifierType
from federation.members import service as members
from federation.members.models import Institution
from federation.services import Services

if TYPE_CHECKING:
    from federation.extensions import DemoLoader

log = logging.getLogger(__name__)
PASSWORD = "demo-password"
ACTOR = "system:demo"

LIBRARIES = [
    ("CQL", "重庆图书馆", "chongqing", "重庆"),
    ("SCL", "四川省图书馆", "sichuan", "成都"),
    ("CDL", "成都图书馆", "sichuan", "成都"),
]
HOSPITALS = [
    ("CQH1", "重庆医科大学附属第一医院", "chongqing", "重庆", "三级甲等", "public"),
    ("SCH1", "四川大学华西医院", "sichuan", "成都", "三级甲等", "public"),
    ("SCH2", "绵阳市中心医院", "sichuan", "绵阳", "二级甲等", "public"),
]
FEDERATION = ("FEDERATION", "川渝便捷生活联盟运营中心")


@dataclasses.dataclass(frozen=True)
class DemoResident:
    name: str
    region: str  # 6-digit code of the issuing registry
    birth: str  # YYYYMMDD
    seq: str  # 3 digits; the last one odd for men, even for women
    phone: str
    home: str  # home library
    ss_card: str  # social-security card number

    @property
    def id_number(self) -> str:
        first17 = self.region + self.birth + self.seq
        return first17 + check_digit(first17)


RESIDENTS = [
    DemoResident("张伟", "500103", "19850312", "231", "13800230001", "CQL", "CQ0000001"),
    DemoResident("王芳", "500106", "19900721", "142", "13800230002", "CQL", "CQ0000002"),
    DemoResident("李娜", "500112", "19781105", "368", "13800230003", "CQL", "CQ0000003"),
    DemoResident("刘洋", "500235", "20010214", "415", "13800230004", "CQL", "CQ0000004"),
    # issued by Sichuan before 1997 for a Chongqing-born resident who kept the number
    DemoResident("陈静", "510202", "19620830", "026", "13800230005", "CQL", "CQ0000005"),
    DemoResident("杨磊", "510104", "19880119", "517", "13800280006", "SCL", "SC0000006"),
    DemoResident("赵敏", "510107", "19950603", "628", "13800280007", "SCL", "SC0000007"),
    DemoResident("黄勇", "510108", "19700925", "733", "13800280008", "CDL", "SC0000008"),
    DemoResident("周婷", "510703", "19930417", "844", "13800280009", "CDL", "SC0000009"),
    DemoResident("吴强", "511002", "19830228", "955", "13800280010", "CDL", "SC0000010"),
    DemoResident("徐丽", "510105", "19581212", "064", "13800280011", "SCL", "SC0000011"),
    DemoResident("孙浩", "500101", "20080909", "179", "13800230012", "CQL", "CQ0000012"),
]


def staff_accounts() -> list[tuple[str, str, list[str]]]:
    out = [(f"librarian@{code}", code, ["librarian"]) for code, *_ in LIBRARIES]
    out += [(f"doctor@{code}", code, ["doctor"]) for code, *_ in HOSPITALS]
    out.append(("admin@federation", FEDERATION[0], ["admin"]))
    return out


async def load(svc: Services, extensions: Sequence[DemoLoader] = ()) -> dict[str, int]:
    """Load the core's demo world, then each extension's demo data; returns counts of what was new."""
    counts = await _load_core(svc)
    for loader in extensions:
        for name, count in (await loader(svc)).items():
            counts[name] = counts.get(name, 0) + count
    return counts


async def _load_core(svc: Services) -> dict[str, int]:
    counts = {"members": 0, "persons": 0, "accounts": 0, "consents": 0}
    async with svc.db.uow() as uow:
        known = {code for (code,) in await uow.session.execute(select(Institution.code))}
        since = dt.date(2021, 1, 4)
        for code, name, province, city in LIBRARIES:
            await members.upsert(
                uow, members.NewInstitution(code, name, "library", province, city, participation_since=since)
            )
            await members.add_service_point(uow, code, f"{code}-MAIN", f"{name} 总馆", is_main=True)
            await members.add_service_point(uow, code, f"{code}-B1", f"{name} 第一分馆")
        for code, name, province, city, level, ownership in HOSPITALS:
            await members.upsert(
                uow,
                members.NewInstitution(
                    code, name, "hospital", province, city, level, ownership, participation_since=since
                ),
            )
            await members.add_service_point(uow, code, f"{code}-MAIN", f"{name} 门诊部", is_main=True)
        await members.upsert(uow, members.NewInstitution(FEDERATION[0], FEDERATION[1], "federation"))
        all_codes = {c for c, *_ in LIBRARIES} | {c for c, *_ in HOSPITALS} | {FEDERATION[0]}
        counts["members"] = len(all_codes - known)

        for username, institution, roles in staff_accounts():
            exists = (await uow.session.execute(select(Account.id).where(Account.username == username))).first()
            if not exists:
                await accounts.create_staff(uow, username, PASSWORD, institution, roles)
                counts["accounts"] += 1

        for r in RESIDENTS:
            reg = await identity.register(
                uow,
                svc,
                identity.RegisterPerson(
                    name=r.name,
                    phone=r.phone,
                    home_institution=r.home,
                    identifiers=[
                        identity.IdentifierInput(IdentifierType.ID_NUMBER, r.id_number),
                        identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, r.ss_card),
                        identity.IdentifierInput(
                            IdentifierType.LOCAL, f"{r.home}{r.ss_card[-6:]}", r.home, "library_card"
                        ),
                    ],
                ),
                actor=ACTOR,
            )
            counts["persons"] += reg.outcome == "created"
            has_account = (
                await uow.session.execute(select(Account.id).where(Account.person_id == reg.person.id))
            ).first()
            if not has_account:
                await accounts.create_resident(uow, reg.person.id, PASSWORD, r.name)
                counts["accounts"] += 1
            has_consent = (
                await uow.session.execute(select(Consent.id).where(Consent.person_id == reg.person.id))
            ).first()
            if not has_consent and r.seq[-1] in "13579":
                await consent.grant(
                    uow, svc, reg.person.id, consent.Purpose.RESULT_SHARING, members=None, expires_at=None, actor=ACTOR
                )
                counts["consents"] += 1
        await uow.commit()
    return counts
