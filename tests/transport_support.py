"""Shared by the transport tests: connectors to both operators' sandbox, linking a card directly."""

from __future__ import annotations

from connectors.framework import service as connectors
from connectors.transport import sandbox as transport_sandbox
from connectors.transport import service as transport
from federation.identity import service as identity
from federation.members import service as members
from tests.housing_support import FAST, person_of


async def configure_operators(svc, url: str, **config) -> None:
    async with svc.db.uow() as uow:
        for key, (code, name, city, _) in transport_sandbox.OPERATORS.items():
            await members.upsert(uow, members.NewInstitution(code, name, "system", city=city, system_kind="transport"))
            await connectors.configure(
                uow,
                svc,
                f"transport-{key}",
                kind="transport",
                member_code=code,
                config={"base_url": f"{url}/{key}", **FAST, **config},
                secrets={"api_key": transport_sandbox.API_KEY},
                actor="test",
            )
        await uow.commit()


async def link_directly(svc, id_number: str, operator: str, card: str) -> None:
    person = await person_of(svc, id_number)
    async with svc.db.uow() as uow:
        await identity.add_identifier(uow, svc, person, transport.card_input(operator, card), actor="test")
        await uow.commit()
