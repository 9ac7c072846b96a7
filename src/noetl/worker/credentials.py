"""Credential resolution for tools: `auth: <alias>` -> the stored credential, masked by value."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from noetl.errors import CredentialError, MissingCredential, NoetlError, NotFound
from noetl.secrets import masker, redact_url
from noetl.store.ports import CredentialStore
from noetl.worker.command import Command, refers_to

if TYPE_CHECKING:
    from noetl.client import ServerClient

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
    """Resolves aliases from a credential store and registers the secret values for masking.
    `where` and `option` name that store in the message of a missing credential (see
    `MissingCredential`): a server's in-process worker passes the server's URL."""

    def __init__(self, store: CredentialStore, *, where: str = "", option: str = "") -> None:
        self.store = store
        self.where = where
        self.option = option
        self._cache: dict[str, Mapping[str, Any]] = {}

    def naming(self) -> tuple[str, str]:
        """(`where`, `option`) for the message of a missing credential."""
        return self.where, self.option

    def resolve(self, alias: str) -> Mapping[str, Any]:
        cached = self._cache.get(alias)
        if cached is not None:
            return cached
        credential = self.store.get_credential(alias)
        if credential is None:
            where, option = self.naming()
            raise MissingCredential(alias, where=where, option=option)
        hide_secrets(credential.data)
        resolved = {"name": credential.name, "type": credential.type, "data": dict(credential.data)}
        self._cache[alias] = resolved
        return resolved


def local_store_credentials(store: CredentialStore, url: str) -> StoreCredentials:
    """The credentials of `noetl run` on the store at `url`: a missing one is added with
    `noetl credential add`, with `--store URL` unless `url` is the default store."""
    return LocalStoreCredentials(store, url)


class LocalStoreCredentials(StoreCredentials):
    """Names the store in a missing credential's message only when one is missing (finding the
    default store's path imports platformdirs: not worth it on every run)."""

    def __init__(self, store: CredentialStore, url: str) -> None:
        super().__init__(store)
        self.url = url

    def naming(self) -> tuple[str, str]:
        from noetl.store import default_store_url

        if self.url == default_store_url():
            return "", ""
        shown = redact_url(self.url)  # no password in a message
        return f" in the store {shown}", f"--store {shown}"


def server_store_credentials(store: CredentialStore, server_url: str) -> StoreCredentials:
    """The credentials of a server's in-process worker: added through that server's API."""
    return StoreCredentials(store, where=f" on the server {server_url}", option=f"--server {server_url}")


def hide_secrets(data: Mapping[str, Any]) -> None:
    """Register a credential's secret values (every field but the public ones) for masking,
    before any tool sees them."""
    for key, value in data.items():
        if key not in PUBLIC_FIELDS:
            masker.add(value)


CREDENTIAL_TTL = 60.0  # seconds a credential fetched from the server is reused


class ServerCredentials:
    """Credentials a remote worker fetches from the server: only for a command it holds that
    refers to them (`GET /api/credentials/{name}?include_data=true&worker_id=&command_id=`); the
    server refuses anything else. A fetched credential is reused for `ttl` seconds, by commands
    that refer to it too. Every secret value is registered with the masker (of the command's
    execution) before a tool sees it."""

    def __init__(self, client: ServerClient, worker_id: str, *, ttl: float = CREDENTIAL_TTL) -> None:
        self.client = client
        self.worker_id = worker_id
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Mapping[str, Any]]] = {}

    def for_command(self, command: Command) -> CommandCredentials:
        return CommandCredentials(self, command)

    def fetch(self, alias: str, command: Command) -> Mapping[str, Any]:
        cached = self._cache.get(alias)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl and refers_to(command, alias):
            hide_secrets(cached[1]["data"])
            return cached[1]
        try:
            body = self.client.get_credential(alias, worker_id=self.worker_id, command_id=command.command_id)
        except NotFound as exc:
            url = self.client.base_url
            raise MissingCredential(alias, where=f" on the server {url}", option=f"--server {url}") from exc
        except NoetlError as exc:
            raise CredentialError(f"credential '{alias}' could not be fetched: {exc}") from exc
        data = body.get("data")
        if not isinstance(data, Mapping):
            raise CredentialError(f"credential '{alias}' came back without its data")
        hide_secrets(data)
        resolved = {
            "name": str(body.get("name") or alias),
            "type": str(body.get("type") or ""),
            "data": dict(data),
        }
        self._cache[alias] = (now, resolved)
        return resolved


class CommandCredentials:
    """The `CredentialResolver` of one command."""

    def __init__(self, source: ServerCredentials, command: Command) -> None:
        self.source = source
        self.command = command

    def resolve(self, alias: str) -> Mapping[str, Any]:
        return self.source.fetch(alias, self.command)
