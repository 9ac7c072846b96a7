"""`kind: duckdb` (and `ducklake`): run SQL in an embedded DuckDB database, in a worker thread.

Config: SQL from `query`, `command`, `sql`, `commands` (also `queries`, `cmds`): a string or a list of strings,
each possibly holding several statements, or from a `script` file or URL (see `noetl.tools.scripts`); `database` (alias `db_path`; default `:memory:`, a fresh database per
call, else a file that keeps its data between calls); `params` (a list, or a map for `$name` parameters) bound
to the last statement; `read_only`; `timeout`/`timeout_seconds` (the running query is interrupted).

Statements are split by DuckDB's own parser (quotes, comments and dollar quoting are handled) and run in order
on one connection. Result data is the rows of the last statement that produced a result set (SELECT, PRAGMA,
EXPLAIN, CALL, `... RETURNING`), as a list of dicts with JSON values (`noetl.tools.sqljson`: TIMESTAMPTZ in
UTC ISO 8601, BLOB as base64, JSON columns parsed, ...); `[]` when none did (plain DDL, DML without RETURNING).
The whole text is parsed before anything runs, so a syntax error anywhere runs nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from noetl.credtypes import credential_type
from noetl.errors import CredentialError, MissingCredential
from noetl.secrets import masker
from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, ToolStatus, elapsed_ms, timeout_seconds
from noetl.tools.scripts import ScriptError, sql_texts
from noetl.tools.sqljson import sql_value

__all__ = ["DuckDBTool", "attach", "attachments", "connect", "decode_rows"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_NO_ROWS_COLUMNS = (["Count"], ["Success"])  # what DuckDB reports for DDL/DML and utility statements


@dataclass
class _Outcome:
    status: ToolStatus
    data: Any = None
    error: str | None = None
    kind: str | None = None  # failure kind when status is not success


class _Interruptible:
    """Lets the event loop thread interrupt the query running in the worker thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connection: Any = None
        self.cancelled = False

    def interrupt(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.connection is not None:
                self.connection.interrupt()


class DuckDBTool:
    kind = "duckdb"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()
        try:
            texts = await sql_texts(config, ctx, tool="duckdb")
        except ScriptError as exc:
            return _failed(failure.TOOL, str(exc), started)
        database = str(config.get("database") or config.get("db_path") or ":memory:")
        params = config.get("params")
        if params is not None and not isinstance(params, (list, tuple, Mapping)):
            params = [params]
        read_only = bool(config.get("read_only", False))
        timeout = timeout_seconds(config, ctx)
        try:
            attached = attachments(config.get("auth"), ctx)
        except (CredentialError, ValueError) as exc:
            return _failed(failure.TOOL, f"duckdb: {exc}", started)

        guard = _Interruptible()
        task = asyncio.ensure_future(
            asyncio.to_thread(_run_sql, texts, database, params, read_only, guard, attached)
        )
        try:
            if timeout is None:
                outcome = await task
            else:
                outcome = await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            guard.interrupt()
            return _failed(
                failure.TIMEOUT, f"duckdb query timed out after {timeout:g} s", started, status="timeout"
            )
        except asyncio.CancelledError:
            guard.interrupt()
            raise
        kind = outcome.kind if outcome.status != "success" else None
        return ToolResult(
            status=outcome.status,
            data=outcome.data,
            error=outcome.error,
            error_kind=kind,
            retryable=failure.is_retryable(kind),
            duration_ms=elapsed_ms(started),
        )


def _failed(kind: str, error: str, started: float, status: ToolStatus = "error") -> ToolResult:
    return ToolResult(
        status=status,
        error=error,
        error_kind=kind,
        retryable=failure.is_retryable(kind),
        duration_ms=elapsed_ms(started),
    )


def attachments(auth: Any, ctx: ToolContext) -> list[tuple[str, str]]:
    """`auth: alias`, `auth: [a, b]` or `auth: {name: alias}` -> (database name, libpq conninfo)
    for each PostgreSQL credential to ATTACH. The password is masked wherever it could show."""
    if auth is None or auth == "" or auth == []:
        return []
    if isinstance(auth, str):
        pairs = [(auth, auth)]
    elif isinstance(auth, list):
        pairs = [(str(a), str(a)) for a in auth]
    elif isinstance(auth, Mapping):
        pairs = [(str(name), str(alias)) for name, alias in auth.items()]
    else:
        raise ValueError("'auth' must be a credential alias, a list of aliases or a {name: alias} map")
    if ctx.credentials is None:
        raise CredentialError("no credential store is available to resolve 'auth'")
    out: list[tuple[str, str]] = []
    for name, alias in pairs:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"cannot attach a database named {name!r}: use letters, digits and '_'")
        try:
            credential = ctx.credentials.resolve(alias)
        except MissingCredential as exc:
            raise CredentialError(
                exc.advice("postgres", '{"db_host": "...", "db_user": "...", ...}')
            ) from None
        kind = str(credential.get("type", "")).lower()
        if credential_type(kind) != "postgres":
            raise CredentialError(
                f"credential '{alias}' is of type '{kind}'; duckdb can attach postgres credentials"
            )
        data = credential.get("data") or {}
        fields = {
            "host": data.get("db_host", data.get("host", "localhost")),
            "port": data.get("db_port", data.get("port", 5432)),
            "user": data.get("db_user", data.get("user")),
            "password": data.get("db_password", data.get("password")),
            "dbname": data.get("db_name", data.get("database", data.get("dbname"))),
        }
        if fields["password"]:
            masker.add(fields["password"])
        conninfo = " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v not in (None, ""))
        out.append((name, conninfo))
    return out


