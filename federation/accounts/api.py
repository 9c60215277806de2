"""Logging in: access tokens for API clients, session cookies for the portal, and who am I."""

from __future__ import annotations

import secrets
from typing import Literal

from aiohttp import web
from aiohttp_session import get_session, new_session
from pydantic import Field

from federation.accounts import service
from federation.accounts.errors import AccountNotFound
from federation.app import client_address, principal, services
from federation.audit.service import Record
from federation.identity.service import get_person
from federation.web.routing import ANY_API_KEY, AUTHENTICATED, PUBLIC, Routes, json_response, staff
from federation.web.schema import Input, Output

routes = Routes("auth")


class Login(Input):
    username: str = Field(min_length=1, max_length=200, description="ROLE@CODE for staff; the ID number for residents")
    password: str = Field(min_length=1, max_length=1000)


class TokenResponse(Output):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class SessionResponse(Output):
    csrf_token: str
    expires_in: int


class Me(Output):
    kind: str
    name: str
    institution: str | None = None
    roles: list[str] = []
    scopes: list[str] = []
    person_id: str | None = None
    csrf_token: str | None = None


class NewResident(Input):
    person_id: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1000)


class AccountOut(Output):
    id: str
    kind: str
    username: str | None
    display_name: str
    institution_code: str | None
    roles: list[str]


class NewStaff(Input):
    username: str = Field(min_length=3, max_length=200)
    password: str = Field(min_length=8, max_length=1000)
    institution: str = Field(min_length=1, max_length=32)
    roles: list[Literal["librarian", "doctor", "admin"]] = Field(min_length=1)
    display_name: str | None = Field(default=None, max_length=200)


@routes.post(
    "/api/v1/auth/token",
    access=PUBLIC,
    body=Login,
    response=TokenResponse,
    summary="Exchange a username and password for a bearer access token",
    errors=(429,),
)
async def create_token(request: web.Request, body: Login) -> TokenResponse:
    svc = services(request)
    account = await service.login(svc, body.username, body.password, client_address(request))
    grant = service.issue_token(svc, account)
    return TokenResponse(access_token=grant.access_token, expires_in=grant.expires_in)


@routes.post(
    "/api/v1/auth/session",
    access=PUBLIC,
    body=Login,
    response=SessionResponse,
    summary="Log in to the portal: sets the session cookie and returns its CSRF token",
    errors=(429,),
)
async def create_session(request: web.Request, body: Login) -> SessionResponse:
    svc = services(request)
    account = await service.login(svc, body.username, body.password, client_address(request))
    session = await new_session(request)
    session["account_id"] = account.id
    session["csrf"] = secrets.token_urlsafe(24)
    return SessionResponse(csrf_token=session["csrf"], expires_in=svc.settings.session_ttl_s)


class SessionState(Output):
    authenticated: bool
    me: Me | None = None


@routes.get(
    "/api/v1/auth/session",
    access=PUBLIC,
    response=SessionState,
    summary="Whether the caller is logged in, and as whom: the portal's first question, answered 200 for anyone",
)
async def session_state(request: web.Request) -> web.Response:
    who = principal(request)
    state = SessionState(authenticated=who.authenticated, me=await _me(request) if who.authenticated else None)
    response = json_response(state)
    response.headers["Cache-Control"] = "no-store"  # it carries the session's CSRF token
    return response


@routes.delete("/api/v1/auth/session", access=AUTHENTICATED, summary="Log out of the portal", status=204)
async def delete_session(request: web.Request) -> None:
    session = await get_session(request)
    session.invalidate()


@routes.get("/api/v1/me", access=AUTHENTICATED | ANY_API_KEY, response=Me, summary="Who is calling")
async def me(request: web.Request) -> Me:
    return await _me(request)


async def _me(request: web.Request) -> Me:
    who = principal(request)
    csrf = None
    if who.via_session:
        csrf = (await get_session(request)).get("csrf")
    return Me(
        kind=who.kind,
        name=who.name,
        institution=who.institution,
        roles=sorted(who.roles),
        scopes=sorted(who.scopes),
        person_id=who.person_id,
        csrf_token=csrf,
    )


@routes.post(
    "/api/v1/accounts/staff",
    access=staff("admin"),
    body=NewStaff,
    response=AccountOut,
    status=201,
    summary="Create a staff account bound to one institution",
    errors=(409,),
)
async def create_staff(request: web.Request, body: NewStaff) -> AccountOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        account = await service.create_staff(
            uow, body.username, body.password, body.institution, body.roles, body.display_name
        )
        await svc.audit(
            uow,
            Record(
                action="accounts.create_staff",
                actor=who.actor,
                details={"username": body.username, "roles": body.roles},
            ),
        )
        await uow.commit()
    return AccountOut.model_validate(account)


@routes.post(
    "/api/v1/accounts/residents",
    access=staff("admin", "librarian"),
    body=NewResident,
    response=AccountOut,
    status=201,
    summary="Open a portal account for a person (at a desk, after checking their card)",
    errors=(404, 409),
)
async def create_resident(request: web.Request, body: NewResident) -> AccountOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        person = await get_person(uow.session, body.person_id)
        account = await service.create_resident(uow, person.id, body.password, person.name)
        await svc.audit(
            uow,
            Record(
                action="accounts.create_resident",
                actor=who.actor,
                subject_person_id=person.id,
                actor_institution=who.institution,
            ),
        )
        await uow.commit()
    if account is None:
        raise AccountNotFound("no account")
    return AccountOut.model_validate(account)
