"""Where `kind: transfer` writes rows to: a PostgreSQL or a DuckDB table.

A writer opens one transaction for the whole transfer (a failure leaves the target as it was),
empties the table first in `replace` mode, and inserts chunk by chunk; `upsert` turns the insert
into `INSERT ... ON CONFLICT (<key>) DO UPDATE` with the key from `target.key` (alias
`conflict_columns`, `primary_key`, `upsert_key`) or else the table's primary key. A custom
`target.query` (an INSERT with one placeholder per column) replaces the generated statement.

Values are adapted to the target column's type: JSON columns get JSON (text that holds JSON is
parsed first), other scalar columns get objects and lists as JSON text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.tools.base import ToolContext

MODES = ("append", "replace", "upsert")


class TargetError(Exception):
    """The target failed; `kind` is the failure kind (noetl.tools.failure)."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


def key_columns(config: Mapping[str, Any]) -> list[str]:
    for name in ("key", "conflict_columns", "primary_key", "upsert_key", "unique_key", "on_conflict"):
        value = config.get(name)
        if isinstance(value, str) and value.strip():
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and value:
            return [str(part) for part in value]
    return []


def table_parts(table: str) -> list[str]:
    """`schema.table` (optionally double-quoted parts) -> its parts."""
    parts: list[str] = []
    current = ""
    quoted = False
    for char in table.strip():
        if char == '"':
            quoted = not quoted
        elif char == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    if any(not part for part in parts) or quoted:
        raise ValueError(f"target.table {table!r} is not a table name")
    return parts


def _json_text(value: Any) -> Any:
    return json.dumps(value, default=str) if isinstance(value, (Mapping, list, tuple)) else value


def _json_value(value: Any) -> Any:
    """A value bound for a JSON column: text holding JSON is parsed."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_document(value: Any) -> str:
    """JSON text for a JSON column: text that already is JSON is kept as it is."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return json.dumps(value)
        return value
    return json.dumps(_json_value(value), default=str)


@dataclass
class Writer:
    config: Mapping[str, Any]
    ctx: ToolContext
    columns: list[str] = field(default_factory=list)
    table: str = ""

    async def open(self, columns: list[str], mode: str) -> None:
        raise NotImplementedError

    async def write(self, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def finish(self, ok: bool) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass
class PostgresWriter(Writer):
    _conn: Any = None
    _lease: Any = None
    _tx: Any = None
    _insert: Any = None
    _json_cols: set[int] = field(default_factory=set)
    _scalar_cols: set[int] = field(default_factory=set)

    async def open(self, columns: list[str], mode: str) -> None:
        import psycopg
        from psycopg import sql

        from noetl.tools.pgconn import connect_error, get_pool, target_of

        target = target_of(self.config, self.ctx)
        try:
            pool = await get_pool(target)
        except psycopg.OperationalError as exc:
            result = connect_error(target, exc)
            raise TargetError(f"target: {result.error}", result.failure_kind or "connection") from None
        self.columns = columns
        self._lease = pool.connection()
        self._conn = await self._lease.__aenter__()
        try:
            self._tx = self._conn.transaction()
            await self._tx.__aenter__()
            name = sql.Identifier(*table_parts(self.table)) if self.table else None
            if name is not None and mode == "replace":
                await self._conn.execute(sql.SQL("DELETE FROM {}").format(name))
            custom = self.config.get("query")
            if isinstance(custom, str) and custom.strip():
                self._insert = custom
            elif name is not None and columns:
                self._classify(await self._column_types(name))
                self._insert = await self._statement(name, mode)
        except BaseException:
            await self.finish(False)
            raise

    async def _column_types(self, name: Any) -> dict[str, tuple[str, str]]:
        rows = await (
            await self._conn.execute(
                "SELECT a.attname, t.typname, t.typcategory FROM pg_attribute a "
                "JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
                [name.as_string(self._conn)],
            )
        ).fetchall()
        return {str(col): (str(typ), str(cat)) for col, typ, cat in rows}

    def _classify(self, types: Mapping[str, tuple[str, str]]) -> None:
        for index, column in enumerate(self.columns):
            typ, category = types.get(column, ("", ""))
            if typ in ("json", "jsonb"):
                self._json_cols.add(index)
            elif category != "A":  # arrays keep lists; everything else gets JSON text
                self._scalar_cols.add(index)

    async def _statement(self, name: Any, mode: str) -> Any:
        from psycopg import sql

        cols = sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        marks = sql.SQL(", ").join(sql.Placeholder() * len(self.columns))
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(name, cols, marks)
        if mode != "upsert":
            return insert
        keys = key_columns(self.config) or await self._primary_key(name)
        if not keys:
            raise TargetError(
                f"target: upsert into {self.table} needs a key: set target.key (the conflict columns) "
                "or give the table a primary key",
                "tool",
            )
        rest = [c for c in self.columns if c not in keys]
        action = (
            sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in rest)
            )
            if rest
            else sql.SQL("DO NOTHING")
        )
        conflict = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
        return sql.SQL("{} ON CONFLICT ({}) {}").format(insert, conflict, action)

    async def _primary_key(self, name: Any) -> list[str]:
        rows = await (
            await self._conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
                [name.as_string(self._conn)],
            )
        ).fetchall()
        return [str(row[0]) for row in rows]

    def _adapt(self, row: Sequence[Any]) -> list[Any]:
        from psycopg.types.json import Jsonb

        out: list[Any] = []
        for index, value in enumerate(row):
            if value is None:
                out.append(None)
            elif index in self._json_cols:
                out.append(Jsonb(_json_value(value)))
            elif index in self._scalar_cols:
                out.append(_json_text(value))
            else:
                out.append(value)
        return out

    async def write(self, rows: Sequence[Sequence[Any]]) -> None:
        from noetl.tools.sqltext import adapt_param, adapt_placeholders

        async with self._conn.cursor() as cur:
            if isinstance(self._insert, str):  # a custom target.query
                values = [[adapt_param(v) for v in row] for row in rows]
                statement = adapt_placeholders(self._insert, values[0])[0]
                await cur.executemany(statement, [adapt_placeholders(self._insert, v)[1] for v in values])
            else:
                await cur.executemany(self._insert, [self._adapt(r) for r in rows])

    async def finish(self, ok: bool) -> None:
        try:
            if self._tx is not None:
                error = None if ok else RuntimeError("transfer failed")
                await self._tx.__aexit__(type(error) if error else None, error, None)
        finally:
            self._tx = None
            if self._lease is not None:
                lease, self._lease = self._lease, None
                await lease.__aexit__(None, None, None)


