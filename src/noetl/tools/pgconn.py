"""PostgreSQL connections for the SQL tools: connection settings from a credential or an inline
connection string, one connection pool per connection string and event loop, and the errors of
connecting.

Connection: `auth` (alias `credential`) naming a credential of type postgres, whose data holds
`db_host, db_port, db_user, db_password, db_name` (or `host, port, user, password, database|dbname`);
or an inline `connection` / `connection_string` / `dsn` (a libpq string or URL, or a mapping of
those keys). Discrete fields in the config (`host`, `port`, ...) win over the credential's.

Pools are bound to the event loop that opened them; call `close_pools()` at shutdown. Every
pooled connection loads infinite dates and timestamps as the text `infinity` / `-infinity`
(psycopg refuses them by default).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import abc
from psycopg.adapt import Loader
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool

from noetl.credtypes import credential_type
from noetl.errors import MissingCredential, NoetlError
from noetl.secrets import masker
from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, failed

__all__ = [
    "ACQUIRE_TIMEOUT",
    "POOL_MAX_SIZE",
    "PgConfigError",
    "Target",
    "close_pools",
    "connect_error",
    "connect_reason",
    "get_pool",
    "target_of",
]

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
CONNECT_TIMEOUT = 10  # seconds, libpq connect_timeout
ACQUIRE_TIMEOUT = 30.0  # seconds to wait for a free pooled connection


class PgConfigError(Exception):
    """The config or credential cannot be used; the message is for the user."""


@dataclass(frozen=True)
class Target:
    conninfo: str
    host: str
    port: str
    database: str
    user: str
    source: str  # "credential 'pg_local'" or "inline connection"

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.source}, database '{self.database}', user '{self.user}')"


_CONN_KEYS = {
    "host": ("db_host", "host", "hostname"),
    "port": ("db_port", "port"),
    "user": ("db_user", "user", "username"),
    "password": ("db_password", "password"),
    "dbname": ("db_name", "database", "dbname", "db"),
}
_CONFIG_KEYS = {
    "host": ("host",),
    "port": ("port",),
    "user": ("user", "username"),
    "password": ("password",),
    "dbname": ("database", "dbname"),
}
_DATA_EXAMPLE = (
    '{"db_host": "localhost", "db_port": 5432, "db_user": "...", "db_password": "...", "db_name": "..."}'
)


def _pick(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = data.get(key)
        if value not in (None, ""):
            return value
    return None


def _resolve_alias(alias: str, ctx: ToolContext) -> Mapping[str, Any]:
    hint = MissingCredential(alias).advice("postgres", _DATA_EXAMPLE)
    if ctx.credentials is None:
        raise PgConfigError(f"no credential store is available: {hint}")
    try:
        cred = ctx.credentials.resolve(alias)
    except MissingCredential as exc:
        raise PgConfigError(exc.advice("postgres", _DATA_EXAMPLE)) from None
    except (NoetlError, LookupError) as exc:
        if isinstance(exc, LookupError) or "not found" in str(exc).lower():  # another resolver's
            raise PgConfigError(hint) from None
        raise PgConfigError(f"credential '{alias}' could not be loaded: {exc}") from None
    ctype = str(cred.get("type") or "").lower()
    data = cred.get("data")
    if not isinstance(data, Mapping):
        raise PgConfigError(f"credential '{alias}' has no data mapping; expected e.g. {_DATA_EXAMPLE}")
    if ctype and credential_type(ctype) != "postgres" and _pick(data, _CONN_KEYS["host"]) is None:
        raise PgConfigError(
            f"credential '{alias}' has type '{ctype}', but the postgres tool needs type postgres"
        )
    return data


def _connect_params(data: Mapping[str, Any], keys: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    return {name: value for name, names in keys.items() if (value := _pick(data, names)) is not None}


def target_of(config: Mapping[str, Any], ctx: ToolContext) -> Target:
    inline = config.get("connection_string") or config.get("dsn") or config.get("connection")
    auth = config.get("auth", config.get("credential"))
    explicit = _connect_params(config, _CONFIG_KEYS)
    extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "noetl"}

    if isinstance(inline, str) and inline.strip():
        source = "inline connection"
        try:
            parsed = conninfo_to_dict(inline.strip())
        except psycopg.ProgrammingError as exc:
            raise PgConfigError(f"invalid connection string: {masker.mask_text(str(exc))}") from None
        params: dict[str, Any] = {**extra, **parsed, **explicit}
    else:
        if isinstance(inline, Mapping):
            source = "inline connection"
            data: Mapping[str, Any] = inline
        elif isinstance(auth, str) and auth.strip():
            alias = auth.strip()
            source = f"credential '{alias}'"
            data = _resolve_alias(alias, ctx)
        elif isinstance(auth, Mapping):
            if isinstance(auth.get("credential"), str):
                alias = str(auth["credential"])
                source = f"credential '{alias}'"
                data = _resolve_alias(alias, ctx)
            else:
                source = "inline auth"
                inner = auth.get("data")
                data = inner if isinstance(inner, Mapping) else auth
        elif explicit:
            source = "tool config"
            data = {}
        else:
            raise PgConfigError(
                "no connection: set 'auth' to a credential name (type postgres) "
                "or 'connection' to a connection string such as postgresql://user@host:5432/db"
            )
        params = {**extra, **_connect_params(data, _CONN_KEYS), **explicit}
        params.setdefault("host", "localhost")
        params.setdefault("port", 5432)
        params.setdefault("dbname", "postgres")
        params.setdefault("user", "postgres")
    password = params.get("password")
    if password is not None:
        masker.add(password)
    conninfo = make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})
    return Target(
        conninfo=conninfo,
        host=str(params.get("host") or params.get("hostaddr") or "localhost"),
        port=str(params.get("port") or 5432),
        database=str(params.get("dbname") or params.get("user") or "postgres"),
        user=str(params.get("user") or "postgres"),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Pools


@dataclass
class _LoopPools:
    pools: dict[str, AsyncConnectionPool[psycopg.AsyncConnection[Any]]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


_loop_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPools] = weakref.WeakKeyDictionary()


async def _reset_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    # Session settings a step made (search_path, statement_timeout, SET ...) must not leak.
    await conn.execute("RESET ALL")


def _state() -> _LoopPools:
    loop = asyncio.get_running_loop()
    state = _loop_pools.get(loop)
    if state is None:
        state = _LoopPools()
        _loop_pools[loop] = state
    return state


async def get_pool(target: Target) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    state = _state()
    pool = state.pools.get(target.conninfo)
    if pool is not None and not pool.closed:
        return pool
    lock = state.locks.setdefault(target.conninfo, asyncio.Lock())
    async with lock:
        pool = state.pools.get(target.conninfo)
        if pool is not None and not pool.closed:
            return pool
        # Connect once directly: a pool would only report "timed out", hiding the real reason.
        probe = await psycopg.AsyncConnection.connect(target.conninfo)
        await probe.close()
        pool = AsyncConnectionPool(
            target.conninfo,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            reset=_reset_connection,
            timeout=ACQUIRE_TIMEOUT,
            name=f"noetl-pg-{target.host}:{target.port}/{target.database}",
        )
        await pool.open(wait=False)
        state.pools[target.conninfo] = pool
        return pool


async def close_pools() -> None:
    """Close the pools opened on the running event loop (call at worker shutdown)."""
    loop = asyncio.get_running_loop()
    state = _loop_pools.pop(loop, None)
    if state is None:
        return
    for pool in state.pools.values():
        await pool.close()


# --------------------------------------------------------------------------------------------
# Infinite dates and timestamps


def _infinite(data: Any) -> str | None:
    raw = bytes(data)
    if raw == b"infinity":
        return "infinity"
    if raw == b"-infinity":
        return "-infinity"
    return None


def _or_infinity(base: type[abc.Loader]) -> type[Loader]:
    """A loader that answers `infinity` itself and hands every other value to `base` (the
    driver's own, C-accelerated loader)."""

    class OrInfinity(Loader):
        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            self._inner = base(oid, context)

        def load(self, data: Any) -> Any:
            if len(data) in (8, 9):  # b"infinity", b"-infinity"
                special = _infinite(data)
                if special is not None:
                    return special
            return self._inner.load(data)

    return OrInfinity


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    for name in ("date", "timestamp", "timestamptz"):
        info = conn.adapters.types[name]
        base = conn.adapters.get_loader(info.oid, Format.TEXT)
        if base is not None:
            conn.adapters.register_loader(name, _or_infinity(base))


# --------------------------------------------------------------------------------------------
# Connection errors


def connect_reason(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    low = text.lower()
    if "connection refused" in low:
        return "connection refused (is PostgreSQL running and listening there?)"
    if "timeout expired" in low or "timed out" in low:
        return "connection timed out"
    reason = first.rsplit("failed: ", 1)[-1]
    reason = re.sub(r"^(?:FATAL|ERROR):\s+", "", reason)
    return " ".join(reason.split())


def connect_kind(exc: BaseException) -> str:
    """The failure kind of a connection attempt (auth, not_found, timeout or connection)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        kind = failure.sqlstate_kind(sqlstate)
        if kind != failure.TOOL:
            return kind
    low = str(exc).lower()
    if "role" in low and "does not exist" in low:
        return failure.AUTH
    if "database" in low and "does not exist" in low:
        return failure.NOT_FOUND
    return failure.message_kind(low) or failure.CONNECTION


def connect_error(target: Target, exc: BaseException) -> ToolResult:
    return failed(
        connect_kind(exc),
        masker.mask_text(f"cannot connect to PostgreSQL at {target.describe()}: {connect_reason(exc)}"),
    )
