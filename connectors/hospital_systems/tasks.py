"""The hospital pull as a sync job: per resource type, referenced types first (Patients, Observations,
ImagingStudies, DiagnosticReports), pages of ``_lastUpdated`` changes through the health ingest, the watermark
committed after each page's data (see ``service`` for the crash window)."""

from __future__ import annotations

import logging

from connectors.framework.config import Secrets
from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.hospital_systems import service
from connectors.hospital_systems.adapter import HttpHospitalFhir
from federation.services import Services

log = logging.getLogger(__name__)
SCHEDULE_S = 300.0
MAX_REFUSALS_KEPT = 20


async def sync(run: SyncRun) -> None:
    fhir = HttpHospitalFhir(run.client)
    options = run.connector.config.options
    marks = service.parse_marks(run.watermark)
    count = run.connector.config.page_size
    for rtype in service.resource_types(options):
        page = await fhir.changed(rtype, marks.get(rtype), count)  # no unit of work is open across a call
        while True:
            run.counts["skipped"] += page.skipped
            unique = service.latest(page.resources)
            run.counts["duplicates"] += len(page.resources) - len(unique)
            if unique:
                result, counts = await service.store(
                    run.svc, unique, institution=run.connector.member_code, actor=run.actor
                )
                run.counts.update({f"{rtype}.{k}": v for k, v in counts.items()})
                if counts["refused"]:
                    codes = sorted({x["code"] for x in result.issues()})
                    log.warning("connector %s: %d %s refused (%s)", run.connector.name, counts["refused"], rtype, codes)
            mark = service.next_mark(marks.get(rtype), unique, more=page.next is not None)
            if mark is not None and mark != marks.get(rtype):
                marks[rtype] = mark
                async with run.svc.db.uow() as uow:  # right after the ingest's own commit
                    await run.commit(uow, service.dump_marks(marks))
            if page.next is None:
                break
            page = await fhir.follow(page.next, rtype)


def bearer(secrets: Secrets) -> dict[str, str]:
    """A FHIR server's usual authentication: the ``token`` secret as a bearer token (``api_key`` also works)."""
    token = secrets.get("token")
    if token:
        return {"Authorization": f"Bearer {token}"}
    key = secrets.get("api_key")
    return {"X-Api-Key": key} if key else {}


KIND = ConnectorKind(
    "hospital_systems",
    "member hospitals' FHIR R4 servers: laboratory and imaging results into the health ingest",
    sync=sync,
    auth_headers=bearer,
    schedule_s=SCHEDULE_S,
)


def register(svc: Services) -> None:
    register_kind(svc, KIND)
