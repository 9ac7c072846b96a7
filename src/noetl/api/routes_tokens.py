"""`/api/tokens`: API tokens (admin only). A new token is shown once; the store keeps its hash."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from noetl.api.auth import Authenticator
from noetl.api.common import iso, json_object, required_str
from noetl.errors import NotFound
from noetl.store.ports import TokenRecord

JsonBody = Annotated[Any, Body()]


def token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "scope": record.scope,
        "created_at": iso(record.created_at),
        "revoked_at": iso(record.revoked_at),
        "active": record.revoked_at is None,
    }


def router(auth: Authenticator) -> APIRouter:
    api = APIRouter(prefix="/api/tokens", tags=["tokens"])

    @api.post("")
    def create_token(body: JsonBody = None) -> dict[str, Any]:
        """Create a token `{name, scope: admin|worker|read}`; the answer holds it (only this once)."""
        doc = json_object(body)
        token, record = auth.create(required_str(doc, "name").strip(), required_str(doc, "scope").strip())
        return {**token_json(record), "token": token}

    @api.get("")
    def list_tokens() -> list[dict[str, Any]]:
        """Every token (revoked ones too), without the secret."""
        return [token_json(record) for record in auth.store.tokens()]

    @api.delete("/{name}")
    def revoke_token(name: str) -> dict[str, Any]:
        """Revoke a token: it stops working within seconds."""
        if not auth.revoke(name):
            raise NotFound(f"no live token named '{name}'")
        return {"status": "ok", "name": name, "message": "Token revoked"}

    return api
