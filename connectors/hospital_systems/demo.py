"""The demo's hospital system: 绵阳市中心医院 (SCH2) pulled over FHIR from the hospital sandbox (``twincity sandbox
all`` serves it on ``PORT``). Loading is idempotent."""

from __future__ import annotations

from connectors.framework import service as connectors
from connectors.hospital_systems.sandbox import TOKEN
from federation.services import Services

PORT = 8706
NAME = "his-sch2"
MEMBER = "SCH2"


async def load(svc: Services) -> dict[str, int]:
    async with svc.db.uow() as uow:
        known = {c.name for c in await connectors.listing(uow.session, "hospital_systems")}
        await connectors.configure(
            uow,
            svc,
            NAME,
            kind="hospital_systems",
            member_code=MEMBER,
            config={"base_url": f"http://127.0.0.1:{PORT}/fhir"},
            secrets={"token": TOKEN},
            actor="system:demo",
        )
        await uow.commit()
    return {"hospital-system connectors": int(NAME not in known)}
