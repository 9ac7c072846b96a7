"""`/api/catalog/*`: register, list and fetch playbooks (upstream shapes, §1.2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from noetl.api.common import iso, json_object, optional_str, parse_id, required_str
from noetl.errors import NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.ports import CatalogEntry

JsonBody = Annotated[Any, Body()]


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
    api = APIRouter(prefix="/api/catalog", tags=["catalog"])

    @api.post("/register")
    def register(body: JsonBody = None) -> dict[str, Any]:
        """Store a new version of a playbook (YAML text or base64 of it)."""
        doc = json_object(body)
        content = required_str(doc, "content")
        resource_type = optional_str(doc, "resource_type") or "Playbook"
        return control.register(content, resource_type)

    @api.post("/list")
    def list_entries(body: JsonBody = None) -> dict[str, Any]:
        """Every version of every resource, newest first; `resource_type` filters by kind."""
        doc = json_object(body, required=False)
        kind = optional_str(doc, "resource_type")
        path = optional_str(doc, "path")
        entries = control.store.entries(kind.lower() if kind else None)
        if path:
            entries = [e for e in entries if e.path == path]
        return {"entries": [entry_json(e) for e in entries]}

    @api.post("/resource")
    def resource(body: JsonBody = None) -> dict[str, Any]:
        """One entry: by `catalog_id`, else by `path` and `version` (`latest` or a number)."""
        doc = json_object(body)
        raw_id = doc.get("catalog_id")
        if raw_id not in (None, ""):
            catalog_id = parse_id(raw_id, "catalog_id")
            entry = control.store.resource_by_id(catalog_id)
            if entry is None:
                raise NotFound(f"Catalog entry '{raw_id}' not found")
            return entry_json(entry)
        path = optional_str(doc, "path")
        if not path:
            raise ValidationFailed("Either 'catalog_id' or 'path' must be provided")
        version = _version(doc.get("version"))
        entry = control.store.resource(path, version)
        if entry is None:
            label = path if version is None else f"{path}' version '{version}"
            raise NotFound(f"Catalog entry '{label}' not found")
        return entry_json(entry)

    return api


def _version(value: Any) -> int | None:
    if value is None or value == "" or (isinstance(value, str) and value.strip().lower() == "latest"):
        return None
    if isinstance(value, bool):
        raise ValidationFailed("Invalid version")
    try:
        version = int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"Invalid version: {value!r} (use 'latest' or a number)") from exc
    if version < 1:
        raise ValidationFailed(f"Invalid version: {value!r} (versions count up from 1)")
    return version