# --------------------------------------------------------------------------------------------
# DuckDB


def _duck_name(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table_parts(table))


@dataclass
class DuckDBWriter(Writer):
    _conn: Any = None
    _insert: str = ""
    _json_cols: set[int] = field(default_factory=set)
    _text_cols: set[int] = field(default_factory=set)

    async def open(self, columns: list[str], mode: str) -> None:
        self.columns = columns
        await asyncio.to_thread(self._open, mode)

    def _open(self, mode: str) -> None:
        from noetl.tools import duckdb as duck

        database = str(self.config.get("database") or self.config.get("db_path") or "")
        if not database or database == ":memory:":
            raise TargetError(
                "target: a duckdb target needs a 'database' file (an in-memory one is lost)", "tool"
            )
        self._conn = duck.connect(database)
        try:
            duck.attach(self._conn, duck.attachments(self.config.get("auth"), self.ctx))
            self._conn.execute("BEGIN TRANSACTION")
            name = _duck_name(self.table) if self.table else ""
            if name and mode == "replace":
                self._conn.execute(f"DELETE FROM {name}")
            custom = self.config.get("query")
            if isinstance(custom, str) and custom.strip():
                self._insert = custom
                return
            if not self.columns:
                return
            described = self._conn.execute(f"DESCRIBE {name}").fetchall()
            types = {str(row[0]): str(row[1]).upper() for row in described}
            for index, column in enumerate(self.columns):
                typ = types.get(column, "")
                if typ == "JSON":
                    self._json_cols.add(index)
                elif typ in ("VARCHAR", "TEXT", "STRING") or typ.startswith("VARCHAR"):
                    self._text_cols.add(index)
            self._insert = self._statement(name, mode)
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _statement(self, name: str, mode: str) -> str:
        quoted = ['"' + c.replace('"', '""') + '"' for c in self.columns]
        insert = f"INSERT INTO {name} ({', '.join(quoted)}) VALUES ({', '.join('?' for _ in quoted)})"
        if mode != "upsert":
            return insert
        keys = key_columns(self.config) or self._primary_key()
        if not keys:
            raise TargetError(
                f"target: upsert into {self.table} needs a key: set target.key (the conflict columns) "
                "or give the table a primary key",
                "tool",
            )
        key_quoted = ['"' + k.replace('"', '""') + '"' for k in keys]
        rest = [q for c, q in zip(self.columns, quoted, strict=True) if c not in keys]
        action = "DO UPDATE SET " + ", ".join(f"{q} = EXCLUDED.{q}" for q in rest) if rest else "DO NOTHING"
        return f"{insert} ON CONFLICT ({', '.join(key_quoted)}) {action}"

    def _primary_key(self) -> list[str]:
        parts = table_parts(self.table)
        rows = self._conn.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'"
            + (" AND schema_name = ?" if len(parts) > 1 else ""),
            [parts[-1], *([parts[-2]] if len(parts) > 1 else [])],
        ).fetchall()
        return [str(c) for c in rows[0][0]] if rows else []

    def _adapt(self, row: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for index, value in enumerate(row):
            if value is not None and index in self._json_cols:
                out.append(_json_document(value))
            elif index in self._text_cols:
                out.append(_json_text(value))
            else:
                out.append(value)
        return out

    async def write(self, rows: Sequence[Sequence[Any]]) -> None:
        adapted = [self._adapt(r) for r in rows]
        await asyncio.to_thread(self._conn.executemany, self._insert, adapted)

    async def finish(self, ok: bool) -> None:
        def close() -> None:
            try:
                self._conn.execute("COMMIT" if ok else "ROLLBACK")
            finally:
                self._conn.close()

        if self._conn is not None:
            await asyncio.to_thread(close)
            self._conn = None


TARGET_TYPES = ("postgres", "duckdb")


def writer_for(kind: str, config: Mapping[str, Any], ctx: ToolContext, table: str) -> Writer:
    if kind == "postgres":
        return PostgresWriter(config=config, ctx=ctx, table=table)
    if kind == "duckdb":
        return DuckDBWriter(config=config, ctx=ctx, table=table)
    raise ValueError(f"target type '{kind}' is not supported (use one of: {', '.join(TARGET_TYPES)})")
