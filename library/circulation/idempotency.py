"""Idempotent writes: a repeated ``Idempotency-Key`` (per caller) gets the first answer and changes nothing.

The key is claimed inside the write's own transaction, before the work, and its answer is stored in that same
transaction: a retry after a commit finds the answer, a retry after a crash or a refusal (nothing committed) runs
again. The claim is one statement, an insert that does nothing when the key exists; only then is the key's row
read, to replay its answer. Two requests racing with one key serialise on the key's primary key (on PostgreSQL the
second's insert waits for the first to commit, then does nothing, and the second replays the first's answer;
SQLite's writer lock serialises them at BEGIN). Only successful answers are stored; a refused request (4xx)
changed nothing and is simply evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import bindparam, select, update

from federation.db import UnitOfWork, dialect_insert, utcnow
from federation.services import Services
from federation.web.routing import Principal, json_response
from library.circulation.errors import BadIdempotencyKey, IdempotencyInFlight, IdempotencyKeyReused
from library.circulation.models import IdempotencyKey

HEADER = "Idempotency-Key"
MAX_KEY = 200


_KEYS = IdempotencyKey.__table__
_WHERE = (_KEYS.c.principal == bindparam("p_principal"), _KEYS.c.key == bindparam("p_key"))
_ROW = select(_KEYS.c.request_hash, _KEYS.c.status, _KEYS.c.body).where(*_WHERE)
_ANSWER = update(_KEYS).where(*_WHERE).values(status=bindparam("p_status"), body=bindparam("p_body"))


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


def _replay(row: Any, digest: str) -> web.Response:
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
    async with svc.db.uow() as uow:
        s = uow.session
        if key is not None:
            params = {"p_principal": owner, "p_key": key}
            claim = dialect_insert(s, _KEYS).values(
                principal=owner, key=key, request_hash=digest, status=0, body=None, created_at=utcnow()
            )
            if (await s.execute(claim.on_conflict_do_nothing().returning(_KEYS.c.key))).first() is None:
                row = (await s.execute(_ROW, params)).first()
                if row is None or not row.status:  # rolled back meanwhile, or (SQLite) not committed yet
                    raise IdempotencyInFlight("the first request with this key has not finished")
                return _replay(row, digest)
        result = await work(uow)
        data: dict[str, Any] = result.model_dump(mode="json", by_alias=True)
        if key is not None:
            await s.execute(_ANSWER, {**params, "p_status": status, "p_body": data})
        await uow.commit()
    return json_response(data, status)
