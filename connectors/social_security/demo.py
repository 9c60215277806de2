"""The demo's social-security systems: one member per city and a connector to each city's sandbox.

``twincity sandbox all`` serves them (on the ports of ``sandbox.FACTORIES``); loading is idempotent (members
upserted, connectors configured again with the same values).
"""

from __future__ import annotations

from connectors.framework import service as connectors
from connectors.social_security.sandbox import API_KEY, FACTORIES
from federation.members import service as members
from federation.services import Services

SYSTEMS = [
    ("CQSI", "重庆市社会保险事务中心", "chongqing", "重庆", "ss-chongqing", FACTORIES["social_security_chongqing"][1]),
    ("SCSI", "四川省社会保险事业管理局", "sichuan", "成都", "ss-sichuan", FACTORIES["social_security_sichuan"][1]),
]


async def load(svc: Services) -> dict[str, int]:
    async with svc.db.uow() as uow:
        new = 0
        for code, name, province, city, connector, port in SYSTEMS:
            await members.upsert(
                uow, members.NewInstitution(code, name, "system", province, city, system_kind="social_security")
            )
            known = await connectors.listing(uow.session, "social_security")
            new += connector not in {c.name for c in known}
            await connectors.configure(
                uow,
                svc,
                connector,
                kind="social_security",
                member_code=code,
                config={"base_url": f"http://127.0.0.1:{port}"},
                secrets={"api_key": API_KEY},
                actor="system:demo",
            )
        await uow.commit()
    return {"social-security connectors": new}
