"""Fixtures shared by every layer: settings in a temporary data directory, a migrated database, an app client.

The database is SQLite unless ``TWINCITY_TEST_DATABASE_URL`` names another
(CI runs the ``db``-marked tests again on PostgreSQL). In CI a configured
database that cannot be reached fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from federation.app import create_app
from federation.extensions import build_services
from federation.migrate import upgrade
from federation.models import Base
from federation.services import Services
from federation.settings import Settings, load_settings

TEST_DB_URL = os.environ.get("TWINCITY_TEST_DATABASE_URL")
TEST_BROKER_URL = os.environ.get("TWINCITY_TEST_BROKER_URL")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # any test that takes a database fixture is a db test: CI runs those again on PostgreSQL
    for item in items:
        if {"db_url", "svc", "client", "demo"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if TEST_DB_URL:
        # fresh schema once per run; tests clean up by truncation
        async def reset() -> None:
            engine = create_async_engine(TEST_DB_URL)
            async with engine.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
            await engine.dispose()

        import asyncio

        asyncio.run(reset())
        upgrade(TEST_DB_URL)
        yield TEST_DB_URL
        return
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    yield str(path)


@pytest.fixture
async def db_url(_template: str, tmp_path: Path) -> AsyncIterator[str]:
    if TEST_DB_URL:
        engine = create_async_engine(TEST_DB_URL)
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only"))
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            await conn.execute(text("ALTER TABLE audit_entries ENABLE TRIGGER audit_entries_append_only"))
        await engine.dispose()
        yield TEST_DB_URL
        return
    target = tmp_path / "twincity.db"
    shutil.copyfile(_template, target)
    yield f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, database_url=db_url)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # cheap password hashing: the suite logs in thousands of times; production keeps argon2's defaults. No FHIR
    # validation workers: a worker started for each test's demo load would cost more than it saves; the tests of
    # health/fhir/validation.py and those that ask for workers run them.
    overrides = {"password_time_cost": 1, "password_memory_kib": 1024, "fhir_validation_workers": 0, **overrides}
    return load_settings(env="test", data_dir=tmp_path / "var", log_json=False, **overrides)


@pytest.fixture
async def svc(settings: Settings) -> AsyncIterator[Services]:
    services = build_services(settings)
    yield services
    await services.close()


@pytest.fixture
async def client(settings: Settings, svc: Services) -> AsyncIterator[TestClient]:
    from federation.app import SERVER_LIMITS

    app = create_app(settings, svc=svc)
    server = TestServer(app)
    await server.start_server(**SERVER_LIMITS)  # the test client would start it without them
    async with TestClient(server) as c:
        yield c


@pytest.fixture
async def demo(svc: Services) -> Services:
    from federation import demo as demo_world

    await demo_world.load(svc)
    return svc


async def token_for(client: TestClient, username: str, password: str = "demo-password") -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return {"Authorization": f"Bearer {body['access_token']}"}
