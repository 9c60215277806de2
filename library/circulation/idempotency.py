"""Idempotent writes: a repeated ``Idempotency-Key`` (per caller) gets the first answer and changes nothing.

The key is claimed inside the write's own transaction, before the work, and its answer is stored in that same
transaction: a retry after a commit finds the answer, a retry after a crash or a refusal (nothing committed) runs
again. Two requests racing with one key serialise on the key's primary key (on PostgreSQL the second waits for the
first to commit, then replays its answer; SQLite's writer lock serialises them at BEGIN). Only successful answers
are stored; a refused request (4xx) changed nothing and is simply evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from federation.db import UnitOfWork
from federation.services import Services
from federation.web.routing import Principal, json_response
from library.circulation.errors import BadIdempotencyKey, IdempotencyInFlight, IdempotencyKeyReused
from library.circulation.models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY = 200


class _Taken(Exception):
    """Another transaction holds the key (PostgreSQL): replay its answer once it committed."""


def request_hash(request: web.Request, body: BaseModel | None) -> str:
    data = body.model_dump(mode="json") if body is not None else None
    text = json.dumps([request.method, request.path, data], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _key(request: web.Request) -> str | None:
    if HEADER not in request.headers:
        return None
    key = request.headers[HEADER].strip()
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise BadIdempotencyKey(f"the {HEADER} header must have 1 to {MAX_KEY} printable characters")
    return key


def _owner(who: Principal) -> str:
    return f"{who.kind}:{who.id}"[:100]


def _replay(row: IdempotencyKey, digest: str) -> web.Response:
    if row.request_hash != digest:
        raise IdempotencyKeyReused(f"this {HEADER} was sent with another request; use a new key for a new request")
    return json_response(row.body, row.status)


async def run(
    request: web.Request,
    svc: Services,
    who: Principal,
    body: BaseModel | None,
    work: Callable[[UnitOfWork], Awaitable[BaseModel]],
    status: int,
) -> web.Response:
    """Run ``work`` in one unit of work, once per key; answer with its result (or the stored first answer)."""
    key = _key(request)
    digest = request_hash(request, body)
    owner = _owner(who)
    try:
        async with svc.db.uow() as uow:
            if key is not None:
                row = await uow.session.get(IdempotencyKey, (owner, key))
                if row is not None and row.status:
                    return _replay(row, digest)
                claim = IdempotencyKey(principal=owner, key=key, request_hash=digest, status=0, body=None)
                uow.session.add(claim)
                try:
                    await uow.session.flush()
                except IntegrityError:
                    raise _Taken from None
            result = await work(uow)
            data: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
            if key is not None:
                claim.status, claim.body = status, data
            await uow.commit()
    except _Taken:
        async with svc.db.reader() as s:
            row = (
                await s.execute(
                    select(IdempotencyKey).where(IdempotencyKey.principal == owner, IdempotencyKey.key == key)
                )
            ).scalar_one_or_none()
        if row is None or not row.status:
            raise IdempotencyInFlight("the first request with this key has not finished") from None
        return _replay(row, digest)
    return json_response(data, status)
