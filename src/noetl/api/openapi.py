"""The OpenAPI document: FastAPI's, plus the bearer-token scheme every `/api/*` route needs
(`noetl.api.auth`), so clients and fuzzers know how to authenticate."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from noetl.api.auth import required_scope

SCHEME = "bearer"


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, on first request, with the security requirements added."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            secure(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def secure(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token: the server's admin token or one made with `noetl token create` "
        "(scopes admin, worker, read).",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            needed = required_scope(method.upper(), path)
            if needed is not None:
                operation["security"] = [{SCHEME: []}]
                operation["description"] = (
                    operation.get("description", "") + f"\n\nNeeds a token of scope `{needed}` or above."
                ).strip()
