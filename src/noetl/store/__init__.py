"""Storage: the ports (`noetl.store.ports`) and `open_store(url)`, which picks an adapter.

Store URLs (SQLAlchemy convention for SQLite):

* `sqlite:///relative/path.db` (relative to the current directory), `sqlite:////abs/path.db`;
  `sqlite://` or `sqlite:///:memory:` for an in-memory database;
* `memory://` for the dict-backed `MemoryStore`;
* `postgresql://...` / `postgres://...` for PostgreSQL.

Adapters are imported when a URL asks for them, so `import noetl.store` stays cheap. `open_store`
is the edge that builds a store from the process's configuration (`noetl.settings`): the default
URL (NOETL_STORE_URL) and SQLite's sync mode (NOETL_SQLITE_SYNC); the adapters take them explicitly.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from noetl.errors import StoreError
from noetl.settings import settings
from noetl.store.ports import Store

STORE_URL_ENV = "NOETL_STORE_URL"  # read by `noetl.settings`
SCHEMES = ("sqlite://", "memory://", "postgresql://", "postgres://")

__all__ = ["STORE_URL_ENV", "Store", "default_store_url", "open_store"]


def default_store_url() -> str:
    """`NOETL_STORE_URL` when set, else a SQLite file in the per-user data directory."""
    url = settings().store_url
    if url:
        return url
    from platformdirs import user_data_dir

    return "sqlite:///" + (Path(user_data_dir("noetl")) / "noetl.db").as_posix()


def open_store(url: str | None = None) -> Store:
    """The store `url` names (default: `default_store_url()`)."""
    url = url or default_store_url()
    if url.startswith("sqlite:"):
        from noetl.store.sqlite import MEMORY, SQLiteStore

        return SQLiteStore(sqlite_path(url) or MEMORY, url=url, synchronous=settings().sqlite_sync)
    if url.startswith("memory:"):
        from noetl.store.memory import MemoryStore

        return MemoryStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        try:
            postgres = importlib.import_module("noetl.store.postgres")
        except ImportError as exc:
            raise StoreError(f"PostgreSQL store not available: {exc}") from exc
        plain_url, schema = split_schema(url)
        store: Store = postgres.PostgresStore(plain_url, schema=schema or "noetl")
        return store
    raise StoreError(f"unsupported store URL {url!r}: use one of {', '.join(s + '...' for s in SCHEMES)}")


def split_schema(url: str) -> tuple[str, str | None]:
    """`postgresql://...?schema=name` -> (the URL without it, name): our own parameter that picks
    the schema holding NoETL's tables (default `noetl`); libpq would reject it."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is None:
        return url, None
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def sqlite_path(url: str) -> str | None:
    """The database file of a `sqlite:` URL, or None for an in-memory database.

    `sqlite:///x.db` is `x.db` (relative), `sqlite:////x.db` is `/x.db` (absolute).
    """
    if not url.startswith("sqlite://"):
        raise StoreError(f"not a SQLite URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs.db)")
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:"):
        return None
    if not rest.startswith("/"):
        raise StoreError(
            f"SQLite URL {url!r} has a host part; use sqlite:///relative.db or sqlite:////abs.db"
        )
    return rest[1:]
