"""What every sandbox server shares: fault switches settable at run time, and starting one on a free port.

A sandbox is a small aiohttp app serving a partner's API as its ``README.md`` documents it. ``make_app`` adds the
fault switches every partner can suffer, applied by one middleware to every route outside ``/_sandbox``:

* ``latency_s`` — answer late (longer than the client's timeout: a timeout);
* ``status`` (+ ``retry_after``) — answer this HTTP status instead (503, 502, 429, 500, ...);
* ``malformed`` — ``html`` (an error page with 200), ``truncated`` (half the JSON), ``wrong_types`` (every value
  of the right name but the wrong type), ``huge`` (a 100 MB body, streamed);
* ``times`` — apply the switches above to the next N requests only, then answer normally again;
* ``duplicates``, ``out_of_order``, ``gap`` — for feeds: the app applies them with :func:`shape_feed`.

``POST /_sandbox/faults`` sets them (the body replaces the current switches), ``DELETE /_sandbox/faults`` clears
them, ``GET /_sandbox/faults`` shows them; ``GET /_sandbox/requests`` counts the requests served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

T = TypeVar("T")
HUGE_BYTES = 100 * 2**20

# system name -> factory of its sandbox app, and the port it has in the demo world; filled through
# ``register_sandbox`` by ``connectors.register`` (see connectors/README.md)
SANDBOXES: dict[str, Callable[[], web.Application]] = {}
DEMO_PORTS: dict[str, int] = {}


def register_sandbox(system: str, factory: Callable[[], web.Application], demo_port: int | None = None) -> None:
    """Make ``twincity sandbox SYSTEM`` serve ``factory()``; with a ``demo_port``, ``twincity sandbox all`` serves it
    there (where the demo world's connector for it points)."""
    SANDBOXES[system] = factory
    if demo_port is not None:
        DEMO_PORTS[system] = demo_port


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0, le=600)
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: int | None = Field(default=None, ge=0, le=86400)
    malformed: Literal["html", "truncated", "wrong_types", "huge"] | None = None
    times: int | None = Field(default=None, ge=1, description="fault only the next N requests")
    duplicates: bool = False
    out_of_order: bool = False
    gap: bool = False


FAULTS = web.AppKey("sandbox_faults", dict)  # {"faults": Faults, "served": int, "faulted": int}


def faults_of(app: web.Application) -> Faults:
    faults: Faults = app[FAULTS]["faults"]
    return faults


def _spend(app: web.Application) -> Faults | None:
    """The switches for this request, counting down ``times``; None when nothing is switched on for it."""
    state = app[FAULTS]
    f: Faults = state["faults"]
    if not (f.latency_s or f.status or f.malformed):
        return None
    if f.times is not None:
        if f.times <= 0:
            return None
        state["faults"] = f.model_copy(update={"times": f.times - 1})
    state["faulted"] += 1
    return f


def _wrong(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wrong(v) for k, v in value.items()}
    if isinstance(value, list):
        return "not-a-list"
    if isinstance(value, bool | int | float):
        return "not-a-number"
    if isinstance(value, str):
        return 12345
    return ["unexpected"]


async def _huge(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    chunk = b"[" + b"0," * (2**19 - 1)
    sent = 0
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while sent < HUGE_BYTES:
            await resp.write(chunk)
            sent += len(chunk)
        await resp.write(b"0]")
        await resp.write_eof()
    return resp


@web.middleware
async def _fault_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    if request.path.startswith("/_sandbox"):
        return await handler(request)  # type: ignore[no-any-return]
    request.app[FAULTS]["served"] += 1
    f = _spend(request.app)
    if f is None:
        return await handler(request)  # type: ignore[no-any-return]
    if f.latency_s:
        await asyncio.sleep(f.latency_s)
    if f.status:
        headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None else {}
        return web.json_response({"error": "sandbox_fault", "status": f.status}, status=f.status, headers=headers)
    if f.malformed == "html":
        return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
    if f.malformed == "huge":
        return await _huge(request)
    resp: web.Response = await handler(request)
    if f.malformed and resp.content_type == "application/json" and resp.body is not None:
        raw = bytes(resp.body)  # type: ignore[arg-type]
        if f.malformed == "truncated":
            return web.Response(body=raw[: max(1, len(raw) // 2)], content_type="application/json")
        if f.malformed == "wrong_types":
            return web.json_response(_wrong(json.loads(raw)), status=resp.status)
    return resp


async def _set_faults(request: web.Request) -> web.Response:
    try:
        faults = Faults.model_validate(await request.json())
    except (ValidationError, ValueError) as e:
        return web.json_response({"error": "invalid_faults", "detail": str(e)}, status=422)
    request.app[FAULTS]["faults"] = faults
    return web.json_response(faults.model_dump())


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(faults_of(request.app).model_dump())


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[FAULTS]["faults"] = Faults()
    return web.json_response(Faults().model_dump())


async def _requests(request: web.Request) -> web.Response:
    state = request.app[FAULTS]
    return web.json_response({"served": state["served"], "faulted": state["faulted"]})


def make_app() -> web.Application:
    """A sandbox app with the fault switches; the system's module adds its routes."""
    app = web.Application(middlewares=[_fault_middleware])
    app[FAULTS] = {"faults": Faults(), "served": 0, "faulted": 0}
    app.router.add_post("/_sandbox/faults", _set_faults)
    app.router.add_get("/_sandbox/faults", _get_faults)
    app.router.add_delete("/_sandbox/faults", _clear_faults)
    app.router.add_get("/_sandbox/requests", _requests)
    return app


def shape_feed(items: Sequence[T], faults: Faults, *, first_expected: bool = True) -> list[T]:
    """A feed page as a broken partner would send it: ``gap`` leaves out its first item (when it is the one the
    client expects next), ``out_of_order`` reverses it, ``duplicates`` sends every item twice."""
    out = list(items)
    if faults.gap and first_expected and len(out) > 1:
        out = out[1:]
    if faults.out_of_order:
        out.reverse()
    if faults.duplicates:
        out = [x for item in out for x in (item, item)]
    return out


def check_api_key(request: web.Request, expected: str) -> web.Response | None:
    """The partner's auth: the ``X-Api-Key`` header; a 401 answer when it is missing or wrong."""
    if request.headers.get("X-Api-Key") != expected:
        return web.json_response({"error": "unauthorized"}, status=401)
    return None


@contextlib.asynccontextmanager
async def started(app: web.Application, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` over real HTTP (a free port by default) and yield its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # noqa: SLF001 - aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def run(system: str, *, host: str, port: int) -> None:
    """Run one system's sandbox in the foreground (``twincity sandbox SYSTEM --port N``)."""
    factory = SANDBOXES.get(system)
    if factory is None:
        raise KeyError(system)
    web.run_app(factory(), host=host, port=port, print=None)


async def _serve_all(host: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for system, port in sorted(DEMO_PORTS.items()):
            await stack.enter_async_context(started(SANDBOXES[system](), host=host, port=port))
        await asyncio.Event().wait()  # until interrupted


def run_all(*, host: str) -> None:
    """Every sandbox with a demo port, each on it (``twincity sandbox all``): what the demo world's connectors call."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_all(host))
