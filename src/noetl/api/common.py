"""Helpers every route module shares: raw JSON bodies, timestamps, id parsing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from noetl.api.errors import MalformedRequest
from noetl.errors import ValidationFailed


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z` suffix and millisecond precision (as the event log prints it)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def raw_json(body: Any) -> Any:
    """The decoded body. FastAPI decodes `application/json`; bodies sent with another content type
    (curl -d defaults to form encoding) arrive as bytes and are decoded here."""
    if isinstance(body, (bytes, bytearray)):
        if not body.strip():
            return None
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedRequest(f"Invalid JSON body: {exc}") from exc
    return body


def json_object(body: Any, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an absent body is `{}` unless `required`."""
    value = raw_json(body)
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationFailed("the request body must be a JSON object")
    return dict(value)


def required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"'{key}' is required and must be a non-empty string")
    return value


def optional_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"'{key}' must be a string")
    return value


def parse_id(value: Any, name: str) -> int:
    """An int64 id given as a JSON number or a numeric string."""
    if isinstance(value, bool):
        raise ValidationFailed(f"Invalid {name}")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"Invalid {name}") from exc
