"""The ``engine`` fixture: every contract test runs once per engine, against the very same expectations.

``tantivy`` runs on a temporary directory. ``elasticsearch`` needs
``search.elastic_engine.ElasticEngine`` and the ``osmem`` fixture of
``tests/contract/osmem.py`` (an in-memory osmem-server, or ``ELASTICSEARCH_URL``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from search.engine import Engine
from search.tantivy_engine import TantivyEngine
from tests.contract.corpus import DOCS, SCHEMA

# The osmem fixture, re-exported for pytest. A broken or half-written osmem.py must not stop the tantivy runs,
# so an import error is kept and reported by the elasticsearch tests only.
_OSMEM_ERROR: BaseException | None = None
try:
    from tests.contract.osmem import osmem  # noqa: F401
except Exception as e:  # noqa: BLE001
    _OSMEM_ERROR = e

ENGINES = ["tantivy", "elasticsearch"]


async def make_engine(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if kind == "tantivy":
        return TantivyEngine(tmp_path / "tantivy")
    if _OSMEM_ERROR is not None:
        pytest.fail(f"tests/contract/osmem.py does not import: {_OSMEM_ERROR!r}")
    from tests.contract.osmem import make_engine as make_elastic_engine

    # osmem-server on a free port (or ELASTICSEARCH_URL); plain JSON media types for osmem, see osmem.py
    return make_elastic_engine(request.getfixturevalue("osmem"))


@pytest.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await make_engine(request.param, request, tmp_path)
    try:
        yield eng
    finally:
        if request.param == "elasticsearch":
            from tests.contract.osmem import drop_indexes

            await drop_indexes(eng)
        await eng.close()


@pytest.fixture
def index() -> str:
    """A fresh index name per test (engines with a shared server must not see each other's data)."""
    return f"contract-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def loaded(engine: Engine, index: str) -> Engine:
    """The engine with the corpus in ``index``, refreshed."""
    await engine.open(index, SCHEMA)
    await engine.upsert(index, DOCS)
    await engine.refresh(index)
    return engine
