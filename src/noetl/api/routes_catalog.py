"""`/api/catalog/*`: register, list and fetch playbooks (upstream shapes, §1.2)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from noetl.api.common import iso
from noetl.api.models import (
    CatalogEntries,
    CatalogEntryOut,
    CatalogListBody,
    RegisterBody,
    Registered,
    ResourceBody,
)
from noetl.api.routing import BODY_ERRORS, api_router, errors
from noetl.errors import NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.ports import CatalogEntry


def entry_json(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "catalog_id": str(entry.catalog_id),
        "path": entry.path,
        "kind": entry.kind,
        "version": entry.version,
        "content": entry.content,
        "created_at": iso(entry.created_at),
        "meta": entry.meta,
    }


def router(control: ControlPlane) -> APIRouter:
    api = api_router("/api/catalog", "catalog")

    @api.post("/register", response_model=Registered, responses=errors(*BODY_ERRORS))
    def register(body: RegisterBody) -> dict[str, Any]:
        """Store a new version of a playbook (YAML text or base64 of it)."""
        return control.register(body.content, body.resource_type or "Playbook")

    @api.post("/list", response_model=CatalogEntries, responses=errors(*BODY_ERRORS))
    def list_entries(body: CatalogListBody | None = None) -> dict[str, Any]:
        """Every version of every resource, newest first; `resource_type` filters by kind, `path`
        by path. The body is optional."""
        doc = body or CatalogListBody()
        entries = control.store.entries(doc.resource_type.lower() if doc.resource_type else None)
        if doc.path:
            entries = [e for e in entries if e.path == doc.path]
        return {"entries": [entry_json(e) for e in entries]}

    @api.post("/resource", response_model=CatalogEntryOut, responses=errors(404, *BODY_ERRORS))
    def resource(body: ResourceBody) -> dict[str, Any]:
        """One entry: by `catalog_id`, else by `path` and `version` (`latest` or a number)."""
        if body.catalog_id is not None:
            entry = control.store.resource_by_id(body.catalog_id)
            if entry is None:
                raise NotFound(f"Catalog entry '{body.catalog_id}' not found")
            return entry_json(entry)
        if not body.path:
            raise ValidationFailed("Either 'catalog_id' or 'path' must be provided")
        version = _version(body.version)
        entry = control.store.resource(body.path, version)
        if entry is None:
            label = body.path if version is None else f"{body.path}' version '{version}"
            raise NotFound(f"Catalog entry '{label}' not found")
        return entry_json(entry)

    return api


def _version(value: int | str | None) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "latest")):
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) < 2**31:
        raise ValidationFailed(f"Invalid version: {value!r} (use 'latest' or a number from 1)")
    return int(text)
