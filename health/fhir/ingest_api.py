"""Hospitals push results: ``POST /fhir`` (a transaction or batch Bundle) and ``POST /fhir/$import`` (NDJSON).

A Bundle up to ``fhir_sync_max_entries`` entries is stored while the hospital waits and answered with a
``transaction-response`` or ``batch-response`` Bundle. A bigger one, or any request with ``Prefer: respond-async``,
and every ``$import``, is spooled to the data directory and stored by a job: 202, with ``Content-Location`` naming
the job. Bodies are read here, past the app's 1 MiB limit, up to ``fhir_max_bundle_bytes`` for a Bundle.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from federation.app import principal, services
from federation.errors import DomainError, Forbidden
from federation.jobs import service as jobs
from federation.services import Services
from federation.web.routing import Principal, UnsupportedMediaType, scopes
from health.fhir import tasks
from health.fhir.ingest import IngestRefused, IngestResult, Item, bundle_items, ingest_items, loads
from health.fhir.outcome import fhir_response, fhir_routes, issue, outcome, outcome_response

routes = fhir_routes()
WRITERS = scopes("health.write")
BUNDLE_TYPES = ("application/fhir+json", "application/json")
NDJSON_TYPES = ("application/fhir+ndjson", "application/x-ndjson", "application/ndjson")
MAX_IMPORT = 4 * 1024**3
CHUNK = 1 << 20


class BundleTooLarge(DomainError):
    code = "fhir.too_large"
    status = 413
    title = "Request too large"


class Conflict(DomainError):
    code = "fhir.conflict"
    status = 409
    title = "Conflict"


def hospital_of(who: Principal) -> str:
    """The member code of the hospital whose API key this is; other keys may not push results. The key's principal
    carries its member's kind while the member is active, read with the key (the routes admit API keys only)."""
    if who.kind != "apikey" or who.institution_kind != "hospital":
        raise Forbidden("results are pushed with a member hospital's API key")
    return str(who.institution)


async def read_body(request: web.Request, limit: int, advice: str) -> bytes:
    """The body, read past the app's client_max_size, refused (413) above ``limit`` before it is all read."""
    if request.content_length is not None and request.content_length > limit:
        raise BundleTooLarge(f"the body is larger than {limit} bytes; {advice}")
    parts, size = [], 0
    while chunk := await request.content.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise BundleTooLarge(f"the body is larger than {limit} bytes; {advice}")
        parts.append(chunk)
    return b"".join(parts)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise IngestRefused("the request body is empty", expression="Bundle")
    try:
        return loads(raw)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError among them
        where = f" at position {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
        raise IngestRefused(f"the body is not valid JSON: {e.__class__.__name__}{where}") from None


def response_bundle(result: IngestResult) -> dict[str, Any]:
    """The ``transaction-response`` / ``batch-response``: each entry's status, location and version tag."""
    entries = []
    for item in result.items:
        entries.append({"response": entry_response(item)})
    return {"resourceType": "Bundle", "type": f"{result.kind}-response", "entry": entries}


def entry_response(item: Item) -> dict[str, Any]:
    if not item.ok:
        structural = any(x["code"] == "structure" for x in item.issues)
        return {
            "status": "400 Bad Request" if structural else "422 Unprocessable Entity",
            "outcome": outcome(item.issues),
        }
    return {
        "status": "201 Created" if item.outcome == "created" else "200 OK",
        "location": item.location,
        "etag": f'W/"{item.version}"',
    }


def _media(request: web.Request, allowed: tuple[str, ...]) -> None:
    if request.content_type not in allowed:
        raise UnsupportedMediaType(f"send {' or '.join(allowed)}, not {request.content_type or 'nothing'}")


async def _spool(svc: Services, data: bytes | None, request: web.Request | None, suffix: str) -> Path:
    """Write the load to ``data_dir/uploads`` for a job (the job deletes it when it ends)."""
    upload_dir = svc.settings.data_dir / "uploads"
    await asyncio.to_thread(upload_dir.mkdir, parents=True, exist_ok=True)
    target = upload_dir / f"{uuid.uuid4().hex}.{suffix}"
    try:
        with target.open("wb") as out:
            if data is not None:
                await asyncio.to_thread(out.write, data)
            elif request is not None:
                size = 0
                while chunk := await request.content.read(CHUNK):
                    size += len(chunk)
                    if size > MAX_IMPORT:
                        raise BundleTooLarge(f"an import is at most {MAX_IMPORT} bytes")
                    out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


async def _as_job(svc: Services, who: Principal, hospital: str, path: Path, fmt: str) -> web.Response:
    params = {"path": str(path), "format": fmt, "institution": hospital, "actor": who.actor}
    try:
        async with svc.db.uow() as uow:
            job = await jobs.enqueue(uow, tasks.IMPORT, params, created_by=who.actor)
            await uow.commit()
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    location = f"/api/v1/jobs/{job.id}"
    note = issue("informational", f"accepted; the load runs as job {job.id}", severity="information")
    return outcome_response(202, [note], headers={"Content-Location": location})


@routes.post(
    "/fhir",
    access=WRITERS,
    summary="Push a transaction or batch Bundle of results (large ones run as a job)",
    document=False,
    errors=(400, 409, 413, 415, 422),
)
async def post_bundle(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    _media(request, BUNDLE_TYPES)
    hospital = hospital_of(who)
    raw = await read_body(request, svc.settings.fhir_max_bundle_bytes, "send large loads as $import (NDJSON)")
    try:
        kind, items = bundle_items(parse_json(raw))
        if "respond-async" in request.headers.get("Prefer", "") or len(items) > svc.settings.fhir_sync_max_entries:
            return await _as_job(svc, who, hospital, await _spool(svc, raw, None, "json"), "bundle")
        result = await ingest_items(
            svc, items, institution=hospital, actor=who.actor, atomic=kind == "transaction", kind=kind
        )
    except IngestRefused as e:
        return outcome_response(e.status, e.issues)
    except IntegrityError:  # another request stored the same resource between our select and our insert
        raise Conflict("the same resources are being stored by another request; send the Bundle again") from None
    return fhir_response(response_bundle(result))


@routes.post(
    "/fhir/$import",
    access=WRITERS,
    summary="Load NDJSON (one resource a line) as a job; the job's result lists each refused line",
    document=False,
    errors=(413, 415),
)
async def post_import(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    _media(request, NDJSON_TYPES)
    hospital = hospital_of(who)
    if request.content_length is not None and request.content_length > MAX_IMPORT:
        raise BundleTooLarge(f"an import is at most {MAX_IMPORT} bytes")
    path = await _spool(svc, None, request, "ndjson")
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return outcome_response(400, [issue("required", "the import is empty")])
    return await _as_job(svc, who, hospital, path, "ndjson")
