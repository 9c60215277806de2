"""Logging in over HTTP: bearer tokens, portal sessions with their CSRF token, and member systems' API keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time

import jwt
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import delete, select, text

from federation import demo as demo_world
from federation.accounts import service as accounts
from federation.accounts.errors import InvalidToken, UnknownScope
from federation.accounts.models import Account, ApiKey, LoginThrottle
from federation.audit.models import AuditEntry
from federation.consent.models import Consent
from federation.services import Services
from tests.conftest import token_for

PASSWORD = demo_world.PASSWORD
ZHANG = next(r for r in demo_world.RESIDENTS if r.name == "张伟")  # 500103198503122317
WU = next(r for r in demo_world.RESIDENTS if r.name == "吴强")  # 51100219830228955X


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def problem(resp, status: int, code: str) -> dict:  # noqa: ANN001
    body = await resp.json(content_type=None)
    assert resp.status == status, body
    assert resp.content_type == "application/problem+json"
    assert body["code"] == code
    return body


async def me(client: TestClient, headers: dict[str, str] | None = None):  # noqa: ANN201
    return await client.get("/api/v1/me", headers=headers or {})


async def account_named(svc: Services, username: str) -> Account:
    async with svc.db.reader() as s:
        return (await s.execute(select(Account).where(Account.username == username))).scalar_one()


async def audit_actions(svc: Services) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())


# --- bearer tokens ---------------------------------------------------------------------------------------------


async def test_token_response_shape(client: TestClient, demo: Services) -> None:
    resp = await client.post("/api/v1/auth/token", json={"username": "doctor@SCH1", "password": PASSWORD})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == demo.settings.access_token_ttl_s
    claims = jwt.decode(body["access_token"], demo.settings.secret_bytes("token_key"), algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == demo.settings.access_token_ttl_s
    who = await (await me(client, bearer(body["access_token"]))).json()
    assert (who["kind"], who["name"], who["institution"], who["roles"]) == ("staff", "doctor@SCH1", "SCH1", ["doctor"])
    # the login is in the audit trail
    logins = [e for e in await audit_actions(demo) if e.action == "auth.login"]
    assert [e.actor for e in logins] == ["staff:doctor@SCH1"]


async def test_resident_logs_in_with_any_spelling_of_the_id_number(client: TestClient, demo: Services) -> None:
    spellings = {
        ZHANG.name: [
            ZHANG.id_number,
            ZHANG.id_number[:6] + ZHANG.id_number[8:17],  # the old 15-digit form of the same number
            f" {ZHANG.id_number[:6]} {ZHANG.id_number[6:14]} {ZHANG.id_number[14:]} ",
        ],
        WU.name: [WU.id_number, WU.id_number.lower()],  # ...955X and ...955x
    }
    for name, usernames in spellings.items():
        for username in usernames:
            who = await (await me(client, await token_for(client, username))).json()
            assert (who["kind"], who["name"], who["roles"]) == ("resident", name, []), username
            assert who["person_id"]


async def test_bad_credentials_look_alike(client: TestClient, demo: Services) -> None:
    attempts = [
        ("doctor@SCH1", "not-the-password"),
        ("nobody@NOWHERE", PASSWORD),
        ("DOCTOR@sch1", PASSWORD),  # staff usernames are exact
        (ZHANG.id_number[:17] + "0", PASSWORD),  # wrong check digit
        ("11010519491231002X", PASSWORD),  # a valid number nobody here holds
    ]
    details = set()
    for username, password in attempts:
        resp = await client.post("/api/v1/auth/token", json={"username": username, "password": password})
        body = await problem(resp, 401, "auth.bad_credentials")
        assert "Bearer" in resp.headers["WWW-Authenticate"]
        details.add(body["detail"])
        async with demo.db.uow() as uow:  # forget the failure: the throttle has its own tests
            await uow.session.execute(delete(LoginThrottle))
            await uow.commit()
    assert len(details) == 1  # nothing tells an unknown account from a wrong password


def forged(svc: Services, account_id: str, *, exp: dt.datetime, key: bytes | None = None, alg: str = "HS256") -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {"sub": account_id, "kind": "staff", "iat": now - dt.timedelta(hours=2), "exp": exp}
    return jwt.encode(claims, key or svc.settings.secret_bytes("token_key"), algorithm=alg)


async def test_expired_token_is_refused(client: TestClient, demo: Services) -> None:
    account = await account_named(demo, "librarian@CQL")
    token = forged(demo, account.id, exp=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    resp = await me(client, bearer(token))
    body = await problem(resp, 401, "auth.invalid_token")
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="twincity"'
    assert "expired" in body["detail"]
    # the same claims, still in date, are accepted: the refusal was the expiry
    fresh = forged(demo, account.id, exp=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    assert (await me(client, bearer(fresh))).status == 200


async def test_a_token_seen_before_still_expires(client: TestClient, demo: Services, monkeypatch) -> None:
    """A token's signature is checked once per process; its expiry is checked at every request."""
    account = await account_named(demo, "librarian@CQL")
    token = forged(demo, account.id, exp=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2))
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert (await me(client, bearer(token))).status == 200
    decoded = []
    real = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **kw: decoded.append(1) or real(*a, **kw))
    assert (await me(client, bearer(token))).status == 200
    assert decoded == []  # the second request did not verify the signature again
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.1)
    body = await problem(await me(client, bearer(token)), 401, "auth.invalid_token")
    assert "expired" in body["detail"]


