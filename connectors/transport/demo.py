"""The demo's transit operators: one member per city and a connector to each, both served by the transport sandbox
(``twincity sandbox transport --port 8704``). Loading is idempotent."""

from __future__ import annotations

from connectors.framework import service as connectors
from connectors.transport.sandbox import API_KEY, OPERATORS
from federation.members import service as members
from federation.services import Services

PORT = 8704
PROVINCES = {"cq": "chongqing", "cd": "sichuan"}


async def load(svc: Services) -> dict[str, int]:
    async with svc.db.uow() as uow:
        known = {c.name for c in await connectors.listing(uow.session, "transport")}
        new = 0
        for key, (code, name, city, _) in OPERATORS.items():
            await members.upsert(
                uow, members.NewInstitution(code, name, "system", PROVINCES[key], city, system_kind="transport")
            )
            connector = f"transport-{key}"
            new += connector not in known
            await connectors.configure(
                uow,
                svc,
                connector,
                kind="transport",
                member_code=code,
                config={"base_url": f"http://127.0.0.1:{PORT}/{key}"},
                secrets={"api_key": API_KEY},
                actor="system:demo",
            )
        await uow.commit()
    return {"transport connectors": new}
