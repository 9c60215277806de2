"""Keeping the member registry: institutions and their service points."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import UnitOfWork
from federation.members.errors import MemberExists, MemberNotFound
from federation.members.models import Institution, ServicePoint

MEMBER_CHANGED = "member.changed"  # payload: code, kind


@dataclasses.dataclass(frozen=True)
class NewInstitution:
    code: str
    name: str
    kind: str
    province: str | None = None
    city: str | None = None
    level: str | None = None
    ownership: str | None = None
    system_kind: str | None = None
    participation_since: dt.date | None = None
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


async def get(session: AsyncSession, code: str) -> Institution:
    inst = (await session.execute(select(Institution).where(Institution.code == code.upper()))).scalar_one_or_none()
    if inst is None:
        raise MemberNotFound(f"no member {code}")
    return inst


async def listing(session: AsyncSession, kind: str | None = None) -> list[Institution]:
    q = select(Institution).order_by(Institution.code)
    if kind:
        q = q.where(Institution.kind == kind)
    return list((await session.execute(q)).scalars())


async def create(uow: UnitOfWork, cmd: NewInstitution) -> Institution:
    code = cmd.code.upper()
    if (await uow.session.execute(select(Institution.id).where(Institution.code == code))).first():
        raise MemberExists(f"member {code} exists")
    inst = Institution(**{**dataclasses.asdict(cmd), "code": code})
    uow.session.add(inst)
    await uow.session.flush()
    uow.emit(MEMBER_CHANGED, code=code, kind=inst.kind)
    return inst


async def upsert(uow: UnitOfWork, cmd: NewInstitution) -> Institution:
    try:
        inst = await get(uow.session, cmd.code)
    except MemberNotFound:
        return await create(uow, cmd)
    changed = False
    for key, value in dataclasses.asdict(cmd).items():
        if key != "code" and getattr(inst, key) != value:
            setattr(inst, key, value)
            changed = True
    if changed:
        # what depends on a member's level, ownership or dates (health's recognition rules) reloads on this
        uow.emit(MEMBER_CHANGED, code=inst.code, kind=inst.kind)
    return inst


async def add_service_point(
    uow: UnitOfWork,
    institution_code: str,
    code: str,
    name: str,
    *,
    is_main: bool = False,
    city: str | None = None,
    address: str | None = None,
) -> ServicePoint:
    inst = await get(uow.session, institution_code)
    code = code.upper()
    existing = (await uow.session.execute(select(ServicePoint).where(ServicePoint.code == code))).scalar_one_or_none()
    if existing is not None:
        if existing.institution_id != inst.id:
            raise MemberExists(f"service point {code} belongs to another member")
        existing.name, existing.is_main, existing.city, existing.address = name, is_main, city or inst.city, address
        return existing
    sp = ServicePoint(
        code=code, institution_id=inst.id, name=name, is_main=is_main, city=city or inst.city, address=address
    )
    uow.session.add(sp)
    await uow.session.flush()
    return sp


async def service_point(session: AsyncSession, code: str) -> ServicePoint:
    sp = (await session.execute(select(ServicePoint).where(ServicePoint.code == code.upper()))).scalar_one_or_none()
    if sp is None:
        raise MemberNotFound(f"no service point {code}")
    return sp