async def test_garbage_token_is_refused(client: TestClient, svc: Services) -> None:
    for authorization in [
        "Bearer garbage",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "Bearer " + "a" * 5000,
        "Basic bGlicmFyaWFuQENRTDpkZW1vLXBhc3N3b3Jk",
        "Bearer ",
        "Bearer tck_nope",
        "Bearer tck_000000000000_notthesecret",
    ]:
        resp = await me(client, {"Authorization": authorization})
        await problem(resp, 401, "auth.invalid_token")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), authorization


async def test_token_signed_with_another_key_or_none_is_refused(client: TestClient, demo: Services) -> None:
    account = await account_named(demo, "admin@federation")
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    other = forged(demo, account.id, exp=exp, key=b"k" * 32)
    await problem(await me(client, bearer(other)), 401, "auth.invalid_token")
    unsigned = jwt.encode({"sub": account.id, "exp": exp}, key=None, algorithm="none")
    await problem(await me(client, bearer(unsigned)), 401, "auth.invalid_token")


async def test_token_of_an_unknown_account_is_refused(client: TestClient, svc: Services) -> None:
    token = forged(svc, "0" * 32, exp=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5))
    await problem(await me(client, bearer(token)), 401, "auth.invalid_token")


@pytest.mark.parametrize("token", ["tck_ab_\u00e9t\u00e9", "eyJ\udcff.x.y", "a\x00b", "tck_" + "\u4e2d" * 10])
async def test_token_that_is_not_printable_ascii_is_refused_not_crashed(svc: Services, token: str) -> None:
    with pytest.raises(InvalidToken):
        await accounts.principal_from_bearer(svc, token)


async def test_disabled_account_token_stops_working(client: TestClient, demo: Services) -> None:
    headers = await token_for(client, "librarian@SCL")
    assert (await me(client, headers)).status == 200
    account = await account_named(demo, "librarian@SCL")
    async with demo.db.uow() as uow:
        await accounts.set_active(uow, demo, account.id, False, actor="staff:admin@federation")
        await uow.commit()
    await problem(await me(client, headers), 401, "auth.invalid_token")
    # enabled again, the same token works again (it had not expired)
    async with demo.db.uow() as uow:
        await accounts.set_active(uow, demo, account.id, True, actor="staff:admin@federation")
        await uow.commit()
    assert (await me(client, headers)).status == 200
    actions = [e.action for e in await audit_actions(demo)]
    assert actions.count("accounts.disable") == 1 and actions.count("accounts.enable") == 1


async def test_set_active_on_unknown_account_is_not_found(demo: Services) -> None:
    from federation.accounts.errors import AccountNotFound

    async with demo.db.uow() as uow:
        with pytest.raises(AccountNotFound):
            await accounts.set_active(uow, demo, "0" * 32, False, actor="test")


# --- portal sessions and CSRF ----------------------------------------------------------------------------------


async def session_login(client: TestClient, username: str) -> str:
    resp = await client.post("/api/v1/auth/session", json={"username": username, "password": PASSWORD})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"csrf_token", "expires_in"}
    cookie = resp.cookies["twincity_session"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    return body["csrf_token"]


def grant_body() -> dict:
    return {"purpose": "result_sharing", "members": ["SCH1"]}


async def test_session_login_me_and_csrf(client: TestClient, demo: Services) -> None:
    csrf = await session_login(client, ZHANG.id_number)
    assert len(csrf) >= 24

    resp = await me(client)
    assert resp.status == 200
    who = await resp.json()
    assert (who["kind"], who["name"], who["csrf_token"]) == ("resident", ZHANG.name, csrf)

    # an unsafe request carried by the cookie alone is refused
    resp = await client.post("/api/v1/me/consents", json=grant_body())
    await problem(resp, 403, "auth.csrf_failed")
    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers={"X-CSRF-Token": "not-it"})
    await problem(resp, 403, "auth.csrf_failed")
    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers={"X-CSRF-Token": csrf[:-1]})
    await problem(resp, 403, "auth.csrf_failed")
    async with demo.db.reader() as s:
        assert not [c for c in (await s.execute(select(Consent))).scalars() if "SCH1" in c.members]

    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers={"X-CSRF-Token": csrf})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["members"] == ["SCH1"]


