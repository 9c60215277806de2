"""Bad input gets a clear 4xx problem+json and changes nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from federation.identity.models import Person
from tests.conftest import token_for


async def persons(svc) -> int:
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(Person))).scalar_one()


async def test_malformed_json(client, demo):
    headers = await token_for(client, "admin@federation")
    before = await persons(demo)
    resp = await client.post(
        "/api/v1/identity/persons", data=b'{"name": "x",', headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "malformed_body"
    assert await persons(demo) == before


async def test_wrong_types_and_unknown_fields(client, demo):
    headers = await token_for(client, "admin@federation")
    before = await persons(demo)
    resp = await client.post("/api/v1/identity/persons", json={"name": 12, "birth_date": "2024-13-45"}, headers=headers)
    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "validation_failed"
    assert {e["loc"] for e in body["errors"]} == {"name", "birth_date"}
    resp = await client.post("/api/v1/identity/persons", json={"name": "王五", "shoe_size": 42}, headers=headers)
    assert resp.status == 422
    assert [e["type"] for e in (await resp.json())["errors"]] == ["extra_forbidden"]
    assert await persons(demo) == before


async def test_errors_never_echo_the_input(client, demo):
    headers = await token_for(client, "admin@federation")
    secret = "500103198503122317"
    resp = await client.post(
        "/api/v1/identity/persons",
        json={"name": "x", "identifiers": [{"type": "id_number", "value": secret, "extra": 1}]},
        headers=headers,
    )
    assert resp.status == 422
    assert secret not in await resp.text()


async def test_oversized_body(client, demo):
    headers = await token_for(client, "admin@federation")
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = await client.post(
        "/api/v1/identity/persons", data=big, headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "request_too_large"


async def test_wrong_media_type_and_empty_body(client, demo):
    headers = await token_for(client, "admin@federation")
    resp = await client.post(
        "/api/v1/identity/persons", data=b"name=x", headers={**headers, "Content-Type": "text/plain"}
    )
    assert resp.status == 415
    resp = await client.post(
        "/api/v1/identity/persons", data=b"", headers={**headers, "Content-Type": "application/json"}
    )
    assert resp.status == 400


async def test_bad_query_and_method(client, demo):
    resp = await client.get("/api/v1/members?kind=castle")
    assert resp.status == 422
    resp = await client.get("/api/v1/members?colour=red")
    assert resp.status == 422
    resp = await client.put("/api/v1/members")
    assert resp.status == 405
    assert resp.content_type == "application/problem+json"


async def test_bearer_garbage(client):
    resp = await client.get("/api/v1/me", headers={"Authorization": "Bearer nonsense"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/api/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status == 401
