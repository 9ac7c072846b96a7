"""The `postgres` tool: SQL on psycopg 3 (async), with one connection pool per connection string.

Connection: see `noetl.tools.pgconn` (`auth` naming a postgres credential, or an inline
`connection` string; discrete `host`, `port`, ... fields win).

SQL: `command` / `query` / `sql` (a list of strings is joined with ";\\n"), or `script` (a file
path or URL, `script: {uri: ./x.sql}` or `script: {source: {type: file, path: ...}}`, resolved
from the playbook's folder; see `noetl.tools.scripts`), or base64 `command_b64`. The text is split
into statements on `;` outside quotes, dollar quotes and comments. All statements run in one
transaction (all-or-nothing) unless `transaction: false`, which commits each statement on its own.
`params` (list or mapping, psycopg `%s` / `%(name)s` placeholders; `$1..$n` with a list also works)
is allowed for a single statement only. `schema` sets the search_path first.

Result data:

* `rows`, `columns`, `row_count`: the last statement that returned rows (rows are dicts of JSON
  values, see `noetl.tools.sqljson`); `affected_rows`: the sum of INSERT/UPDATE/DELETE/MERGE/COPY
  counts; `statements`: `{command, row_count}` per statement;
* `command_<i>` (0-based, one per statement, as the upstream Python tool reports them):
  `{status: "success", rows, row_count, columns}` for a statement that returned rows, else
  `{status: "success", row_count, message}` with the affected row count.

Failures carry an error kind (`noetl.tools.failure`): `tool` for errors in the SQL, `auth`,
`timeout` (statement timeout), `connection`, `server_error` (deadlock, serialization failure, ...).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg_pool import PoolTimeout

from noetl.secrets import masker
from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, failed
from noetl.tools.pgconn import (
    ACQUIRE_TIMEOUT,
    POOL_MAX_SIZE,
    PgConfigError,
    Target,
    close_pools,
    connect_error,
    connect_reason,
    get_pool,
    target_of,
)
from noetl.tools.scripts import ScriptError, sql_texts
from noetl.tools.sqljson import sql_value
from noetl.tools.sqltext import adapt_param, adapt_placeholders, snippet, split_statements

__all__ = ["PostgresTool", "close_pools", "split_statements"]

_AFFECTING = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "COPY"})
# Statements PostgreSQL refuses inside a transaction block: run the step in autocommit instead.
_NO_TRANSACTION = re.compile(
    r"^\s*(?:(?:CREATE|DROP|ALTER)\s+DATABASE\b|VACUUM\b|ALTER\s+SYSTEM\b|"
    r"(?:CREATE|DROP)\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\b|REINDEX\b.*\bCONCURRENTLY\b|"
    r"(?:CREATE|DROP)\s+TABLESPACE\b)",
    re.IGNORECASE | re.DOTALL,
)


# --------------------------------------------------------------------------------------------
# Errors


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
    message += f": {snippet(statement)}"
    if diag.message_detail:
        message += f"; DETAIL: {diag.message_detail}"
    if diag.message_hint:
        message += f"; HINT: {diag.message_hint}"
    if total > 1:
        if transactional:
            message += "; the whole step was rolled back"
        elif index > 1:
            message += f"; statements 1-{index - 1} were committed"
    kind = failure.sqlstate_kind(sqlstate)
    if not sqlstate and isinstance(exc, psycopg.OperationalError):
        kind = failure.CONNECTION  # the connection broke mid-step
    return failed(kind, masker.mask_text(message))


# --------------------------------------------------------------------------------------------
# Execution


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
    commands: list[dict[str, Any]] = field(default_factory=list)  # command_<i>, in order

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "rows": self.rows,
            "columns": self.columns,
            "row_count": self.row_count,
            "affected_rows": self.affected_rows,
            "statements": self.statements,
        }
        for index, command in enumerate(self.commands):
            data[f"command_{index}"] = command
        return data


class _StatementFailed(Exception):
    def __init__(self, index: int, error: psycopg.Error) -> None:
        self.index = index
        self.error = error
        super().__init__(str(error))


async def _execute(cur: psycopg.AsyncCursor[Any], statement: str, params: Any) -> None:
    if params is None:
        await cur.execute(statement)
        return
    query, args = adapt_placeholders(statement, params)
    if isinstance(args, Mapping):
        args = {k: adapt_param(v) for k, v in args.items()}
    else:
        args = [adapt_param(v) for v in args]
    await cur.execute(query, args)


async def _run_statements(
    conn: psycopg.AsyncConnection[Any],
    statements: list[str],
    params: Any,
    outcome: _Outcome,
) -> None:
    async with conn.cursor() as cur:
        for index, statement in enumerate(statements, start=1):
            try:
                await _execute(cur, statement, params)
                command = _command_of(cur)
                if cur.description is not None:
                    columns = [col.name for col in cur.description]
                    records = await cur.fetchall()
                    rows = [
                        {name: sql_value(value) for name, value in zip(columns, record, strict=False)}
                        for record in records
                    ]
                    outcome.columns, outcome.rows, outcome.row_count = columns, rows, len(rows)
                    count = len(rows)
                    outcome.commands.append(
                        {"status": "success", "rows": rows, "row_count": count, "columns": columns}
                    )
                else:
                    count = max(cur.rowcount, 0)
                    outcome.commands.append(
                        {
                            "status": "success",
                            "row_count": count,
                            "message": f"{command}: {count} row{'' if count == 1 else 's'} affected",
                        }
                    )
            except psycopg.Error as exc:
                raise _StatementFailed(index, exc) from exc
            if command in _AFFECTING:
                outcome.affected_rows += max(cur.rowcount, 0)
            outcome.statements.append({"command": command, "row_count": count})


@dataclass(frozen=True)
class _Plan:
    statements: list[str]
    params: Any
    transactional: bool
    timeout_ms: int | None
    schema: Any


async def _plan(config: Mapping[str, Any], ctx: ToolContext) -> _Plan:
    try:
        texts = await sql_texts(config, ctx, tool="postgres")
    except ScriptError as exc:
        raise PgConfigError(str(exc).removeprefix("postgres: ")) from None
    statements = split_statements(";\n".join(texts))
    if not statements:
        raise PgConfigError("the SQL is empty (only whitespace or comments)")
    params = config.get("params")
    if params is not None and not isinstance(params, (list, tuple, Mapping)):
        raise PgConfigError(f"'params' must be a list or a mapping, got {type(params).__name__}")
    if isinstance(params, tuple):
        params = list(params)
    if params is not None and len(statements) > 1:
        raise PgConfigError(f"'params' can only be used with a single SQL statement (got {len(statements)})")
    transactional = _as_bool(config.get("transaction"), True) and not any(
        _NO_TRANSACTION.match(s) for s in statements
    )
    return _Plan(statements, params, transactional, _timeout_ms(config, ctx), config.get("schema"))


async def _pool_exhausted(target: Target) -> ToolResult:
    """After a PoolTimeout: either the server went away or every pooled connection is busy."""
    try:
        probe = await psycopg.AsyncConnection.connect(target.conninfo)
    except psycopg.OperationalError as exc:
        return connect_error(target, exc)
    await probe.close()
    return failed(
        failure.TIMEOUT,
        f"no free PostgreSQL connection to {target.describe()} after {ACQUIRE_TIMEOUT:g} s "
        f"(pool max_size {POOL_MAX_SIZE})",
    )


class PostgresTool:
    kind = "postgres"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.monotonic()
        try:
            result = await self._run(config, ctx)
        except PgConfigError as exc:
            result = failed(failure.TOOL, masker.mask_text(f"postgres tool: {exc}"))
        except Exception as exc:  # never raise out of a tool; report instead
            result = failed(
                failure.TOOL, masker.mask_text(f"postgres tool failed: {type(exc).__name__}: {exc}")
            )
        result.duration_ms = (time.monotonic() - started) * 1000.0
        return result

    async def _run(self, config: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        plan = await _plan(config, ctx)
        target = target_of(config, ctx)
        try:
            pool = await get_pool(target)
        except psycopg.OperationalError as exc:
            return connect_error(target, exc)

        outcome = _Outcome()
        try:
            async with pool.connection() as conn:
                if plan.timeout_ms is not None:
                    await conn.execute(
                        "SELECT set_config('statement_timeout', %s, false)", [str(plan.timeout_ms)]
                    )
                if plan.schema:
                    names = [pgsql.Identifier(s.strip()) for s in str(plan.schema).split(",") if s.strip()]
                    await conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.SQL(", ").join(names)))
                if plan.transactional:
                    async with conn.transaction():
                        await _run_statements(conn, plan.statements, plan.params, outcome)
                else:
                    await _run_statements(conn, plan.statements, plan.params, outcome)
        except _StatementFailed as stopped:
            index = stopped.index
            statement = plan.statements[index - 1]
            return _sql_error(stopped.error, index, len(plan.statements), statement, plan.transactional)
        except PoolTimeout:
            return await _pool_exhausted(target)
        except psycopg.OperationalError as exc:
            return failed(
                failure.CONNECTION,
                masker.mask_text(f"PostgreSQL at {target.describe()} failed: {connect_reason(exc)}"),
            )
        return ToolResult(status="success", data=outcome.as_data())