async def test_logout_ends_the_session(client: TestClient, demo: Services) -> None:
    csrf = await session_login(client, "librarian@CQL")
    assert (await me(client)).status == 200
    # logging out is an unsafe request too
    await problem(await client.delete("/api/v1/auth/session"), 403, "auth.csrf_failed")
    resp = await client.delete("/api/v1/auth/session", headers={"X-CSRF-Token": csrf})
    assert resp.status == 204
    await problem(await me(client), 401, "unauthenticated")


async def test_the_session_state_answers_anyone(client: TestClient, demo: Services) -> None:
    """The portal asks who is logged in on every visit: anonymous is an answer (200), not a refusal to log."""
    resp = await client.get("/api/v1/auth/session")
    assert (resp.status, await resp.json()) == (200, {"authenticated": False, "me": None})

    csrf = await session_login(client, ZHANG.id_number)
    resp = await client.get("/api/v1/auth/session")
    body = await resp.json()
    assert (resp.status, body["authenticated"]) == (200, True)
    assert body["me"] == await (await me(client)).json()
    assert (body["me"]["kind"], body["me"]["csrf_token"]) == ("resident", csrf)
    assert resp.headers["Cache-Control"] == "no-store"

    await client.delete("/api/v1/auth/session", headers={"X-CSRF-Token": csrf})
    resp = await client.get("/api/v1/auth/session")
    assert (resp.status, await resp.json()) == (200, {"authenticated": False, "me": None})


async def test_new_session_gets_a_new_csrf_token(client: TestClient, demo: Services) -> None:
    first = await session_login(client, "librarian@CQL")
    client.session.cookie_jar.clear()
    second = await session_login(client, "librarian@CQL")
    assert first != second
    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers={"X-CSRF-Token": first})
    await problem(resp, 403, "auth.csrf_failed")


async def test_bearer_requests_need_no_csrf_token(client: TestClient, demo: Services) -> None:
    headers = await token_for(client, ZHANG.id_number)
    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers=headers)
    assert resp.status == 201, await resp.text()
    who = await (await me(client, headers)).json()
    assert who["csrf_token"] is None


async def test_session_of_disabled_account_ends(client: TestClient, demo: Services) -> None:
    await session_login(client, "doctor@CQH1")
    account = await account_named(demo, "doctor@CQH1")
    async with demo.db.uow() as uow:
        await accounts.set_active(uow, demo, account.id, False, actor="test")
        await uow.commit()
    await problem(await me(client), 401, "unauthenticated")


async def test_session_login_with_wrong_password_sets_no_cookie(client: TestClient, demo: Services) -> None:
    resp = await client.post("/api/v1/auth/session", json={"username": "librarian@CQL", "password": "nope"})
    await problem(resp, 401, "auth.bad_credentials")
    assert "twincity_session" not in resp.cookies
    await problem(await me(client), 401, "unauthenticated")


# --- API keys for member systems -------------------------------------------------------------------------------


async def new_key(svc: Services, member: str = "CQH1", scopes: list[str] | None = None) -> tuple[ApiKey, str]:
    async with svc.db.uow() as uow:
        key, secret = await accounts.create_api_key(
            uow, svc, member, scopes or ["identity.read"], name="his", actor="staff:admin@federation"
        )
        await uow.commit()
    return key, secret


def lookup_body(number: str) -> dict:
    return {"identifier": {"type": "id_number", "value": number}, "purpose": "treatment"}


async def test_api_key_reads_me_and_looks_up(client: TestClient, demo: Services) -> None:
    key, secret = await new_key(demo)
    assert secret.startswith("tck_")
    who = await (await me(client, bearer(secret))).json()
    assert who == {
        "kind": "apikey",
        "name": "his",
        "institution": "CQH1",
        "roles": [],
        "scopes": ["identity.read"],
        "person_id": None,
        "csrf_token": None,
    }
    resp = await client.post("/api/v1/identity/lookups", json=lookup_body(ZHANG.id_number), headers=bearer(secret))
    assert resp.status == 200, await resp.text()
    person = await resp.json()
    assert person["name"] == ZHANG.name
    lookups = [e for e in await audit_actions(demo) if e.action == "identity.lookup"]
    assert [(e.actor, e.actor_institution, e.subject_person_id) for e in lookups] == [
        (f"apikey:CQH1:{key.id}", "CQH1", person["id"])
    ]


