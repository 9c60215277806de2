"""Routes declared with who may call them and what they take, so access, validation and OpenAPI share one source.

Every handler is registered through :class:`Routes`. The declaration carries the
access rule (enforced by the auth middleware, walked by the route x role test),
the request body and query models (parsed here, at the edge) and the response
model (used for the OpenAPI document).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, get_args, get_origin

from aiohttp import web
from pydantic import BaseModel, ValidationError

from federation.errors import DomainError

UNIONS = (typing.Union, types.UnionType)

PrincipalKind = Literal["anonymous", "staff", "resident", "apikey"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: a staff account, a resident, a member system's API key, or nobody."""

    kind: PrincipalKind = "anonymous"
    id: str | None = None
    name: str = "anonymous"
    person_id: str | None = None
    institution: str | None = None
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    via_session: bool = False
    # the kind of member (hospital, library, system, ...) an API key belongs to, read with the key; None when the
    # member is unknown or inactive, and for every other caller
    institution_kind: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.kind == "staff" and "admin" in self.roles

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        if self.kind == "apikey":
            return f"apikey:{self.institution}:{self.id}"
        return f"{self.kind}:{self.name}"


ANONYMOUS = Principal()

ROLES = ("librarian", "doctor", "admin")


@dataclasses.dataclass(frozen=True)
class Access:
    """Who may call a route. Rules combine with ``|``."""

    public: bool = False
    roles: frozenset[str] = frozenset()
    resident: bool = False
    scopes: frozenset[str] = frozenset()

    def allows(self, p: Principal) -> bool:
        if self.public:
            return True
        if p.kind == "staff":
            return bool(self.roles & p.roles)
        if p.kind == "resident":
            return self.resident
        if p.kind == "apikey":
            return "*" in self.scopes or bool(self.scopes & p.scopes)
        return False

    def __or__(self, other: Access) -> Access:
        return Access(
            public=self.public or other.public,
            roles=self.roles | other.roles,
            resident=self.resident or other.resident,
            scopes=self.scopes | other.scopes,
        )

    def describe(self) -> str:
        if self.public:
            return "anyone"
        parts = [f"staff ({', '.join(sorted(self.roles))})"] if self.roles else []
        if self.resident:
            parts.append("residents (own data)")
        if "*" in self.scopes:
            parts.append("any API key")
        elif self.scopes:
            parts.append(f"API keys with scope {' or '.join(sorted(self.scopes))}")
        return "; ".join(parts)


PUBLIC = Access(public=True)
RESIDENT = Access(resident=True)
ANY_STAFF = Access(roles=frozenset(ROLES))
AUTHENTICATED = ANY_STAFF | RESIDENT
ANY_API_KEY = Access(scopes=frozenset({"*"}))


def staff(*roles: str) -> Access:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")
    return Access(roles=frozenset(roles))


def scopes(*names: str) -> Access:
    return Access(scopes=frozenset(names))


Handler = Callable[..., Awaitable[Any]]
# (status, code, title, detail, headers, extra) -> the error response, in place of problem+json
ErrorRenderer = Callable[[int, str, str, "str | None", "dict[str, str]", "dict[str, Any]"], web.Response]


@dataclasses.dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    access: Access
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    document: bool = True
    errors: tuple[int, ...] = ()
    # renders this operation's errors when they are not problem+json (the FHIR endpoint answers OperationOutcome)
    render_error: ErrorRenderer | None = None


class BodyError(DomainError):
    code = "malformed_body"
    status = 400
    title = "Malformed request body"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class RequestValidationError(DomainError):
    code = "validation_failed"
    status = 422
    title = "The request did not validate"


def validation_problem(exc: ValidationError, where: str) -> RequestValidationError:
    # Never echo the input back: it may carry an ID number.
    errors = [
        {"in": where, "loc": ".".join(str(x) for x in e["loc"]) or where, "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return RequestValidationError(f"{len(errors)} problem(s) in the {where}", errors=errors)


async def parse_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    ctype = request.content_type
    if ctype not in ("application/json", "application/problem+json") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as application/json, not {ctype or 'nothing'}")
    raw = await request.read()
    if not raw:
        raise BodyError("the request body is empty")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BodyError(
            f"the body is not valid JSON: {e.__class__.__name__} at position {getattr(e, 'pos', 0)}"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_problem(e, "body") from None


def takes_many(annotation: Any) -> bool:
    """Whether a query parameter is a list (``list[str]``, ``list[str] | None``): it may then be repeated."""
    if get_origin(annotation) is list:
        return True
    return any(takes_many(arg) for arg in get_args(annotation)) if get_origin(annotation) in UNIONS else False


def parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        field = model.model_fields.get(key)
        data[key] = values if field is not None and takes_many(field.annotation) else values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_problem(e, "query") from None


def json_response(data: Any, status: int = 200) -> web.Response:
    if isinstance(data, BaseModel):
        text = data.model_dump_json(by_alias=True)
    else:
        text = json.dumps(_plain(data), ensure_ascii=False, default=str)
    return web.Response(status=status, text=text, content_type="application/json")


def _plain(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json", by_alias=True)
    if isinstance(data, list | tuple):
        return [_plain(x) for x in data]
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    return data


class Routes:
    """A context's routes; ``app_routes.mount(app)`` adds them to the application."""

    def __init__(self, tag: str, *, render_error: ErrorRenderer | None = None) -> None:
        self.tag = tag
        self.render_error = render_error
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        access: Access,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        document: bool = True,
        errors: Iterable[int] = (),
    ) -> Callable[[Handler], Handler]:
        def decorate(fn: Handler) -> Handler:
            async def handler(request: web.Request) -> web.StreamResponse:
                kwargs: dict[str, Any] = {}
                if query is not None:
                    kwargs["query"] = parse_query(request, query)
                elif request.query and document:
                    unknown = ", ".join(sorted(request.query))
                    raise RequestValidationError(f"this operation takes no query parameters (got {unknown})")
                if body is not None:
                    kwargs["body"] = await parse_body(request, body)
                result = await fn(request, **kwargs)
                if isinstance(result, web.StreamResponse):
                    return result
                if result is None:
                    return web.Response(status=204)
                return json_response(result, status)

            handler.__name__ = fn.__name__
            handler.__doc__ = fn.__doc__
            op = Operation(
                method=method,
                path=path,
                handler=handler,
                access=access,
                summary=summary,
                tag=self.tag,
                body=body,
                query=query,
                response=response,
                status=status,
                document=document,
                errors=tuple(errors),
                render_error=self.render_error,
            )
            handler.operation = op  # type: ignore[attr-defined]
            self.operations.append(op)
            return fn

        return decorate

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


OPERATIONS_KEY = web.AppKey("operations", list)


def mount(app: web.Application, routes: Routes) -> None:
    ops: list[Operation] = app.setdefault(OPERATIONS_KEY, [])  # type: ignore[arg-type]
    for op in routes.operations:
        app.router.add_route(op.method, op.path, op.handler)
        ops.append(op)


def operation_of(request: web.Request) -> Operation | None:
    return getattr(request.match_info.handler, "operation", None)
