"""Credential resolution for tools: `auth: <alias>` -> the stored credential, masked by value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noetl.errors import CredentialError
from noetl.secrets import masker
from noetl.store.ports import CredentialStore

# Credential fields that are not secret and stay readable in logs and events.
PUBLIC_FIELDS = frozenset(
    {
        "db_host",
        "host",
        "db_port",
        "port",
        "db_name",
        "database",
        "dbname",
        "db_user",
        "user",
        "username",
        "header",
        "region",
        "account",
        "warehouse",
        "schema",
        "role",
    }
)


class StoreCredentials:
    """Resolves aliases from a credential store and registers the secret values for masking."""

    def __init__(self, store: CredentialStore) -> None:
        self.store = store
        self._cache: dict[str, Mapping[str, Any]] = {}

    def resolve(self, alias: str) -> Mapping[str, Any]:
        cached = self._cache.get(alias)
        if cached is not None:
            return cached
        credential = self.store.get_credential(alias)
        if credential is None:
            raise CredentialError(
                f"credential '{alias}' not found; add it with: "
                f"noetl credential add {alias} --type <type> --data '{{...}}'"
            )
        hide_secrets(credential.data)
        resolved = {"name": credential.name, "type": credential.type, "data": dict(credential.data)}
        self._cache[alias] = resolved
        return resolved


def hide_secrets(data: Mapping[str, Any]) -> None:
    """Register a credential's secret values (every field but the public ones) for masking,
    before any tool sees them."""
    for key, value in data.items():
        if key not in PUBLIC_FIELDS:
            masker.add(value)
