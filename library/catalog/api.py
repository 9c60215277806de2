"""The union catalogue over HTTP: search, works with holdings, record export, imports."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from federation.app import principal, services
from federation.audit.service import Record
from federation.errors import Forbidden
from federation.jobs import service as jobs
from federation.web.routing import PUBLIC, Routes, scopes, staff
from federation.web.schema import Input, Output
from library.catalog import service
from library.catalog.errors import BadImport, RecordNotFound, WorkNotFound
from library.catalog.export import to_marc21, to_marcxml
from library.catalog.models import BibRecordRow, ClusterLog, ItemRow, Work
from library.catalog.store import from_json

routes = Routes("catalog")

MAX_UPLOAD = 4 * 1024**3
IMPORTERS = staff("librarian", "admin") | scopes("catalog.write")


class SearchQuery(Input):
    q: str = Field(default="", max_length=10_000, description="free text and fields: title: author: isbn: ...")
    library: list[str] = Field(default_factory=list, max_length=50)
    city: list[str] = Field(default_factory=list, max_length=20)
    language: list[str] = Field(default_factory=list, max_length=20)
    format: list[str] = Field(default_factory=list, max_length=20)
    clc: list[str] = Field(default_factory=list, max_length=26, description="CLC top classes, e.g. I, TP")
    year_from: int | None = Field(default=None, ge=0, le=3000)
    year_to: int | None = Field(default=None, ge=0, le=3000)
    available: bool | None = None
    sort: Literal["relevance", "year_asc", "year_desc"] = "relevance"
    page: int = Field(default=1, ge=1, le=500)
    page_size: int = Field(default=20, ge=1, le=100)
    facet: list[Literal["library", "city", "language", "format", "clc_class", "year", "available"]] = Field(
        default_factory=list,
        max_length=7,
        description="the facets to count, the parameter repeated (facet=library&facet=language); default all seven",
    )


class FacetValue(Output):
    value: str
    count: int


class WorkHit(Output):
    id: str
    score: float
    title: str | None
    authors: list[str]
    year: int | None
    publisher: str | None
    isbns: list[str]
    libraries: list[str]
    available_at: list[str]
    highlights: dict[str, list[str]]


class SearchResults(Output):
    total: int
    page: int
    page_size: int
    items: list[WorkHit]
    facets: dict[str, list[FacetValue]]


class ItemOut(Output):
    barcode: str
    location: str | None
    call_number: str | None
    item_type: str | None
    status: str


class HoldingOut(Output):
    library: str
    record_id: str | None
    control_number: str | None
    items: list[ItemOut]
    available: int


class RecordSummary(Output):
    id: str
    library: str
    control_number: str
    dialect: str
    title: str
    isbns: list[str]


class WorkOut(Output):
    id: str
    title: str
    first_author: str | None
    year: int | None
    records: list[RecordSummary]
    holdings: list[HoldingOut]


class ClusterEntry(Output):
    record_id: str
    action: str
    reason: str
    actor: str
    at: dt.datetime


class ClusterHistory(Output):
    items: list[ClusterEntry]


class SplitIn(Input):
    reason: str = Field(min_length=1, max_length=300)


class ExportQuery(Input):
    format: Literal["marcxml", "marc21"] = "marcxml"


class JobAccepted(Output):
    job_id: str
    state: str


@routes.get(
    "/api/v1/catalog/search",
    access=PUBLIC,
    query=SearchQuery,
    response=SearchResults,
    summary="Search the union catalogue: works with the libraries that hold them, availability and facets",
)
async def search(request: web.Request, query: SearchQuery) -> web.Response:
    """The page as :class:`SearchResults`, written by orjson from plain values: the same bytes the model writes
    (a test holds them to it), without validating twenty hits the engine has just built from our own index."""
    req = service.SearchRequest(
        q=query.q,
        libraries=tuple(query.library),
        cities=tuple(query.city),
        languages=tuple(query.language),
        formats=tuple(query.format),
        clc_classes=tuple(query.clc),
        year_from=query.year_from,
        year_to=query.year_to,
        available=query.available,
        sort=query.sort,
        offset=(query.page - 1) * query.page_size,
        limit=query.page_size,
        facets=tuple(dict.fromkeys(query.facet)) or service.FACETS,
    )
    result = await service.search(services(request), req)
    page = {
        "total": result.total,
        "page": query.page,
        "page_size": query.page_size,
        "items": [service.hit_view(h) for h in result.hits],
        "facets": {k: [{"value": str(v), "count": c} for v, c in vals] for k, vals in result.facets.items()},
    }
    return web.Response(body=orjson.dumps(page), content_type="application/json", charset="utf-8")


async def load_work(session: Any, work_id: str) -> WorkOut:
    work = await session.get(Work, work_id)
    if work is None:
        raise WorkNotFound(f"no work {work_id}")
    records = list(
        (
            await session.execute(
                select(BibRecordRow)
                .where(BibRecordRow.work_id == work_id, BibRecordRow.deleted.is_(False))
                .order_by(BibRecordRow.library)
            )
        ).scalars()
    )
    items = list(
        (
            await session.execute(
                select(ItemRow).where(ItemRow.work_id == work_id).order_by(ItemRow.library, ItemRow.barcode)
            )
        ).scalars()
    )
    holdings: dict[str, HoldingOut] = {}
    for r in records:
        holdings.setdefault(
            r.library,
            HoldingOut(library=r.library, record_id=r.id, control_number=r.control_number, items=[], available=0),
        )
    for i in items:
        h = holdings.setdefault(
            i.library, HoldingOut(library=i.library, record_id=None, control_number=None, items=[], available=0)
        )
        h.items.append(ItemOut.model_validate(i))
        h.available += i.status == "available"
    summaries = []
    for r in records:
        bib = from_json(r.data)
        summaries.append(
            RecordSummary(
                id=r.id,
                library=r.library,
                control_number=r.control_number,
                dialect=r.dialect,
                title=bib.title,
                isbns=list(bib.isbns),
            )
        )
    return WorkOut(
        id=work.id,
        title=work.title,
        first_author=work.first_author,
        year=work.year,
        records=summaries,
        holdings=sorted(holdings.values(), key=lambda h: h.library),
    )


@routes.get(
    "/api/v1/catalog/works/{work_id}",
    access=PUBLIC,
    response=WorkOut,
    summary="One work: every library's record of it and every copy with its status now",
    errors=(404,),
)
async def get_work(request: web.Request) -> WorkOut:
    async with services(request).db.reader() as s:
        return await load_work(s, request.match_info["work_id"])


@routes.get(
    "/api/v1/catalog/works/{work_id}/cluster-log",
    access=staff("librarian", "admin"),
    response=ClusterHistory,
    summary="Why each record is in this work (joined by ISBN or key, created, moved, split)",
    errors=(404,),
)
async def cluster_log(request: web.Request) -> ClusterHistory:
    async with services(request).db.reader() as s:
        rows = await s.execute(
            select(ClusterLog).where(ClusterLog.work_id == request.match_info["work_id"]).order_by(ClusterLog.at)
        )
        return ClusterHistory(items=[ClusterEntry.model_validate(r) for r in rows.scalars()])


@routes.post(
    "/api/v1/catalog/records/{record_id}/split",
    access=staff("admin"),
    body=SplitIn,
    response=WorkOut,
    status=201,
    summary="Split a wrongly clustered record into a work of its own; it stays split on re-load",
    errors=(404,),
)
async def split_record(request: web.Request, body: SplitIn) -> WorkOut:
    from library.catalog.clusters import split

    svc = services(request)
    async with svc.db.uow() as uow:
        old_work, new_work = await split(
            uow.session, request.match_info["record_id"], principal(request).actor, body.reason
        )
        await svc.audit(
            uow,
            Record(
                action="catalog.split",
                actor=principal(request).actor,
                details={
                    "record": request.match_info["record_id"],
                    "from": old_work,
                    "to": new_work,
                    "reason": body.reason,
                },
            ),
        )
        uow.emit("catalog.works_changed", work_ids=[old_work, new_work])
        await uow.commit()
    async with svc.db.reader() as s:
        return await load_work(s, new_work)


@routes.get(
    "/api/v1/catalog/records/{record_id}/export",
    access=PUBLIC,
    query=ExportQuery,
    summary="A library's record as MARCXML or MARC21 (ISO 2709, UTF-8)",
    errors=(404,),
)
async def export_record(request: web.Request, query: ExportQuery) -> web.Response:
    async with services(request).db.reader() as s:
        row = await s.get(BibRecordRow, request.match_info["record_id"])
    if row is None or row.deleted:
        raise RecordNotFound("no such record")
    if query.format == "marc21":
        return web.Response(body=to_marc21(row), content_type="application/marc")
    return web.Response(body=to_marcxml([row]), content_type="application/marcxml+xml", charset="utf-8")


@routes.post(
    "/api/v1/catalog/imports",
    access=IMPORTERS,
    response=JobAccepted,
    status=202,
    summary="Upload a MARC file (multipart: file, library, format, encoding, holdings); it loads as a job",
    errors=(403, 415, 422),
)
async def create_import(request: web.Request) -> JobAccepted:
    from federation.members.errors import MemberNotFound
    from federation.members.service import get as get_member
    from federation.web.routing import UnsupportedMediaType

    svc = services(request)
    who = principal(request)
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("send multipart/form-data with a 'file' part")
    upload_dir = svc.settings.data_dir / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    target = upload_dir / f"{uuid.uuid4().hex}.marc"
    fields: dict[str, str] = {}
    size = 0
    got_file = False
    reader = await request.multipart()
    try:
        async for part in reader:
            if part.name == "file":
                if got_file:
                    raise BadImport("send one file per import")
                got_file = True
                # the fields sent before the file are checked now, not after gigabytes were written
                _import_params(fields, who)
                with target.open("wb") as out:
                    while chunk := await part.read_chunk(1 << 20):
                        size += len(chunk)
                        if size > MAX_UPLOAD:
                            raise BadImport("the file is larger than 4 GiB")
                        out.write(chunk)
            elif part.name in ("library", "format", "encoding", "holdings"):
                fields[part.name] = (await part.text())[:40].strip()
            else:
                raise BadImport(f"unknown form field {part.name!r}")
        if size == 0:
            raise BadImport("no file, or an empty one, was sent")
        params = _import_params(fields, who)
        async with svc.db.reader() as s:
            try:
                member = await get_member(s, params["library"])
            except MemberNotFound:
                raise BadImport(f"no member library {params['library']}") from None
        if member.kind != "library":
            raise BadImport(f"{member.code} is not a library")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    params.update(path=str(target), actor=who.actor, delete_after=True)
    async with svc.db.uow() as uow:
        job = await jobs.enqueue(uow, "catalog.ingest", params, created_by=who.actor)
        await uow.commit()
    return JobAccepted(job_id=job.id, state=job.state)


def _import_params(fields: dict[str, str], who: Any) -> dict[str, Any]:
    """The job's parameters from the form fields (those sent so far); refuses what cannot be loaded."""
    from library.catalog.holdings import PRESETS
    from library.catalog.marc import Encoding, Format

    library = (fields.get("library") or who.institution or "").upper()
    if not library:
        raise BadImport("name the library the records belong to")
    if not who.is_admin and who.institution != library:
        raise Forbidden("a library loads only its own records")
    params: dict[str, Any] = {
        "library": library,
        "format": fields.get("format") or "auto",
        "encoding": fields.get("encoding") or "auto",
        "holdings": fields.get("holdings") or None,
    }
    try:
        Format(params["format"])
        Encoding(params["encoding"])
    except ValueError as e:
        raise BadImport(str(e)) from None
    if params["holdings"] and params["holdings"] not in PRESETS:
        raise BadImport(f"unknown holdings layout; known: {', '.join(sorted(PRESETS))}")
    return params
