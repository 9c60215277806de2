"""The residents' portal: one page and its script and style, served from the package with the API they call.

The page is static; everything it shows comes from the public API (``static/portal.js``). Files are read once,
when the application is built, and served with a content hash as their ETag, so a browser revalidates them
cheaply and never keeps an old script after an upgrade. The page may load nothing but its own files and talk to
nothing but this service (Content-Security-Policy).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from aiohttp import web

from federation.web.routing import PUBLIC, Routes

STATIC = Path(__file__).parent / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

routes = Routes("portal")


@dataclasses.dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _assets() -> dict[str, Asset]:
    out = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            out[path.name] = Asset(body, TYPES[path.suffix], f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return out


ASSETS = web.AppKey("portal_assets", dict)


def load(app: web.Application) -> None:
    app[ASSETS] = _assets()


def _serve(request: web.Request, name: str) -> web.Response:
    asset = request.app[ASSETS].get(name)
    if asset is None:
        raise web.HTTPNotFound(text=f"no file {name!r} in the portal")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", **SECURITY}
    if asset.etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)


@routes.get("/", access=PUBLIC, summary="The residents' portal", document=False)
async def index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


@routes.get("/static/{name}", access=PUBLIC, summary="The portal's script and style", document=False)
async def static(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["name"])
