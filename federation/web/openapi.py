"""The OpenAPI 3.1 document, built from the same route declarations the application serves."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

from federation.web.routing import Operation, takes_many

PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "code"],
}

_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def _schema(components: dict[str, Any], tp: Any) -> dict[str, Any]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        schema = tp.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    else:
        schema = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        components[tp.__name__] = schema
        return {"$ref": f"#/components/schemas/{tp.__name__}"}
    return schema


def _input_schema(components: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__ + "Input"] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}Input"}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema.get("properties", {}).items():
        param = {"name": name, "in": "query", "required": name in required, "schema": prop}
        field = model.model_fields[name]
        if field.description:
            param["description"] = field.description
        if takes_many(field.annotation):
            param["explode"] = True
        params.append(param)
    return params


def openapi_path(path: str) -> str:
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def build(operations: list[Operation], *, title: str, version: str, server_url: str | None = None) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        if not op.document or not op.path.startswith("/api/v1/"):
            continue
        item: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "tags": [op.tag],
            "x-access": op.access.describe(),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PARAM.findall(op.path)
        ]
        if op.query is not None:
            params += _query_params(op.query)
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _input_schema(components, op.body)}},
            }
        if op.status == 204 or op.response is None:
            item["responses"][str(op.status)] = {"description": "Done"}
        else:
            item["responses"][str(op.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": _schema(components, op.response)}},
            }
        problem = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        codes = {400, 422} | ({401, 403} if not op.access.public else set()) | set(op.errors)
        for code in sorted(codes):
            item["responses"][str(code)] = {"description": "Problem", **problem}
        if not op.access.public:
            item["security"] = [{"bearer": []}, {"session": []}]
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = item
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an access token from POST /api/v1/auth/token, or a member system's API key",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "twincity_session",
                    "description": "portal session; unsafe methods also need the X-CSRF-Token header",
                },
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
