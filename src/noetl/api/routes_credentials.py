"""`/api/credentials`: credentials over the store's encrypted credential table (upstream §1.8).

No route returns secret data to an admin or read token: names, types and timestamps only. Data
leaves the server only through `GET /api/credentials/{name}?include_data=true&worker_id=W&
command_id=C`, for the worker W that holds the running command C when C refers to the credential
(`ControlPlane.release_secret`); the read is recorded in the execution's log without the value.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from noetl.api.auth import principal_of
from noetl.api.common import iso
from noetl.api.models import CredentialBody, CredentialOut, Credentials, Deleted
from noetl.api.routing import BODY_ERRORS, api_router, errors
from noetl.api.types import Text
from noetl.errors import Forbidden, NotFound
from noetl.runtime.control import ControlPlane
from noetl.store.ports import StoredCredential
from noetl.tokens import WORKER


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


def parse_credential(doc: CredentialBody) -> StoredCredential:
    return StoredCredential(
        name=doc.name.strip(),
        type=doc.type.strip(),
        data=dict(doc.data),
        description=doc.description,
        tags=tuple(doc.tags or ()),
    )


CredentialName = Annotated[Text, Path(description="The credential's name.")]


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api/credentials", "credentials")
    store = control.store

    def lookup(name: str) -> StoredCredential:
        credential = store.get_credential(name)
        if credential is None:
            raise NotFound(f"Credential '{name}' not found")
        return credential

    @api.post("", response_model=CredentialOut, responses=errors(*BODY_ERRORS))
    def put_credential(body: CredentialBody) -> dict[str, Any]:
        """Create or replace a credential by name (data is encrypted at rest, never echoed)."""
        credential = parse_credential(body)
        store.put_credential(credential)
        return credential_json(lookup(credential.name))

    @api.get("", response_model=Credentials, responses=errors(422))
    def list_credentials(
        type: Annotated[Text | None, Query(description="Only credentials of this type")] = None,
        q: Annotated[Text | None, Query(description="Substring of the name or description")] = None,
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

    @api.get("/{name}", response_model=CredentialOut, responses=errors(404, 422))
    def get_credential(
        request: Request,
        name: CredentialName,
        include_data: bool = False,
        worker_id: Annotated[Text | None, Query(description="The worker asking (with include_data)")] = None,
        command_id: Annotated[
            Text | None, Query(description="The command it runs (with include_data)")
        ] = None,
    ) -> dict[str, Any]:
        """One credential; `data` only for a worker holding a command that uses it."""
        if not include_data:
            return credential_json(lookup(name))
        principal = principal_of(request.state)
        if principal is None or not principal.may(WORKER):
            raise Forbidden("secret data is given only to workers (a worker token)")
        if not worker_id or not command_id:
            raise Forbidden(
                "secret data is given only with the worker_id and command_id of a running command"
            )
        credential = control.release_secret(name, worker_id=worker_id, command_id=command_id)
        return credential_json(credential, include_data=True)

    @api.delete("/{name}", response_model=Deleted, responses=errors(404, 422))
    def delete_credential(name: CredentialName) -> dict[str, Any]:
        """Delete a credential."""
        if not store.delete_credential(name):
            raise NotFound(f"Credential '{name}' not found")
        return {"message": "Credential deleted successfully", "id": name}

    return api
