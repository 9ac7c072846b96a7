"""`/api/tokens`: API tokens (admin only). A new token is shown once; the store keeps its hash."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from noetl.api.auth import Authenticator
from noetl.api.common import iso
from noetl.api.models import TokenBody, TokenCreated, TokenOut, TokenRevoked
from noetl.api.routing import BODY_ERRORS, api_router, errors
from noetl.api.types import Text
from noetl.errors import Conflict, NotFound
from noetl.store.ports import TokenRecord

TokenName = Annotated[Text, Path(description="The token's name.")]


def token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "scope": record.scope,
        "created_at": iso(record.created_at),
        "revoked_at": iso(record.revoked_at),
        "active": record.revoked_at is None,
    }


def router(auth: Authenticator) -> APIRouter:
    api = api_router("/api/tokens", "tokens")

    @api.post("", response_model=TokenCreated, responses=errors(409, *BODY_ERRORS))
    def create_token(body: TokenBody) -> dict[str, Any]:
        """Create a token `{name, scope: admin|worker|read}`; the answer holds it (only this once).
        409 when a live token has the name."""
        name = body.name
        if any(r.name == name and r.revoked_at is None for r in auth.store.tokens()):
            raise Conflict(f"a live token is named '{name}' already (revoke it first)")
        token, record = auth.create(name, body.scope)
        return {**token_json(record), "token": token}

    @api.get("", response_model=list[TokenOut], responses=errors())
    def list_tokens() -> list[dict[str, Any]]:
        """Every token (revoked ones too), without the secret."""
        return [token_json(record) for record in auth.store.tokens()]

    @api.delete("/{name}", response_model=TokenRevoked, responses=errors(404, 422))
    def revoke_token(name: TokenName) -> dict[str, Any]:
        """Revoke a token: it stops working at once on this server (within seconds on others)."""
        if not auth.revoke(name):
            raise NotFound(f"no live token named '{name}'")
        return {"status": "ok", "name": name, "message": "Token revoked"}

    return api
