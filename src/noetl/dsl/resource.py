"""Decoding a resource sent for registration in the catalog: YAML text, or the same text
base64-encoded (as upstream clients send it), with the metadata the catalog keys it by."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from noetl.dsl.yaml_lines import load_yaml
from noetl.errors import ValidationFailed


@dataclass(frozen=True)
class Resource:
    text: str  # the YAML text (decoded when it came base64-encoded)
    path: str  # metadata.path, else metadata.name
    kind: str  # lower-case: playbook, ...


def decode_resource(content: str, resource_type: str = "Playbook") -> Resource:
    """The resource in `content`; ValidationFailed names what is wrong with it."""
    text = content
    try:
        decoded = base64.b64decode("".join(content.split()), validate=True).decode("utf-8")
        if decoded.strip():
            text = decoded
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"Invalid YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("metadata"), Mapping):
        raise ValidationFailed("The resource must have a 'metadata' section")
    metadata = doc["metadata"]
    path = metadata.get("path") or metadata.get("name")
    if not path:
        raise ValidationFailed("metadata.path or metadata.name is required")
    return Resource(text=text, path=str(path), kind=str(doc.get("kind") or resource_type).lower())
