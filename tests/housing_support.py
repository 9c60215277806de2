"""Shared by the housing tests: the sandbox of both fund centres, connectors to it, consents, sandbox controls."""

from __future__ import annotations

from aiohttp import ClientSession

from connectors.framework import service as connectors
from connectors.housing import sandbox as housing_sandbox
from federation.consent import service as consent
from federation.identity import service as identity
from federation.identity.models import IdentifierType
from federation.members import service as members

FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "read_timeout_s": 3.0, "max_attempts": 3}


async def configure_centres(svc, url: str, **config) -> None:
    """Connectors ``housing-cq`` (CQHF) and ``housing-cd`` (CDHF) to the sandbox at ``url``."""
    async with svc.db.uow() as uow:
        for key, (code, name, city, _) in housing_sandbox.CENTRES.items():
            await members.upsert(uow, members.NewInstitution(code, name, "system", city=city, system_kind="housing"))
            await connectors.configure(
                uow,
                svc,
                f"housing-{key}",
                kind="housing",
                member_code=code,
                config={"base_url": f"{url}/{key}", **FAST, **config},
                secrets={"api_key": housing_sandbox.API_KEY},
                actor="test",
            )
        await uow.commit()


async def person_of(svc, id_number: str) -> str:
    async with svc.db.reader() as s:
        p = await identity.resolve_credential(
            s, svc.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, id_number)
        )
        return p.id


async def grant(svc, id_number: str, purpose: consent.Purpose, members_: list[str] | None) -> None:
    person = await person_of(svc, id_number)
    async with svc.db.uow() as uow:
        await consent.grant(uow, svc, person, purpose, members=members_, expires_at=None, actor="test")
        await uow.commit()


async def sandbox_post(url: str, path: str, body: dict) -> dict:
    async with ClientSession() as s, s.post(url + path, json=body) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def served(url: str) -> int:
    async with ClientSession() as s, s.get(url + "/_sandbox/requests") as r:
        return (await r.json())["served"]
