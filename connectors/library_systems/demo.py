"""The demo's library system: 成都图书馆 (CDL) harvested over OAI-PMH from the library sandbox
(``twincity sandbox all`` serves it on ``PORT``), and a drop folder in the data directory. Loading is idempotent."""

from __future__ import annotations

from connectors.framework import service as connectors
from federation.services import Services

PORT = 8705
NAME = "lib-cdl"
MEMBER = "CDL"


async def load(svc: Services) -> dict[str, int]:
    folder = svc.settings.data_dir / "drop" / MEMBER.lower()
    folder.mkdir(parents=True, exist_ok=True)
    async with svc.db.uow() as uow:
        known = {c.name for c in await connectors.listing(uow.session, "library_systems")}
        await connectors.configure(
            uow,
            svc,
            NAME,
            kind="library_systems",
            member_code=MEMBER,
            config={"base_url": f"http://127.0.0.1:{PORT}/oai", "options": {"drop_folder": str(folder)}},
            actor="system:demo",
        )
        await uow.commit()
    return {"library-system connectors": int(NAME not in known)}
