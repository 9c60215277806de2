"""Registered connectors: kinds of outside system, connectors stored per member system, their clients and health.

A *kind* (social_security, housing, ...) is registered once per process by its package's ``on_services`` hook
(:func:`register_kind`); a *connector* is a row of the ``connectors`` table naming a kind, the member system it
reaches and its configuration (:func:`configure`). :func:`open_client` gives an HTTP client for one connector and,
when it closes, writes the connector's health (breaker state, last success, last error) to its row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.framework.config import ConnectorConfig, Secrets
from connectors.framework.errors import (
    ConnectorDisabled,
    ConnectorError,
    ConnectorNotFound,
    InvalidConnector,
    WatermarkMoved,
)
from connectors.framework.http import ConnectorClient, Runtime, refresh_runtime
from connectors.framework.models import Connector
from federation.audit.service import Record
from federation.db import UnitOfWork, utcnow
from federation.identity import rekey
from federation.jobs.runner import SCHEDULE_KEY
from federation.members import service as members
from federation.services import Services

if TYPE_CHECKING:
    from connectors.framework.sync import SyncRun

log = logging.getLogger(__name__)
KINDS_KEY = "connectors.kinds"
RUNTIMES_KEY = "connectors.runtimes"


def api_key_header(secrets: Secrets) -> dict[str, str]:
    """The default authentication: the ``api_key`` secret in an ``X-Api-Key`` header."""
    key = secrets.get("api_key")
    return {"X-Api-Key": key} if key else {}


@dataclasses.dataclass(frozen=True)
class ConnectorKind:
    """A kind of outside system. ``sync`` pulls the partner's changes (None: the kind is called on demand only);
    ``schedule_s`` is how often the embedded runner queues the kind's sync job (None: only when asked)."""

    name: str
    description: str
    sync: Callable[[SyncRun], Awaitable[None]] | None = None
    auth_headers: Callable[[Secrets], dict[str, str]] = api_key_header
    schedule_s: float | None = None

    @property
    def job_kind(self) -> str:
        return f"connectors.{self.name}.sync"


def kinds(svc: Services) -> dict[str, ConnectorKind]:
    return svc.extras.setdefault(KINDS_KEY, {})


def register(svc: Services) -> None:
    """What the framework itself registers on a process's services: the connectors' encrypted credentials."""
    rekey.declare(svc, Connector.secrets_enc, (Connector.name,), _secrets_context)


def register_kind(svc: Services, kind: ConnectorKind) -> None:
    """Make a kind known to this process: its sync job kind and, if it has one, its schedule."""
    from connectors.framework import sync

    if kind.name in kinds(svc):
        raise ValueError(f"connector kind {kind.name} registered twice")
    kinds(svc)[kind.name] = kind
    if kind.sync is not None:
        svc.job_handler(kind.job_kind, sync.job_handler(kind.name))
        if kind.schedule_s is not None:
            svc.extras.setdefault(SCHEDULE_KEY, {})[kind.job_kind] = kind.schedule_s


@dataclasses.dataclass(frozen=True)
class LoadedConnector:
    """A connector's row with its configuration parsed and its secrets decrypted (secrets never print)."""

    name: str
    kind: str
    member_code: str
    config: ConnectorConfig
    secrets: Secrets
    watermark: str | None


def _secrets_context(name: str) -> str:
    return f"connector-secrets:{name}"


def _parse_config(name: str, raw: Mapping[str, Any]) -> ConnectorConfig:
    try:
        return ConnectorConfig.model_validate(raw)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors(include_input=False))
        raise InvalidConnector(f"connector {name}: invalid configuration ({where})") from None


async def configure(
    uow: UnitOfWork,
    svc: Services,
    name: str,
    *,
    kind: str,
    member_code: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, str] | None = None,
    actor: str,
) -> Connector:
    """Create or change a connector. ``secrets=None`` keeps the stored ones; the audit names the secrets' keys only."""
    if kind not in kinds(svc):
        raise InvalidConnector(f"unknown connector kind {kind}; known: {', '.join(sorted(kinds(svc))) or 'none'}")
    if not name or len(name) > 80 or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidConnector("a connector name has 1 to 80 letters, digits, '-', '_' or '.'")
    parsed = _parse_config(name, config)
    member = await members.get(uow.session, member_code)
    row = await uow.session.get(Connector, name)
    if row is None:
        row = Connector(name=name, kind=kind, member_code=member.code, circuit_state="closed", consecutive_failures=0)
        uow.session.add(row)
    elif row.kind != kind:
        raise InvalidConnector(f"connector {name} is of kind {row.kind}, not {kind}")
    row.member_code = member.code
    row.config = parsed.model_dump(mode="json")
    if secrets is not None:
        row.secrets_enc = svc.cipher.encrypt(json.dumps(dict(secrets)), _secrets_context(name))
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="connectors.configured",
            actor=actor,
            details={"name": name, "kind": kind, "member": member.code, "secret_keys": sorted(secrets or {})},
        ),
    )
    return row


