"""The composition root: ``create_app(settings)`` builds the whole service; nothing happens at import time."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp_session import get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from federation import extensions
from federation.accounts import service as accounts
from federation.accounts.errors import CsrfFailed, InvalidToken
from federation.errors import DomainError, Forbidden, Unauthenticated
from federation.services import Services
from federation.settings import Environment, Settings, load_settings
from federation.web import openapi
from federation.web.problems import problem_response
from federation.web.routing import (
    ANONYMOUS,
    OPERATIONS_KEY,
    PUBLIC,
    Operation,
    Principal,
    Routes,
    mount,
    operation_of,
)

log = logging.getLogger("twincity.http")

SERVICES = web.AppKey("services", Services)
SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", CollectorRegistry)
OPENAPI = web.AppKey("openapi", dict)
PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
VERSION = "0.1.0"
# a catalogue query of 10,000 characters must reach the handler (and get a clear answer), not die in the parser
SERVER_LIMITS = {"max_line_size": 65536, "max_field_size": 16384}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    return request.get(PRINCIPAL, ANONYMOUS)


def client_address(request: web.Request) -> str:
    """The caller's address; behind a trusted reverse proxy, the last hop that proxy saw."""
    remote = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if remote in trusted:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        # walk back past our own proxies; the first address they did not add is the client
        for address in reversed(forwarded):
            if address not in trusted:
                return address[:64]
    return remote


def _route_label(request: web.Request) -> str:
    op = operation_of(request)
    if op is not None:
        return op.path
    return "unmatched"


def _observe(registry: CollectorRegistry) -> Callable[..., Awaitable[web.StreamResponse]]:
    requests = Counter(
        "twincity_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "twincity_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
        request[REQUEST_ID] = rid
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = rid
            return response
        finally:
            elapsed = time.perf_counter() - start
            route = _route_label(request)
            requests.labels(request.method, route, str(status)).inc()
            latency.labels(request.method, route).observe(elapsed)
            # the route template, never the path: a path may carry an identifier
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "request_id": rid,
                    "actor": principal(request).actor,
                },
            )

    return observe


def _error_response(
    request: web.Request,
    status: int,
    code: str,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> web.Response:
    op = operation_of(request)
    if op is not None and op.render_error is not None:
        return op.render_error(status, code, title, detail, headers or {}, extra)
    return problem_response(status, code, title, detail, headers=headers, **extra)


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one translator from errors to application/problem+json (or to what a route family declares instead,
    such as FHIR's OperationOutcome); no stack trace ever reaches a client."""
    try:
        return await handler(request)
    except DomainError as e:
        headers = {}
        if e.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="twincity"'
        if "retry_after" in e.extra:
            headers["Retry-After"] = str(e.extra["retry_after"])
        return _error_response(request, e.status, e.code, e.title, e.detail, headers=headers, **e.extra)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 400: "bad_request"}.get(
            e.status, f"http_{e.status}"
        )
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "retry-after")}
        detail = e.text if e.text and not e.text.startswith(str(e.status)) else None
        if e.status == 413:
            detail = f"the request body is larger than {request.app[SETTINGS].max_request_bytes} bytes"
        return _error_response(request, e.status, code, e.reason, detail, headers=headers)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception:
        rid = request.get(REQUEST_ID)
        log.exception("unhandled error", extra={"request_id": rid, "route": _route_label(request)})
        return _error_response(
            request,
            500,
            "internal_error",
            "Internal error",
            "something went wrong on our side; quote the request id",
            request_id=rid,
        )


