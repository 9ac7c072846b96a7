"""Credentials for CLI-level tests, added with the real `noetl credential add` command."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from tests.support.cli import noetl

KEY_ENV = "NOETL_ENCRYPTION_KEY"
PG_ALIASES = ("pg_local", "pg_k8s", "pg_noetl_k8s")


def fresh_encryption_key() -> str:
    """A random 32-byte master key in base64 (used as is, so no slow passphrase stretching)."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def pg_credential_data(
    dsn: str, *, password: str = "any-password", port: int | None = None
) -> dict[str, Any]:
    """The upstream `data` block `{db_host, db_port, db_user, db_password, db_name}` for `dsn`."""
    parts = conninfo_to_dict(dsn)
    return {
        "db_host": parts.get("host") or "127.0.0.1",
        "db_port": port if port is not None else int(parts.get("port") or 5432),
        "db_user": parts.get("user") or "postgres",
        "db_password": password,
        "db_name": parts.get("dbname") or "postgres",
    }


def add_credential(
    store: str, name: str, type_: str, data: dict[str, Any], *, env: dict[str, str] | None = None
) -> None:
    result = noetl(
        "credential", "add", name, "--type", type_, "--data", json.dumps(data), "--store", store, env=env
    )
    assert result.code == 0, f"credential add {name} exited {result.code}:\n{result.stdout}\n{result.stderr}"
    assert f"credential '{name}' ({type_}) saved" in result.stdout
