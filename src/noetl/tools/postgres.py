"""The `postgres` tool: SQL on psycopg 3 (async), with one connection pool per connection string.

Connection: `auth` (alias `credential`) naming a credential of type postgres, whose data holds
`db_host, db_port, db_user, db_password, db_name` (or `host, port, user, password, database|dbname`);
or an inline `connection` / `connection_string` / `dsn` (a libpq string or URL, or a mapping of
those keys). Discrete fields in the config (`host`, `port`, ...) win over the credential's.

SQL: `command` / `query` / `sql` (a list of strings is joined with ";\\n"). The text is split into
statements on `;` outside quotes, dollar quotes and comments. All statements run in one transaction
(all-or-nothing) unless `transaction: false`, which commits each statement on its own. `params`
(list or mapping, psycopg `%s` / `%(name)s` placeholders; `$1..$n` with a list also works) is
allowed for a single statement only. `schema` sets the search_path first.

Result data: `{rows, columns, row_count, affected_rows, statements}`: `rows`/`columns`/`row_count`
describe the last statement that returned rows (rows are dicts of JSON-safe values), `affected_rows`
sums INSERT/UPDATE/DELETE/MERGE/COPY counts, `statements` lists `{command, row_count}` per statement.

Pools are bound to the event loop that opened them; call `close_pools()` at shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from noetl.errors import CredentialError, NoetlError
from noetl.secrets import masker
from noetl.tools.base import ToolContext, ToolResult

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
CONNECT_TIMEOUT = 10  # seconds, libpq connect_timeout
ACQUIRE_TIMEOUT = 30.0  # seconds to wait for a free pooled connection

_AFFECTING = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"})
# Statements PostgreSQL refuses inside a transaction block: run the step in autocommit instead.
_NO_TRANSACTION = re.compile(
    r"^\s*(?:(?:CREATE|DROP|ALTER)\s+DATABASE\b|VACUUM\b|ALTER\s+SYSTEM\b|"
    r"(?:CREATE|DROP)\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b|REINDEX\b.*\bCONCURRENTLY\b|"
    r"(?:CREATE|DROP)\s+TABLESPACE\b)",
    re.IGNORECASE | re.DOTALL,
)
# SQLSTATEs worth retrying: serialization failure, deadlock, connection and availability problems.
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53", "57P", "58")
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


# --------------------------------------------------------------------------------------------
# SQL text handling


_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _segments(text: str) -> Iterator[tuple[str, int, int]]:
    """Lexical pieces of SQL: (kind, start, end), kind in code | quoted | comment | semicolon."""
    i = 0
    n = len(text)
    code_start = 0

    def flush(end: int) -> Iterator[tuple[str, int, int]]:
        if end > code_start:
            yield ("code", code_start, end)

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "'":
            yield from flush(i)
            prev = text[i - 1] if i > 0 else ""
            before = text[i - 2] if i > 1 else ""
            escapes = prev in ("e", "E") and not (before.isalnum() or before in "_$")
            j = i + 1
            while j < n:
                if escapes and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            yield ("quoted", i, end)
            i = code_start = end
        elif c == '"':
            yield from flush(i)
            j = text.find('"', i + 1)
            end = n if j < 0 else j + 1
            yield ("quoted", i, end)
            i = code_start = end
        elif c == "-" and nxt == "-":
            yield from flush(i)
            j = text.find("\n", i + 2)
            end = n if j < 0 else j + 1
            yield ("comment", i, end)
            i = code_start = end
        elif c == "/" and nxt == "*":
            yield from flush(i)
            depth = 1
            j = i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                else:
                    j += 1
            yield ("comment", i, j)
            i = code_start = j
        elif c == "$" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")):
            match = _DOLLAR_TAG.match(text, i)
            if match is None:
                i += 1
                continue
            yield from flush(i)
            tag = match.group(0)
            j = text.find(tag, match.end())
            end = n if j < 0 else j + len(tag)
            yield ("quoted", i, end)
            i = code_start = end
        elif c == ";":
            yield from flush(i)
            yield ("semicolon", i, i + 1)
            i = code_start = i + 1
        else:
            i += 1
    yield from flush(n)


def split_statements(text: str) -> list[str]:
    """Statements of a SQL script, without empty or comment-only pieces and leading comments."""
    statements: list[str] = []
    first: int | None = None
    last_end = 0
    for kind, start, end in _segments(text):
        if kind == "semicolon":
            if first is not None:
                statements.append(text[first:last_end].strip())
            first = None
            continue
        if kind == "comment":
            continue
        if kind == "code" and not text[start:end].strip():
            continue
        if first is None:
            first = start + (len(text[start:end]) - len(text[start:end].lstrip()))
        last_end = end
    if first is not None:
        statements.append(text[first:last_end].strip())
    return [s for s in statements if s]


_PSYCOPG_PLACEHOLDER = re.compile(r"%(?:\([^)]+\))?[sbt]")
_DOLLAR_PARAM = re.compile(r"\$(\d+)")


def _adapt_placeholders(statement: str, params: Any) -> tuple[str, Any]:
    """Accept `$1..$n` with a list of params by rewriting them to psycopg placeholders."""
    if not isinstance(params, list):
        return statement, params
    segments = list(_segments(statement))
    code = [statement[s:e] for kind, s, e in segments if kind == "code"]
    if any(_PSYCOPG_PLACEHOLDER.search(part) for part in code):
        return statement, params
    if not any(_DOLLAR_PARAM.search(part) for part in code):
        return statement, params
    out: list[str] = []
    for kind, start, end in segments:
        piece = statement[start:end].replace("%", "%%")
        if kind == "code":
            piece = _DOLLAR_PARAM.sub(lambda m: f"%(p{m.group(1)})s", piece)
        out.append(piece)
    return "".join(out), {f"p{i}": value for i, value in enumerate(params, start=1)}


def _adapt_param(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


def _snippet(statement: str, limit: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Values


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of a value psycopg returned."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------------------------
# Connection settings


class PgConfigError(Exception):
    """The config or credential cannot be used; the message is for the user."""


@dataclass(frozen=True)
class _Target:
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
_ADD_HINT = (
    "noetl credential add {alias} --type postgres --data "
    '\'{{"db_host": "localhost", "db_port": 5432, "db_user": "...", '
    '"db_password": "...", "db_name": "..."}}\''
)


def _pick(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = data.get(key)
        if value not in (None, ""):
            return value
    return None


def _resolve_alias(alias: str, ctx: ToolContext) -> Mapping[str, Any]:
    hint = _ADD_HINT.format(alias=alias)
    if ctx.credentials is None:
        raise PgConfigError(
            f"credential '{alias}' not found (no credential store is available); add it with: {hint}"
        )
    try:
        cred = ctx.credentials.resolve(alias)
    except (CredentialError, KeyError, LookupError) as exc:
        text = str(exc).lower()
        if (
            isinstance(exc, LookupError)
            or "not found" in text
            or "no credential" in text
            or "missing" in text
        ):
            raise PgConfigError(f"credential '{alias}' not found; add it with: {hint}") from None
        raise PgConfigError(f"credential '{alias}' could not be loaded: {exc}") from None
    except NoetlError as exc:
        raise PgConfigError(f"credential '{alias}' could not be loaded: {exc}") from None
    ctype = str(cred.get("type") or "").lower()
    data = cred.get("data")
    if not isinstance(data, Mapping):
        raise PgConfigError(f"credential '{alias}' has no data mapping; expected {hint}")
    if ctype not in ("", "postgres", "postgresql", "pg") and _pick(data, _CONN_KEYS["host"]) is None:
        raise PgConfigError(
            f"credential '{alias}' has type '{ctype}', but the postgres tool needs type postgres"
        )
    return data


def _connect_params(data: Mapping[str, Any], keys: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    return {name: value for name, names in keys.items() if (value := _pick(data, names)) is not None}


def _target(config: Mapping[str, Any], ctx: ToolContext) -> _Target:
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
    return _Target(
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


async def _get_pool(target: _Target) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
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
# Errors


def _connect_reason(exc: BaseException) -> str:
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


def _connect_error(target: _Target, exc: BaseException) -> ToolResult:
    return ToolResult(
        status="error",
        error=masker.mask_text(
            f"cannot connect to PostgreSQL at {target.describe()}: {_connect_reason(exc)}"
        ),
        retryable=True,
    )


def _sql_error(exc: psycopg.Error, index: int, total: int, statement: str, transactional: bool) -> ToolResult:
    diag = exc.diag
    sqlstate = exc.sqlstate or diag.sqlstate
    primary = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    message = primary
    if sqlstate:
        message += f" (SQLSTATE {sqlstate})"
    message += f" in statement {index}"
    if total > 1:
        message += f" of {total}"
    message += f": {_snippet(statement)}"
    if diag.message_detail:
        message += f"; DETAIL: {diag.message_detail}"
    if diag.message_hint:
        message += f"; HINT: {diag.message_hint}"
    if total > 1:
        if transactional:
            message += "; the whole step was rolled back"
        elif index > 1:
            message += f"; statements 1-{index - 1} were committed"
    retryable = sqlstate is not None and (
        sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith(_RETRYABLE_SQLSTATE_CLASSES)
    )
    if not sqlstate and isinstance(exc, psycopg.OperationalError):
        retryable = True  # the connection broke mid-step
    return ToolResult(status="error", error=masker.mask_text(message), retryable=retryable)


# --------------------------------------------------------------------------------------------
# Execution


def _sql_text(config: Mapping[str, Any]) -> str:
    for key in ("command", "query", "sql", "commands", "queries"):
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            return ";\n".join(str(v) for v in value if v is not None)
        return str(value)
    raise PgConfigError("'command' (or 'query') is required: the SQL to run")


def _as_bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "no", "0", "off", "")
    return bool(value)


def _timeout_ms(config: Mapping[str, Any], ctx: ToolContext) -> int | None:
    raw = config.get("timeout_seconds", config.get("timeout"))
    seconds: float | None = None
    if raw not in (None, ""):
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            raise PgConfigError(f"'timeout' must be a number of seconds, got {raw!r}") from None
    if ctx.timeout is not None and ctx.timeout > 0:
        seconds = ctx.timeout if seconds is None else min(seconds, ctx.timeout)
    if seconds is None or seconds <= 0:
        return None
    return max(1, int(seconds * 1000))


def _command_of(cur: psycopg.AsyncCursor[Any]) -> str:
    status = (cur.statusmessage or "").strip()
    words = [w for w in status.split() if not w.isdigit()]
    return " ".join(words) if words else "UNKNOWN"


@dataclass
class _Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    row_count: int = 0
    affected_rows: int = 0
    statements: list[dict[str, Any]] = field(default_factory=list)

    def as_data(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "columns": self.columns,
            "row_count": self.row_count,
            "affected_rows": self.affected_rows,
            "statements": self.statements,
        }


class _StatementFailed(Exception):
    def __init__(self, index: int, error: psycopg.Error) -> None:
        self.index = index
        self.error = error
        super().__init__(str(error))


async def _run_statements(
    conn: psycopg.AsyncConnection[Any],
    statements: list[str],
    params: Any,
    outcome: _Outcome,
) -> None:
    async with conn.cursor() as cur:
        for index, statement in enumerate(statements, start=1):
            try:
                if params is not None:
                    query, args = _adapt_placeholders(statement, params)
                    if isinstance(args, Mapping):
                        args = {k: _adapt_param(v) for k, v in args.items()}
                    else:
                        args = [_adapt_param(v) for v in args]
                    await cur.execute(query, args)
                else:
                    await cur.execute(statement)
            except psycopg.Error as exc:
                raise _StatementFailed(index, exc) from exc
            command = _command_of(cur)
            if cur.description is not None:
                columns = [col.name for col in cur.description]
                records = await cur.fetchall()
                outcome.columns = columns
                outcome.rows = [
                    {name: _jsonable(value) for name, value in zip(columns, record, strict=False)}
                    for record in records
                ]
                outcome.row_count = len(records)
                count = len(records)
            else:
                count = max(cur.rowcount, 0)
            if command in _AFFECTING:
                outcome.affected_rows += max(cur.rowcount, 0)
            outcome.statements.append({"command": command, "row_count": count})


class PostgresTool:
    kind = "postgres"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.monotonic()
        try:
            result = await self._run(config, ctx)
        except PgConfigError as exc:
            result = ToolResult(status="error", error=masker.mask_text(f"postgres tool: {exc}"))
        except Exception as exc:  # never raise out of a tool; report instead
            result = ToolResult(
                status="error", error=masker.mask_text(f"postgres tool failed: {type(exc).__name__}: {exc}")
            )
        result.duration_ms = (time.monotonic() - started) * 1000.0
        return result

    async def _run(self, config: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        statements = split_statements(_sql_text(config))
        if not statements:
            raise PgConfigError("the SQL is empty (only whitespace or comments)")
        params = config.get("params")
        if params is not None and not isinstance(params, (list, tuple, Mapping)):
            raise PgConfigError(f"'params' must be a list or a mapping, got {type(params).__name__}")
        if isinstance(params, tuple):
            params = list(params)
        if params is not None and len(statements) > 1:
            raise PgConfigError(
                f"'params' can only be used with a single SQL statement (got {len(statements)})"
            )
        transactional = _as_bool(config.get("transaction"), True) and not any(
            _NO_TRANSACTION.match(s) for s in statements
        )
        timeout_ms = _timeout_ms(config, ctx)
        schema = config.get("schema")
        target = _target(config, ctx)

        try:
            pool = await _get_pool(target)
        except psycopg.OperationalError as exc:
            return _connect_error(target, exc)

        outcome = _Outcome()
        try:
            async with pool.connection() as conn:
                if timeout_ms is not None:
                    await conn.execute("SELECT set_config('statement_timeout', %s, false)", [str(timeout_ms)])
                if schema:
                    names = [pgsql.Identifier(s.strip()) for s in str(schema).split(",") if s.strip()]
                    await conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.SQL(", ").join(names)))
                if transactional:
                    async with conn.transaction():
                        await _run_statements(conn, statements, params, outcome)
                else:
                    await _run_statements(conn, statements, params, outcome)
        except _StatementFailed as failed:
            index = failed.index
            return _sql_error(failed.error, index, len(statements), statements[index - 1], transactional)
        except PoolTimeout:
            # Either the server went away or every pooled connection is busy: find out which.
            try:
                probe = await psycopg.AsyncConnection.connect(target.conninfo)
            except psycopg.OperationalError as exc:
                return _connect_error(target, exc)
            await probe.close()
            return ToolResult(
                status="error",
                error=(
                    f"no free PostgreSQL connection to {target.describe()} after {ACQUIRE_TIMEOUT:g} s "
                    f"(pool max_size {POOL_MAX_SIZE})"
                ),
                retryable=True,
            )
        except psycopg.OperationalError as exc:
            return ToolResult(
                status="error",
                error=masker.mask_text(f"PostgreSQL at {target.describe()} failed: {_connect_reason(exc)}"),
                retryable=True,
            )
        return ToolResult(status="success", data=outcome.as_data())
