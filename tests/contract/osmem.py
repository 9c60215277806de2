"""An Elasticsearch for the contract tests: ``ELASTICSEARCH_URL`` if set, else an in-memory osmem-server.

``osmem-server`` (PyPI, in the ``dev`` extra) bundles a static binary that speaks
the Elasticsearch/OpenSearch REST API in memory. It prints one JSON line with
its URL once it listens (``--addr 127.0.0.1:0`` picks a free port) and exits
when its stdin closes or this process dies (``--parent-pid``), so a killed test
run leaves nothing behind.

Outside CI an osmem-server that cannot start skips the Elasticsearch tests; in
CI (``CI=true``) it fails them, so CI can never pass by skipping them.

osmem refuses the compatibility media type that the 9.x client sends, so the
engine for it is built with ``compatibility_headers=False``
(:class:`search.elastic_engine.PlainMediaTypeNode`); a real Elasticsearch named
by ``ELASTICSEARCH_URL`` gets the client's defaults.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator

import pytest

from search.elastic_engine import ElasticEngine

IN_CI = os.environ.get("CI", "").lower() == "true"
ELASTICSEARCH_URL = os.environ.get("ELASTICSEARCH_URL") or None
STARTUP_TIMEOUT = 30.0


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI runs the Elasticsearch contract tests: {reason}", pytrace=False)
    pytest.skip(reason)


def _wait_until_answering(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP(S)_PROXY
    while time.monotonic() < deadline:
        try:
            with opener.open(url + "/", timeout=2) as resp:
                if resp.status == 200 and "version" in json.loads(resp.read()):
                    return
        except (OSError, ValueError) as e:  # URLError is an OSError
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s: {last}")


@pytest.fixture(scope="session")
def osmem() -> Iterator[str]:
    """The URL of a running Elasticsearch for this test session (osmem on a free 127.0.0.1 port unless set)."""
    if ELASTICSEARCH_URL:  # named on purpose: if it does not answer, the tests error out
        yield ELASTICSEARCH_URL
        return
    try:
        from osmem_server import OsmemServer
    except ImportError:
        _unavailable("osmem-server is not installed (pip install -e '.[dev]')")
    try:
        server = OsmemServer.start(addr="127.0.0.1:0", japanese=False, startup_timeout=STARTUP_TIMEOUT)
    except Exception as e:  # OsmemError, or OSError when the binary cannot run here
        _unavailable(f"osmem-server did not start: {e}")
    try:
        _wait_until_answering(server.url, STARTUP_TIMEOUT)
    except TimeoutError as e:
        server.close()
        _unavailable(f"osmem-server started but does not answer: {e}")
    try:
        yield server.url
    finally:
        server.close()


def make_engine(url: str) -> ElasticEngine:
    """An engine for ``url``: plain JSON media types for osmem, the client's defaults for a real Elasticsearch."""
    return ElasticEngine(url, compatibility_headers=ELASTICSEARCH_URL is not None)


async def drop_indexes(engine: ElasticEngine) -> None:
    """Delete every index ``engine`` opened (a shared or real server keeps no test data behind)."""
    for name in engine.indexes:
        await engine.drop(name)