@web.middleware
async def authorise(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route declares who may call it; a route without a rule is refused (fail closed)."""
    op = operation_of(request)
    if op is None:
        if request.match_info.http_exception is not None:
            raise request.match_info.http_exception
        raise Forbidden("this route has no access rule")
    svc = request.app[SERVICES]
    who = ANONYMOUS
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("use 'Authorization: Bearer <token>'")
        who = await accounts.principal_from_bearer(svc, token.strip())
    elif request.cookies.get("twincity_session"):
        session = await get_session(request)
        account_id = session.get("account_id")
        if account_id:
            try:
                who = await accounts.account_principal(svc, account_id, via_session=True)
            except InvalidToken:
                session.invalidate()
                who = ANONYMOUS
            if who.via_session and request.method not in SAFE_METHODS:
                sent = request.headers.get("X-CSRF-Token", "")
                expected = str(session.get("csrf", ""))
                # compare bytes: compare_digest refuses non-ASCII str, and a header can carry anything
                if not sent or not secrets.compare_digest(sent.encode("utf-8", "replace"), expected.encode()):
                    raise CsrfFailed("send the X-CSRF-Token header your session was given")
    request[PRINCIPAL] = who
    if not op.access.allows(who):
        if not who.authenticated:
            raise Unauthenticated("log in or send a bearer token")
        raise Forbidden(f"this operation is for {op.access.describe()}")
    return await handler(request)


system = Routes("system")


@system.get("/healthz", access=PUBLIC, summary="Liveness", document=False)
async def healthz(request: web.Request) -> dict[str, str]:
    return {"status": "ok"}


@system.get("/readyz", access=PUBLIC, summary="Readiness: database, search and broker reachable", document=False)
async def readyz(request: web.Request) -> web.Response:
    from federation.web import readiness

    checks = await readiness.check(request.app[SERVICES])
    ok = all(c["ok"] for c in checks.values())
    from federation.web.routing import json_response

    return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


@system.get("/metrics", access=PUBLIC, summary="Prometheus metrics", document=False)
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@system.get("/api/openapi.json", access=PUBLIC, summary="The OpenAPI 3.1 document", document=False)
async def openapi_document(request: web.Request) -> dict[str, object]:
    return request.app[OPENAPI]


async def _serve_check(check: Callable[[Services], Awaitable[None]], svc: Services) -> None:
    try:
        await check(svc)
    except Exception:  # a cancellation at shutdown is no Exception: it passes
        log.exception("the start-up check %s failed", getattr(check, "__qualname__", check))


def create_app(
    settings: Settings | None = None, *, svc: Services | None = None, run_background: bool = True
) -> web.Application:
    """Build the application. ``run_background=False`` leaves jobs and the outbox to another process."""
    settings = settings or load_settings()
    registry = extensions.load(settings)
    svc = svc or extensions.build_services(settings, registry)
    if svc.search_engine is None:
        # the index is written where the relay and the jobs run (here, or a broker's workers): a process that
        # took an index's writer first and never wrote would keep it from them
        svc.index_writer = run_background and not settings.broker_url
    metrics_registry = CollectorRegistry()
    cookie_storage = EncryptedCookieStorage(
        settings.secret_bytes("session_key"),
        cookie_name="twincity_session",
        httponly=True,
        samesite="Lax",
        secure=settings.env is Environment.PRODUCTION,
        max_age=settings.session_ttl_s,
    )
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        middlewares=[_observe(metrics_registry), problems, session_middleware(cookie_storage), authorise],
    )
    app[SETTINGS] = settings
    app[SERVICES] = svc
    app[METRICS] = metrics_registry

    from federation.accounts.api import routes as account_routes
    from federation.audit.api import routes as audit_routes
    from federation.consent.api import routes as consent_routes
    from federation.identity.api import routes as identity_routes
    from federation.inbox.api import routes as inbox_routes
    from federation.jobs.api import routes as job_routes
    from federation.members.api import routes as member_routes
    from federation.web import portal

    portal.load(app)
    for routes in (
        system,
        portal.routes,
        account_routes,
        member_routes,
        identity_routes,
        consent_routes,
        inbox_routes,
        audit_routes,
        job_routes,
        *registry.routes,
    ):
        mount(app, routes)
    ops: list[Operation] = app[OPERATIONS_KEY]
    app[OPENAPI] = openapi.build(ops, title="twincity federation API", version=VERSION, server_url=settings.public_url)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        from search import analysis

        analysis.warm()  # before the first request: loading the tables later would stall the loop under it
        runner = None
        if settings.broker_url:
            from federation.jobs.celery_app import CeleryDoorbell, make_celery

            svc.db.doorbell = CeleryDoorbell(make_celery(settings))
        elif run_background:
            from federation.jobs.runner import InProcessRunner

            runner = InProcessRunner(svc)
            svc.db.doorbell = runner
            await runner.start()
        checks = [asyncio.create_task(_serve_check(check, svc)) for check in svc.serving]
        yield
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)
        if runner is not None:
            await runner.stop()
        await svc.close()

    app.cleanup_ctx.append(lifecycle)
    return app