def _loaded(svc: Services, row: Connector) -> LoadedConnector:
    secrets = Secrets()
    if row.secrets_enc:
        secrets = Secrets(values=json.loads(svc.cipher.decrypt(row.secrets_enc, _secrets_context(row.name))))
    return LoadedConnector(
        row.name, row.kind, row.member_code, _parse_config(row.name, row.config), secrets, row.watermark
    )


async def load(session: AsyncSession, svc: Services, name: str) -> LoadedConnector:
    row = await session.get(Connector, name)
    if row is None:
        raise ConnectorNotFound(f"no connector {name}")
    return _loaded(svc, row)


async def listing(session: AsyncSession, kind: str | None = None) -> list[Connector]:
    q = select(Connector).order_by(Connector.name)
    if kind:
        q = q.where(Connector.kind == kind)
    return list((await session.execute(q)).scalars())


async def of_kind(svc: Services, kind: str, *, enabled_only: bool = True) -> list[LoadedConnector]:
    async with svc.db.reader() as s:
        out = [_loaded(svc, row) for row in await listing(s, kind)]
    return [c for c in out if c.config.enabled or not enabled_only]


async def advance_watermark(uow: UnitOfWork, name: str, seen: str | None, new: str | None) -> None:
    """Move the watermark from ``seen`` to ``new`` in this unit of work, so it commits with the data it covers.

    The update is fenced on ``seen``: if another run moved it meanwhile, :class:`WatermarkMoved` is raised and the
    caller's unit of work (its data with it) rolls back instead of applying a batch twice.
    """
    fence = Connector.watermark.is_(None) if seen is None else Connector.watermark == seen
    res = await uow.session.execute(update(Connector).where(Connector.name == name, fence).values(watermark=new))
    if res.rowcount != 1:
        raise WatermarkMoved(f"connector {name}: the watermark moved during this run; the batch is rolled back")


def runtime_for(svc: Services, connector: LoadedConnector, row_state: tuple[str, int, float | None] | None) -> Runtime:
    runtimes: dict[str, Runtime] = svc.extras.setdefault(RUNTIMES_KEY, {})
    existing = runtimes.get(connector.name)
    rt = refresh_runtime(existing, connector.config)
    if existing is None and row_state is not None:
        rt.breaker.restore(*row_state)
    runtimes[connector.name] = rt
    return rt


@contextlib.asynccontextmanager
async def open_client(svc: Services, name: str, *, require_enabled: bool = True) -> AsyncIterator[ConnectorClient]:
    """A client for connector ``name``. On the way out its health is written to the connector's row (in a unit of
    work of its own: never hold another one open across this block's end on SQLite)."""
    async with svc.db.reader() as s:
        row = await s.get(Connector, name)
        if row is None:
            raise ConnectorNotFound(f"no connector {name}")
        connector = _loaded(svc, row)
        opened = row.circuit_opened_at.timestamp() if row.circuit_opened_at else None
        state = (row.circuit_state, row.consecutive_failures, opened)
    if require_enabled and not connector.config.enabled:
        raise ConnectorDisabled(f"connector {name} is disabled")
    rt = runtime_for(svc, connector, state)
    kind = kinds(svc).get(connector.kind)
    headers = kind.auth_headers(connector.secrets) if kind else {}
    client = ConnectorClient(name, connector.config, rt, headers=headers)
    client.connector = connector
    try:
        async with client:
            yield client
    finally:
        if client.calls:
            await save_health(svc, name, client)


async def save_health(
    svc: Services, name: str, client: ConnectorClient, *, counts: dict[str, int] | None = None, ran: bool = False
) -> None:
    """Copy the breaker's state and the outcome of the client's calls to the connector's row."""
    b = client.runtime.breaker
    values: dict[str, Any] = {
        "circuit_state": b.state.value,
        "consecutive_failures": b.failures,
        "circuit_opened_at": dt.datetime.fromtimestamp(b.opened_at, dt.UTC) if b.opened_at else None,
    }
    if client.last_success_at is not None:
        values["last_success_at"] = dt.datetime.fromtimestamp(client.last_success_at, dt.UTC)
    if client.last_error is not None:
        values.update(_error_values(client.last_error))
    if counts is not None:
        values["last_counts"] = counts
    if ran:
        values["last_run_at"] = utcnow()
    try:
        async with svc.db.uow() as uow:
            await uow.session.execute(update(Connector).where(Connector.name == name).values(**values))
            await uow.commit()
    except Exception:  # health is best effort: losing it must not turn a good call into a failure
        log.warning("connector %s: could not record its health", name, exc_info=True)


def _error_values(error: BaseException) -> dict[str, Any]:
    if isinstance(error, ConnectorError):
        text, code = error.detail, error.code
    else:  # our own bug, not the partner's: name it without a message that might carry data
        text, code = f"internal error ({error.__class__.__name__})", "connectors.internal"
    from federation.identity.idnumber import mask_id_numbers_in_text

    return {"last_error": mask_id_numbers_in_text(text)[:500], "last_error_code": code, "last_error_at": utcnow()}


async def record_failure(svc: Services, name: str, error: BaseException) -> None:
    """Write down a failure that happened outside a client call (our own code, the database)."""
    async with svc.db.uow() as uow:
        await uow.session.execute(update(Connector).where(Connector.name == name).values(**_error_values(error)))
        await uow.commit()
