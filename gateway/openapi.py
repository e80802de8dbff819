"""Completes FastAPI's generated schema with what the middleware and conventions add.

Every ``/api/`` operation gets the bearer security scheme and the problem+json answers it can give
(401, 403, 404 for paths with ids, 410 for an erased contact, 409 for writes, 413/415/422 for bodies,
409/422 for ``Idempotency-Key``, 429
with ``Retry-After``, 503/504 when a service is down or silent). FastAPI's default 422 schema is
replaced: validation failures are problem+json too.
"""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable machine-readable code."},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Field → message, for validation failures.",
        },
    },
    "additionalProperties": True,
    "example": {
        "type": "https://crm-hub.dev/problems/validation_failed",
        "title": "Validation failed",
        "status": 422,
        "detail": "email: is not a valid email address",
        "code": "validation_failed",
        "errors": {"email": "is not a valid email address"},
    },
}

DESCRIPTIONS = {
    "400": "The body is not parseable JSON",
    "401": "No API key, or not a valid one",
    "403": "The caller's role may not do this",
    "404": "No such record (or one the body refers to) in the caller's tenant and visibility",
    "409": "Conflict: the record changed meanwhile or already exists, or a request with this "
    "Idempotency-Key is still in progress",
    "410": "The contact (in the path, or named by the body) was erased",
    "413": "The body exceeds CRM_MAX_BODY",
    "415": "The body is not JSON",
    "422": "Invalid input (or an Idempotency-Key reused with another body)",
    "429": "Rate limit of the API key exceeded",
    "503": "A service or the broker is not available",
    "504": "A service did not answer in time",
}


def problem_response(status: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": DESCRIPTIONS[status], "content": {PROBLEM: {"schema": PROBLEM_REF}}}
    if status == "429":
        out["headers"] = {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
        }
    return out


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeat a POST safely: the same key and body within 24 h answer the first response "
    "again (with `Idempotent-Replayed: true`); the same key with another body is a 422.",
    "schema": {"type": "string", "maxLength": 200},
}


def complete_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`crm_…`); the root token for POST /api/v1/tenants.",
    }
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = op.setdefault("responses", {})
            params = op.get("parameters", [])
            wanted: list[str] = []
            if path.startswith("/api/"):
                op["security"] = [{"bearer": []}]
                wanted += ["401", "403", "429", "503", "504"]
                if "{" in path or op.get("requestBody"):
                    wanted.append("404")  # the record, or one the body refers to
                if op.get("requestBody"):
                    wanted += ["400", "413", "415", "422"]
                if params:
                    wanted.append("422")
                if "{contact_id}" in path or op.get("requestBody"):
                    wanted.append("410")  # an erased contact answers 410 Gone
                if method in ("post", "put", "patch", "delete"):
                    wanted.append("409")
                if method == "post":
                    wanted += ["409", "422"]
                    if not any(p.get("name") == "Idempotency-Key" for p in params):
                        op["parameters"] = [*params, IDEMPOTENCY_HEADER]
            if "422" in responses:
                responses["422"] = problem_response("422")
            for status in wanted:
                responses.setdefault(status, problem_response(status))
    return schema
