"""Property-based fuzzing driven by the OpenAPI document: no input to any /api/v1 route makes a 500.

The service runs in a thread on a real port; hypothesis generates bodies and
query strings from each operation's schema (valid-looking and not), plus
arbitrary JSON and raw bytes, and sends them as the caller the route allows.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.app import OPENAPI, create_app
from federation.demo import RESIDENTS
from federation.migrate import upgrade
from tests.conftest import make_settings

EXAMPLES = 50


class Server:
    def __init__(self, tmp: Path) -> None:
        self.settings = make_settings(tmp, max_request_bytes=64 * 1024)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.doc: dict[str, Any] = {}
        self.headers: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        upgrade(self.settings.effective_database_url)
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(60), "server did not start"
        self.headers["anonymous"] = {}
        self.headers["resident"] = self._login(RESIDENTS[1].id_number)
        self.headers["staff"] = self._login("admin@federation")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.run_forever()

    async def _serve(self) -> None:
        from federation import demo

        app = create_app(self.settings)
        self.doc = app[OPENAPI]
        runner = web.AppRunner(app)
        await runner.setup()
        await demo.load(app[__import__("federation.app", fromlist=["SERVICES"]).SERVICES])
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.runner = runner
        self.ready.set()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("Content-Type", ""), resp.read()
        finally:
            conn.close()

    def _login(self, username: str) -> dict[str, str]:
        status, _, body = self.request(
            "POST",
            "/api/v1/auth/token",
            json.dumps({"username": username, "password": "demo-password"}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        return {"Authorization": "Bearer " + json.loads(body)["access_token"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    s = Server(tmp_path_factory.mktemp("fuzz"))
    s.start()
    yield s
    s.stop()


def _inline(schema: Any, components: dict[str, Any], depth: int = 0) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema and depth < 8:
            return _inline(components[schema["$ref"].rsplit("/", 1)[1]], components, depth + 1)
        return {k: _inline(v, components, depth) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, components, depth) for v in schema]
    return schema


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    doc = create_app(make_settings(Path("/tmp/twincity-fuzz-doc")), run_background=False)[OPENAPI]
    ops = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if (method, path) == ("delete", "/api/v1/auth/session"):
                continue  # logging out would spend the shared session; the route table covers it
            ops.append((method.upper(), path, _inline(op, doc["components"]["schemas"])))
    return ops


OPERATIONS = _operations()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for the JSON Schema subset pydantic emits; unknown keywords fall back to any JSON value."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s) for s in schema[key]])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return from_schema(schema["allOf"][0])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date":
            return st.dates().map(lambda d: d.isoformat())
        if fmt == "date-time":
            return st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(lambda d: d.isoformat())
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind == "array":
        items = from_schema(schema.get("items", {}))
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))

        @st.composite
        def obj(draw: st.DrawFn) -> dict[str, Any]:
            out = {}
            for name, sub in props.items():
                if name in required or draw(st.booleans()):
                    out[name] = draw(from_schema(sub))
            return out

        return obj()
    return json_values


def _caller(op: dict[str, Any]) -> str:
    access = op["x-access"]
    if access == "anyone":
        return "anonymous"
    if "staff" in access:
        return "staff"
    return "resident"


def _bodies(op: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    if "requestBody" not in op:
        return st.none()
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    valid = from_schema(schema).map(lambda v: json.dumps(v).encode())
    arbitrary = json_values.map(lambda v: json.dumps(v).encode())
    return st.one_of(valid, valid, arbitrary, st.binary(max_size=200))


def _paths(path: str, op: dict[str, Any]) -> st.SearchStrategy[str]:
    names = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
    segment = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
    query_params = [p for p in op.get("parameters", []) if p["in"] == "query"]

    @st.composite
    def build(draw: st.DrawFn) -> str:
        from urllib.parse import quote, urlencode

        out = path
        for name in names:
            out = out.replace("{" + name + "}", quote(draw(segment), safe=""))
        if query_params:
            chosen = draw(st.lists(st.sampled_from(query_params), unique_by=lambda p: p["name"], max_size=3))
            pairs = [(p["name"], str(draw(st.one_of(st.text(max_size=20), st.integers())))) for p in chosen]
            if pairs:
                out += "?" + urlencode(pairs)
        return out

    return build()


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_no_input_makes_a_500(server: Server, method: str, path: str, op: dict[str, Any]) -> None:
    who = _caller(op)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(url=_paths(path, op), body=_bodies(op))
    def run(url: str, body: bytes | None) -> None:
        headers = dict(server.headers[who])
        if body is not None:
            headers["Content-Type"] = "application/json"
        status, ctype, raw = server.request(method, url, body, headers)
        assert status < 500, f"{method} {url} -> {status}: {raw[:300]!r}"
        if status >= 400:
            assert ctype.startswith("application/problem+json"), f"{method} {url} -> {status} {ctype}"

    run()
