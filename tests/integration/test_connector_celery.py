"""The social-security sync as a job through a real broker and a real Celery worker (its own thread, loop and
services), against the sandbox over HTTP: the worker applies the feed once; a second job changes nothing."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession

from connectors.framework import service as connectors
from connectors.social_security import sandbox as ss_sandbox
from connectors.social_security.tasks import KIND
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import CredentialStatus, IdentifierType
from federation.jobs.celery_app import CeleryDoorbell
from federation.members import service as members
from tests.conftest import TEST_BROKER_URL
from tests.integration.test_celery_worker import (
    Seen,
    celery_app,
    celery_worker,
    enqueue,
    require_broker,
    wait_for_state,
)

pytestmark = pytest.mark.broker


async def test_the_card_feed_runs_in_a_celery_worker(demo, settings, tmp_path):
    url = require_broker(TEST_BROKER_URL)
    async with ss_sandbox.started_app() as partner:
        async with demo.db.uow() as uow:
            await members.upsert(uow, members.NewInstitution("CQSI", "重庆市社会保险事务中心", "system"))
            await connectors.configure(
                uow,
                demo,
                "ss-celery",
                kind="social_security",
                member_code="CQSI",
                config={"base_url": partner},
                secrets={"api_key": ss_sandbox.API_KEY},
                actor="test",
            )
            await uow.commit()
        async with ClientSession() as s:
            for r in RESIDENTS[:3]:
                await s.post(f"{partner}/_sandbox/card-events", json={"type": "lost", "card_number": r.ss_card})
        app = celery_app(tmp_path, settings, url, Seen())
        demo.db.doorbell = CeleryDoorbell(app)
        with celery_worker(app):
            first = await enqueue(demo, KIND.job_kind, {"name": "ss-celery"})
            job = await wait_for_state(demo, first, "succeeded", "failed")
            assert job.state == "succeeded", job.error
            assert job.result["applied"] == 3 and job.result["watermark"] == "3"
            second = await enqueue(demo, KIND.job_kind, {"name": "ss-celery"})
            job = await wait_for_state(demo, second, "succeeded", "failed")
            assert job.state == "succeeded" and job.result.get("applied", 0) == 0
    async with demo.db.reader() as s:
        for r in RESIDENTS[:3]:
            ident = await identity.find_identifier(
                s, demo.cipher, identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, r.ss_card)
            )
            assert ident is not None and ident.status == CredentialStatus.LOST
