"""The hospital pull as a sync job: per resource type, referenced types first (Patients, Observations,
ImagingStudies, DiagnosticReports), pages of ``_lastUpdated`` changes through the health ingest, the watermark
committed after each page's data (see ``service`` for the crash window, and for the refused resources that hold a
type's watermark until they are stored or given up)."""

from __future__ import annotations

import logging

from connectors.framework import service as connectors
from connectors.framework.config import Secrets
from connectors.framework.errors import ConnectorError
from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.hospital_systems import service
from connectors.hospital_systems.adapter import HttpHospitalFhir
from connectors.hospital_systems.port import Changed
from federation.services import Services

log = logging.getLogger(__name__)
SCHEDULE_S = 300.0
MAX_REFUSALS_KEPT = 20  # ids of given-up resources named in the connector's last error


class RefusalsGivenUp(ConnectorError):
    """Resources the ingest kept refusing, passed by the watermark after the connector's ``refusal_retries``."""

    code = "hospital_systems.refusals_given_up"
    title = "Resources refused run after run were given up"


async def sync(run: SyncRun) -> None:
    fhir = HttpHospitalFhir(run.client)
    options = run.connector.config.options
    retries = service.refusal_retries(options)
    marks, held = service.parse_state(run.watermark)
    count = run.connector.config.page_size
    given_up: list[Changed] = []
    passed_ids: set[tuple[str, str]] = set()
    for rtype in service.resource_types(options):
        start, start_runs = marks.get(rtype), held.get(rtype, 0)
        hold: service.Hold | None = None  # once set, this run moves the type's watermark no further
        page = await fhir.changed(rtype, start, count)  # no unit of work is open across a call
        while True:
            run.counts["skipped"] += page.skipped
            unique = service.latest(page.resources)
            run.counts["duplicates"] += len(page.resources) - len(unique)
            refused: list[Changed] = []
            if unique:
                result, counts = await service.store(
                    run.svc, unique, institution=run.connector.member_code, actor=run.actor
                )
                run.counts.update({f"{rtype}.{k}": v for k, v in counts.items()})
                if counts["refused"]:  # one given up already in this run (a page repeated it) holds nothing
                    refused = [r for r in service.refused_of(unique, result) if (r.rtype, r.id) not in passed_ids]
                    codes = sorted({x["code"] for x in result.issues()})
                    log.warning("connector %s: %d %s refused (%s)", run.connector.name, counts["refused"], rtype, codes)
            new_state: str | None = None
            if hold is None and refused:
                hold, passed = service.hold_for(start, start_runs, marks.get(rtype), unique, refused, retries=retries)
                given_up += passed
                passed_ids.update((r.rtype, r.id) for r in passed)
                run.counts[f"{rtype}.given_up"] += len(passed)
            if hold is not None:
                if held.get(rtype) != hold.runs or marks.get(rtype) != hold.at:
                    if hold.at is not None:
                        marks[rtype] = hold.at
                    held[rtype] = hold.runs
                    new_state = service.dump_state(marks, held)
                run.counts[f"{rtype}.held_runs"] = hold.runs
            else:
                mark = service.next_mark(marks.get(rtype), unique, more=page.next is not None)
                if mark is not None and mark != marks.get(rtype):
                    marks[rtype] = mark
                    held.pop(rtype, None)  # moved on: a refusal after this instant starts its own count
                    new_state = service.dump_state(marks, held)
            if new_state is not None:
                async with run.svc.db.uow() as uow:  # right after the ingest's own commit
                    await run.commit(uow, new_state)
            if page.next is None:
                break
            page = await fhir.follow(page.next, rtype)
    if given_up:
        await _record_given_up(run, given_up, retries)


async def _record_given_up(run: SyncRun, given_up: list[Changed], retries: int) -> None:
    """Name the given-up resources in the connector's health (its last error) and the log: the hospital must fix
    them; a new version of one (a later ``lastUpdated``) is pulled again like any change."""
    ids = [f"{r.rtype}/{r.id}" for r in given_up[:MAX_REFUSALS_KEPT]]
    more = f" and {len(given_up) - len(ids)} more" if len(given_up) > len(ids) else ""
    text = f"connector {run.connector.name}: refused after {retries} further run(s), given up: {', '.join(ids)}{more}"
    log.warning("%s", text)
    await connectors.record_failure(run.svc, run.connector.name, RefusalsGivenUp(text))


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
