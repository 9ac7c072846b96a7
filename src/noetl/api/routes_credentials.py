"""`/api/credentials`: credentials over the store's encrypted credential table (upstream §1.8).

Secret data is only ever returned by `GET /api/credentials/{name}?include_data=true`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from noetl.api.common import iso, json_object, optional_str, required_str
from noetl.errors import NotFound, ValidationFailed
from noetl.store.ports import CredentialStore, StoredCredential

JsonBody = Annotated[Any, Body()]


def credential_json(credential: StoredCredential, *, include_data: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": credential.name,
        "name": credential.name,
        "type": credential.type,
        "description": credential.description,
        "tags": list(credential.tags),
        "created_at": iso(credential.created_at),
        "updated_at": iso(credential.updated_at),
    }
    if include_data:
        body["data"] = credential.data
    return body


def parse_credential(doc: Mapping[str, Any]) -> StoredCredential:
    name = required_str(doc, "name").strip()
    type_ = required_str(doc, "type").strip()
    data = doc.get("data")
    if not isinstance(data, Mapping):
        raise ValidationFailed("'data' is required and must be a JSON object")
    tags = doc.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValidationFailed("'tags' must be an array of strings")
    return StoredCredential(
        name=name,
        type=type_,
        data=dict(data),
        description=optional_str(doc, "description"),
        tags=tuple(tags),
    )


def router(store: CredentialStore) -> APIRouter:
    api = APIRouter(prefix="/api/credentials", tags=["credentials"])

    def lookup(name: str) -> StoredCredential:
        credential = store.get_credential(name)
        if credential is None:
            raise NotFound(f"Credential '{name}' not found")
        return credential

    @api.post("")
    def put_credential(body: JsonBody = None) -> dict[str, Any]:
        """Create or replace a credential by name (data is encrypted at rest, never echoed)."""
        credential = parse_credential(json_object(body))
        store.put_credential(credential)
        return credential_json(lookup(credential.name))

    @api.get("")
    def list_credentials(
        type: Annotated[str | None, Query(description="Only credentials of this type")] = None,
        q: Annotated[str | None, Query(description="Substring of the name or description")] = None,
    ) -> dict[str, Any]:
        """Credentials without their data."""
        items = store.list_credentials()
        if type:
            items = [c for c in items if c.type == type]
        if q:
            needle = q.lower()
            items = [c for c in items if needle in c.name.lower() or needle in (c.description or "").lower()]
        answer: dict[str, Any] = {"items": [credential_json(c) for c in items]}
        if type or q:
            answer["filter"] = {k: v for k, v in (("type", type), ("q", q)) if v}
        return answer

    @api.get("/{name}")
    def get_credential(name: str, include_data: bool = False) -> dict[str, Any]:
        """One credential; `data` only with `include_data=true`."""
        return credential_json(lookup(name), include_data=include_data)

    @api.delete("/{name}")
    def delete_credential(name: str) -> dict[str, Any]:
        """Delete a credential."""
        if not store.delete_credential(name):
            raise NotFound(f"Credential '{name}' not found")
        return {"message": "Credential deleted successfully", "id": name}

    return api
