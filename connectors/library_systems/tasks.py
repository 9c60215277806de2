"""The library jobs: the OAI-PMH harvest as the kind's sync (a page per unit of work, committed with its
watermark), and the periodic scan of drop folders."""

from __future__ import annotations

from typing import Any

from connectors.framework import service as connectors
from connectors.framework.errors import ConnectorError
from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.library_systems import dropfolder, service
from connectors.library_systems.adapter import HttpOaiPmh, xml_client
from connectors.library_systems.errors import OaiError
from connectors.library_systems.schemas import datestamp_ok
from federation.jobs.runner import SCHEDULE_KEY
from federation.jobs.service import JobContext
from federation.services import Services

SCHEDULE_S = 900.0
DROP_JOB = "connectors.library_systems.drop_folder"
DROP_SCHEDULE_S = 30.0


async def sync(run: SyncRun) -> None:
    options = service.HarvestOptions.of(run.connector.config.options)
    if not options.harvest:
        return
    async with xml_client(run.client) as client:
        oai = HttpOaiPmh(client)
        granularity = (await oai.identify()).granularity
        since = run.watermark
        if since and not datestamp_ok(since, granularity):
            since = since[:10]  # the repository went to day granularity: the day of the watermark, inclusive
        page = await oai.list_records(options.metadata_prefix, granularity, since=since, oai_set=options.oai_set)
        best = since
        restarted = False
        while True:
            best = service.max_datestamp(best, page.records)
            # an unordered repository's later pages may hold older datestamps: move only once the list is complete
            mark = best if options.ordered or not page.token else run.watermark
            prepared = service.prepare_page(page.records, library=run.connector.member_code, options=options)
            async with run.svc.db.uow() as uow:
                run.counts.update(
                    await service.apply_page(uow, prepared, library=run.connector.member_code, actor=run.actor)
                )
                await run.commit(uow, mark)
            if not page.token:
                return
            try:
                page = await oai.resume(page.token, granularity)
            except OaiError as e:
                if e.oai_code != "badResumptionToken" or restarted:
                    raise
                restarted = True  # the token expired: list again from what is committed
                run.counts["restarted"] += 1
                page = await oai.list_records(
                    options.metadata_prefix, granularity, since=run.watermark, oai_set=options.oai_set
                )


async def drop_folder_job(svc: Services, ctx: JobContext) -> dict[str, Any]:
    """``params.name`` scans that connector's folder; no name scans every enabled library connector with one."""
    name = ctx.params.get("name")
    actor = str(ctx.params.get("actor") or "system:connectors")
    if name:
        async with svc.db.reader() as s:
            targets = [await connectors.load(s, svc, str(name))]
    else:
        targets = [c for c in await connectors.of_kind(svc, KIND.name) if c.config.options.get("drop_folder")]
    results: dict[str, Any] = {}
    failures = []
    for connector in targets:
        try:
            results[connector.name] = await dropfolder.scan(svc, connector, actor=actor)
        except Exception as e:  # noqa: BLE001 - one library's broken folder must not starve the others
            failures.append(f"{connector.name}: {getattr(e, 'code', e.__class__.__name__)}")
    if failures:
        raise ConnectorError(f"{len(failures)} drop folder(s) failed: {', '.join(failures)}")
    return results


KIND = ConnectorKind(
    "library_systems",
    "member libraries' catalogues: OAI-PMH harvest (MARCXML) and a drop folder of MARC files",
    sync=sync,
    schedule_s=SCHEDULE_S,
)


def register(svc: Services) -> None:
    register_kind(svc, KIND)
    svc.job_handler(DROP_JOB, drop_folder_job)
    svc.extras.setdefault(SCHEDULE_KEY, {})[DROP_JOB] = DROP_SCHEDULE_S