def _quote(value: Any) -> str:
    """A libpq conninfo value: single-quoted, with backslashes and quotes escaped."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return "'" + text + "'"


def _postgres_extension() -> str:
    """The postgres extension file shipped by the duckdb-ext-postgres wheel for this duckdb."""
    import duckdb_ext  # the wheel's package: duckdb_ext/extensions/v<version>/<platform>/

    version = "v" + duckdb.__version__
    for root in getattr(duckdb_ext, "__path__", []):
        found = sorted(Path(root).glob(f"extensions/{version}/*/postgres_scanner.duckdb_extension"))
        if found:
            return str(found[0])
    raise FileNotFoundError(
        f"the DuckDB postgres extension for duckdb {duckdb.__version__} is not installed "
        "(pip install the duckdb-ext-postgres release matching duckdb)"
    )


def connect(database: str, *, read_only: bool = False) -> Any:
    """A connection to `database` (`:memory:` or a file, whose folder is created)."""
    if database != ":memory:" and ":" not in database.split("/", 1)[0]:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(database, read_only=read_only)


def attach(connection: Any, attached: list[tuple[str, str]]) -> None:
    """ATTACH PostgreSQL databases (from `attachments`) to a connection."""
    if not attached:
        return
    connection.execute(f"LOAD '{_postgres_extension()}'")
    for name, conninfo in attached:
        literal = conninfo.replace("'", "''")  # as a SQL string literal
        connection.execute(f"ATTACH '{literal}' AS \"{name}\" (TYPE postgres)")


def _run_sql(
    texts: list[str],
    database: str,
    params: Any,
    read_only: bool,
    guard: _Interruptible,
    attached: list[tuple[str, str]] | None = None,
) -> _Outcome:
    """Runs in a worker thread; never raises."""
    try:
        connection = connect(database, read_only=read_only)
    except Exception as exc:
        return _Outcome(
            "error", error=f"cannot open duckdb database '{database}': {_message(exc)}", kind=failure.TOOL
        )
    try:
        with guard.lock:
            if guard.cancelled:
                return _TIMED_OUT
            guard.connection = connection
        try:
            attach(connection, attached or [])
        except Exception as exc:
            message = _message(exc)
            kind = failure.message_kind(message) or failure.CONNECTION
            return _Outcome("error", error=f"cannot attach PostgreSQL: {message}", kind=kind)
        statements: list[Any] = []
        for text in texts:
            statements.extend(connection.extract_statements(text))
        rows: list[dict[str, Any]] = []
        last = len(statements) - 1
        for index, statement in enumerate(statements):
            if guard.cancelled:
                return _TIMED_OUT
            if index == last and params is not None:
                cursor = connection.execute(statement, params)
            else:
                cursor = connection.execute(statement)
            description = cursor.description
            if _produces_rows(statement, description):
                rows = decode_rows(description, cursor.fetchall())
        return _Outcome("success", rows)
    except Exception as exc:
        if guard.cancelled:
            return _TIMED_OUT
        return _Outcome("error", error=_message(exc), kind=_error_kind(exc))
    finally:
        with guard.lock:
            guard.connection = None
        try:
            connection.close()
        except Exception:
            pass


_TIMED_OUT = _Outcome("timeout", error="duckdb query timed out", kind=failure.TIMEOUT)


def decode_rows(description: Any, records: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows of a DuckDB result as dicts of JSON values (see `noetl.tools.sqljson`)."""
    columns = [str(col[0]) for col in description]
    decoders = [_json_decoder(col[1]) for col in description]
    if not any(decoders):
        return [
            {name: sql_value(value) for name, value in zip(columns, record, strict=False)}
            for record in records
        ]
    return [
        {
            name: sql_value(decode(value) if decode is not None else value)
            for name, decode, value in zip(columns, decoders, record, strict=False)
        }
        for record in records
    ]


Decoder = Callable[[Any], Any]


def _json_decoder(sql_type: Any) -> Decoder | None:
    """Parses the JSON text DuckDB returns for JSON columns (also inside lists, structs, maps)."""
    text = str(sql_type)
    if "JSON" not in text:
        return None
    if text == "JSON":
        return _parse_json
    kind = getattr(sql_type, "id", "")
    children = list(getattr(sql_type, "children", None) or [])
    if kind in ("list", "array") and children:
        element = _json_decoder(children[0][1])
        return None if element is None else partial(_decode_list, decode=element)
    if kind == "struct":
        fields = {str(name): decoder for name, child in children if (decoder := _json_decoder(child))}
        if not fields:
            return None
        return partial(_decode_struct, fields=fields)
    if kind == "map" and len(children) == 2:
        mapped = _json_decoder(children[1][1])
        return None if mapped is None else partial(_decode_map, decode=mapped)
    return None


def _decode_list(value: Any, decode: Decoder) -> Any:
    return [decode(item) for item in value] if isinstance(value, (list, tuple)) else value


def _decode_map(value: Any, decode: Decoder) -> Any:
    return {key: decode(item) for key, item in value.items()} if isinstance(value, Mapping) else value


def _decode_struct(value: Any, fields: Mapping[str, Decoder]) -> Any:
    if not isinstance(value, Mapping):
        return value
    return {key: fields[key](item) if key in fields else item for key, item in value.items()}


def _parse_json(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _error_kind(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)  # duckdb.HTTPException (httpfs)
    if isinstance(status, int) and status >= 400:
        return failure.http_kind(status) or failure.TOOL
    if isinstance(exc, duckdb.IOException):
        return failure.message_kind(_message(exc)) or failure.TOOL
    return failure.TOOL


def _produces_rows(statement: Any, description: Any) -> bool:
    if not description:
        return False
    kind = getattr(getattr(statement, "type", None), "name", "")
    if kind == "SELECT":
        return True
    return [str(col[0]) for col in description] not in _NO_ROWS_COLUMNS


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
