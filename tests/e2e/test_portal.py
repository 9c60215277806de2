"""The portal's files over HTTP: served from the package with their types, a content-hash ETag and a policy that
lets the page load nothing but its own files; nothing else of the package is reachable through them."""

from __future__ import annotations

import re

import pytest

from federation.web import portal


async def test_the_page_and_every_file_it_names_are_served(client):
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert '<html lang="zh-CN">' in page
    for header, value in portal.SECURITY.items():
        assert resp.headers[header] == value
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    named = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert sorted(named) == ["/static/portal.css", "/static/portal.js"]
    types = {"/static/portal.css": "text/css", "/static/portal.js": "text/javascript"}
    for path in named:
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == types[path]
        assert resp.charset == "utf-8"
        assert (await resp.read()) == (portal.STATIC / path.removeprefix("/static/")).read_bytes()


async def test_a_browser_revalidates_with_the_etag(client):
    first = await client.get("/static/portal.js")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    again = await client.get("/static/portal.js", headers={"If-None-Match": f'"stale", {etag}'})
    assert again.status == 304
    assert await again.read() == b""
    changed = await client.get("/static/portal.js", headers={"If-None-Match": '"stale"'})
    assert changed.status == 200
    assert await changed.read() == await first.read()
    assert etag != (await client.get("/static/portal.css")).headers["ETag"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/nothing.js",
        "/static/..%2Fportal.py",
        "/static/%2E%2E%2Fportal.py",
        "/static/portal.py",
        "/static/__init__.py",
    ],
)
async def test_nothing_else_is_reachable(client, path):
    resp = await client.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "not_found"


async def test_the_portal_is_not_part_of_the_api_document(client):
    paths = (await (await client.get("/api/openapi.json")).json())["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/static")]


IMPORT = re.compile(r"import\s*\{([^}]*)\}\s*from\s*\"\./([\w.-]+)\"")
EXPORT = re.compile(r"^export (?:async function|function|const|class) (\w+)", re.M)


async def test_every_module_the_page_imports_is_served_and_exports_what_is_imported(client):
    """The script is split into modules the browser loads by name: none may be missing from what is served, and no
    module may import a name another does not export (a failure the browser would only show at run time)."""
    seen, queue = set(), ["portal.js"]
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200, name
        assert resp.content_type == "text/javascript"
        text = await resp.text()
        for names, target in IMPORT.findall(text):
            exported = set(EXPORT.findall((portal.STATIC / target).read_text(encoding="utf-8")))
            wanted = {n.strip() for n in names.split(",") if n.strip()}
            assert wanted <= exported, f"{name} imports {sorted(wanted - exported)} that {target} does not export"
            queue.append(target)
    assert seen == {p.name for p in portal.STATIC.glob("*.js")}  # and no module is left unused
