"""The OpenAPI document tells the truth: every /api/v1 route is in it, and nothing else is."""

from __future__ import annotations

from federation.app import create_app
from federation.web.openapi import openapi_path
from tests.conftest import make_settings


def test_document_matches_the_router(tmp_path):
    app = create_app(make_settings(tmp_path), run_background=False)
    from federation.app import OPENAPI

    doc = app[OPENAPI]
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    served = {
        (r.method, openapi_path(r.resource.canonical))
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource.canonical.startswith("/api/v1/")
    }
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_every_operation_says_who_may_call_it_and_what_it_answers(tmp_path):
    from federation.app import OPENAPI

    doc = create_app(make_settings(tmp_path), run_background=False)[OPENAPI]
    assert doc["openapi"] == "3.1.0"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["x-access"], f"{method} {path}"
            assert op["summary"], f"{method} {path}"
            assert any(code.startswith("2") for code in op["responses"]), f"{method} {path}"
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path


def test_refs_resolve(tmp_path):
    from federation.app import OPENAPI

    doc = create_app(make_settings(tmp_path), run_background=False)[OPENAPI]
    schemas = doc["components"]["schemas"]
    text = __import__("json").dumps(doc)
    import re

    for name in set(re.findall(r'"#/components/schemas/([^"]+)"', text)):
        assert name in schemas, name
