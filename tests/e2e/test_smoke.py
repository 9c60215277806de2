"""The service answers its basic routes over HTTP."""

from __future__ import annotations

from tests.conftest import token_for


async def test_health_ready_metrics_openapi(client):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200, await ready.text()
    assert (await ready.json())["checks"]["database"]["ok"] is True
    metrics = await client.get("/metrics")
    assert "twincity_http_requests_total" in await metrics.text()
    doc = await (await client.get("/api/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    assert "/api/v1/auth/token" in doc["paths"]


async def test_staff_login_and_me(client, demo):
    headers = await token_for(client, "librarian@CQL")
    me = await (await client.get("/api/v1/me", headers=headers)).json()
    assert me == {
        "kind": "staff",
        "name": "librarian@CQL",
        "institution": "CQL",
        "roles": ["librarian"],
        "scopes": [],
        "person_id": None,
        "csrf_token": None,
    }


async def test_unknown_route_is_problem_json(client):
    resp = await client.get("/api/v1/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "not_found"