async def test_api_key_refused_outside_its_scope(client: TestClient, demo: Services) -> None:
    _, secret = await new_key(demo)
    for method, path, body in [
        ("POST", "/api/v1/identity/persons", {"name": "测试"}),
        ("POST", "/api/v1/consents/checks", {"person_id": "x" * 32, "purpose": "result_sharing"}),
        ("POST", "/api/v1/identity/credential-status", {}),
        ("GET", "/api/v1/audit/entries", None),
        ("GET", "/api/v1/me/consents", None),
        ("POST", "/api/v1/accounts/staff", {}),
    ]:
        resp = await client.request(method, path, json=body, headers=bearer(secret))
        await problem(resp, 403, "forbidden")


async def test_api_key_with_more_scopes(client: TestClient, demo: Services) -> None:
    _, secret = await new_key(demo, "SCH1", ["consent.check", "identity.read"])
    resp = await client.post(
        "/api/v1/consents/checks", json={"person_id": "x" * 32, "purpose": "result_sharing"}, headers=bearer(secret)
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["granted"] is False


async def test_revoked_key_is_refused_at_once(client: TestClient, demo: Services) -> None:
    key, secret = await new_key(demo)
    assert (await me(client, bearer(secret))).status == 200
    async with demo.db.uow() as uow:
        await accounts.revoke_api_key(uow, demo, key.prefix, actor="staff:admin@federation")
        await uow.commit()
    resp = await me(client, bearer(secret))
    await problem(resp, 401, "auth.invalid_token")
    resp = await client.post("/api/v1/identity/lookups", json=lookup_body(ZHANG.id_number), headers=bearer(secret))
    await problem(resp, 401, "auth.invalid_token")
    # revoking again changes nothing and writes nothing
    async with demo.db.uow() as uow:
        again = await accounts.revoke_api_key(uow, demo, key.prefix, actor="test")
        await uow.commit()
    assert again.revoked_at is not None
    assert [e.details for e in await audit_actions(demo) if e.action == "apikey.revoke"] == [{"prefix": key.prefix}]


async def test_revoking_an_unknown_key_is_not_found(demo: Services) -> None:
    from federation.accounts.errors import ApiKeyNotFound

    async with demo.db.uow() as uow:
        with pytest.raises(ApiKeyNotFound):
            await accounts.revoke_api_key(uow, demo, "000000000000", actor="test")


async def test_tampered_key_is_refused(client: TestClient, demo: Services) -> None:
    _, secret = await new_key(demo)
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    await problem(await me(client, bearer(tampered)), 401, "auth.invalid_token")
    _, other = await new_key(demo)
    # one key's prefix with another key's secret
    mixed = "_".join(secret.split("_", 2)[:2] + [other.split("_", 2)[2]])
    await problem(await me(client, bearer(mixed)), 401, "auth.invalid_token")


async def test_unknown_scope_is_refused_and_nothing_stored(demo: Services) -> None:
    with pytest.raises(UnknownScope) as e:
        await new_key(demo, scopes=["identity.read", "identity.everything"])
    assert e.value.code == "accounts.unknown_scope"
    assert e.value.status == 422
    assert "identity.everything" in e.value.detail
    async with demo.db.reader() as s:
        assert (await s.execute(text("SELECT count(*) FROM api_keys"))).scalar() == 0


async def test_key_is_stored_only_as_a_hash(demo: Services) -> None:
    key, secret = await new_key(demo)
    _, prefix, clear = secret.split("_", 2)
    async with demo.db.reader() as s:
        rows = (await s.execute(text("SELECT * FROM api_keys"))).mappings().all()
        trail = (await s.execute(text("SELECT * FROM audit_entries"))).all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["prefix"] == prefix == key.prefix
    assert row["secret_hash"] == hashlib.sha256(clear.encode()).hexdigest()
    assert clear not in repr(row)
    assert secret not in repr(row)
    assert clear not in repr(trail)
    assert row["revoked_at"] is None


async def test_non_ascii_csrf_token_is_refused_not_crashed(client: TestClient, demo: Services) -> None:
    await session_login(client, ZHANG.id_number)
    resp = await client.post("/api/v1/me/consents", json=grant_body(), headers={"X-CSRF-Token": "\u00e9t\u00e9"})
    await problem(resp, 403, "auth.csrf_failed")
