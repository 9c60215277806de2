"""The services one process holds: built once by the composition root, passed explicitly, never imported as globals."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from federation.audit.service import AuditKey, Record, append, take_chain
from federation.db import Database, UnitOfWork
from federation.identity.crypto import FieldCipher
from federation.settings import Settings

EventHandler = Callable[["Services", dict[str, Any]], Awaitable[None]]
BatchHandler = Callable[["Services", list[dict[str, Any]]], Awaitable[None]]
JobHandler = Callable[["Services", "JobContext"], Awaitable[dict[str, Any] | None]]  # noqa: F821


@dataclasses.dataclass
class Services:
    settings: Settings
    db: Database
    cipher: FieldCipher
    audit_key: AuditKey
    event_handlers: dict[str, list[EventHandler]] = dataclasses.field(default_factory=dict)
    batch_handlers: dict[str, list[BatchHandler]] = dataclasses.field(default_factory=dict)
    job_handlers: dict[str, JobHandler] = dataclasses.field(default_factory=dict)
    search_engine: Any = None  # a search.engine.Engine; built from the settings on first use
    # whether this process writes the embedded search index: the one running the jobs and the outbox relay does;
    # a server process beside it (``--workers``, or with a broker) only reads it (see ``create_app``)
    index_writer: bool = True
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    closing: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    serving: list[Callable[[Services], Awaitable[None]]] = dataclasses.field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, db: Database | None = None) -> Services:
        return cls(
            settings=settings,
            db=db or Database.from_settings(settings),
            cipher=FieldCipher(
                settings.secret_bytes("data_key"),
                settings.secret_bytes("index_key"),
                settings.retired_data_key_bytes(),
            ),
            audit_key=AuditKey(settings.secret_bytes("index_key")),
        )

    async def audit(self, uow: UnitOfWork, record: Record) -> None:
        """Record an audit entry with this unit of work.

        Entries are appended just before the commit: appending takes a chain's lock (an advisory lock on
        PostgreSQL), and taking it last keeps it for two statements (the lock, the guarded ``INSERT ... SELECT``
        of ``append``) and the commit instead of the whole transaction.
        """
        pending: list[Record] = uow.deferred.setdefault("audit", [])
        if not pending:

            async def flush() -> None:
                chain, release = await take_chain(uow.session, uow.unsent_events)
                uow.on_end(release)
                for entry in pending:
                    await append(uow.session, self.audit_key, entry, chain)
                pending.clear()

            uow.before_commit(flush)
        pending.append(record)

    def on_event(self, topic: str, handler: EventHandler) -> None:
        self.event_handlers.setdefault(topic, []).append(handler)

    def on_events(self, topic: str, handler: BatchHandler) -> None:
        """Handle the events of ``topic`` many at a time: each relay pass hands ``handler`` the payloads of every
        event of the topic it took, in order of creation (one list per pass). For work that is cheaper once for
        many events than once for each, such as rebuilding search documents and committing the index."""
        self.batch_handlers.setdefault(topic, []).append(handler)

    def job_handler(self, kind: str, handler: JobHandler) -> None:
        if kind in self.job_handlers:
            raise ValueError(f"job kind {kind} registered twice")
        self.job_handlers[kind] = handler

    @property
    def search(self) -> Any:
        if self.search_engine is None:
            self.search_engine = _search_engine(self.settings, writes=self.index_writer)
        return self.search_engine

    def on_serve(self, check: Callable[[Services], Awaitable[None]]) -> None:
        """A check each server process runs once, beside its first requests, when it starts serving (not the
        command line's one-off commands): finding work that must be queued, say. A failing check is logged."""
        self.serving.append(check)

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Something a package started for this process (worker processes, say), stopped by ``close``."""
        self.closing.append(close)

    async def close(self) -> None:
        while self.closing:
            await self.closing.pop()()
        if self.search_engine is not None:
            await self.search_engine.close()
        await self.db.dispose()


def _search_engine(settings: Settings, *, writes: bool = True) -> Any:
    from federation.settings import SearchEngine

    if settings.search_engine is SearchEngine.ELASTICSEARCH:
        from search.elastic_engine import ElasticEngine

        return ElasticEngine(settings.elasticsearch_url or "http://127.0.0.1:9200")
    from search.tantivy_engine import TantivyEngine

    return TantivyEngine(
        settings.data_dir / "search", rebuild_heap=settings.search_rebuild_mb * 1_000_000, writes=writes
    )
