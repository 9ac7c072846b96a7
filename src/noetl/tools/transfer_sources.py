"""Where `kind: transfer` reads rows from: a PostgreSQL query (streamed with a server-side
cursor), a DuckDB query (fetched chunk by chunk) or an HTTP JSON response (`data_path` picks the
list of records out of it).

A reader yields chunks of rows, each row a dict of column -> value, and knows its columns.
Values stay as the driver returned them (datetime, Decimal, dict, ...) so that the writer can
hand them to the target driver without losing their type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

from noetl.tools.base import ToolContext


class SourceError(Exception):
    """The source failed; `kind` is the failure kind (noetl.tools.failure)."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


def source_query(config: Mapping[str, Any]) -> str:
    for key in ("query", "command", "sql"):
        value = config.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().rstrip(";")
    raise ValueError("source.query is required: the SELECT that reads the rows")


@dataclass
class Reader:
    columns: list[str] = field(default_factory=list)

    def chunks(self, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# PostgreSQL


@dataclass
class PostgresReader(Reader):
    config: Mapping[str, Any] = field(default_factory=dict)
    ctx: ToolContext | None = None

    async def chunks(self, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        import psycopg

        from noetl.tools import failure
        from noetl.tools.pgconn import connect_error, get_pool, target_of
        from noetl.tools.sqltext import adapt_placeholders

        assert self.ctx is not None
        target = target_of(self.config, self.ctx)
        query = source_query(self.config)
        params = self.config.get("params")
        try:
            pool = await get_pool(target)
        except psycopg.OperationalError as exc:
            result = connect_error(target, exc)
            raise SourceError(f"source: {result.error}", result.failure_kind or failure.CONNECTION) from None
        try:
            async with pool.connection() as conn, conn.transaction():
                cursor = conn.cursor(name="noetl_transfer_source")
                try:
                    if params is not None:
                        query, params = adapt_placeholders(query, params)
                    await cursor.execute(query, params)
                    self.columns = [col.name for col in cursor.description or []]
                    while True:
                        records = await cursor.fetchmany(size)
                        if not records:
                            break
                        yield [dict(zip(self.columns, record, strict=False)) for record in records]
                finally:
                    await cursor.close()
        except psycopg.Error as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            kind = failure.sqlstate_kind(sqlstate)
            if not sqlstate and isinstance(exc, psycopg.OperationalError):
                kind = failure.CONNECTION
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SourceError(f"source query failed: {first}", kind) from None


# --------------------------------------------------------------------------------------------
# DuckDB


@dataclass
class DuckDBReader(Reader):
    config: Mapping[str, Any] = field(default_factory=dict)
    ctx: ToolContext | None = None

    async def chunks(self, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        from noetl.tools import duckdb as duck
        from noetl.tools import failure

        assert self.ctx is not None
        database = str(self.config.get("database") or self.config.get("db_path") or ":memory:")
        query = source_query(self.config)
        attached = duck.attachments(self.config.get("auth"), self.ctx)
        params = self.config.get("params")

        def start() -> Any:
            connection = duck.connect(database, read_only=False)
            try:
                duck.attach(connection, attached)
                cursor = (
                    connection.execute(query, params) if params is not None else connection.execute(query)
                )
            except BaseException:
                connection.close()
                raise
            return connection, cursor

        try:
            connection, cursor = await asyncio.to_thread(start)
        except Exception as exc:
            raise SourceError(f"source query failed: {exc}", failure.TOOL) from None
        try:
            self.columns = [str(col[0]) for col in cursor.description or []]
            while True:
                records = await asyncio.to_thread(cursor.fetchmany, size)
                if not records:
                    break
                yield [dict(zip(self.columns, record, strict=False)) for record in records]
        except Exception as exc:
            raise SourceError(f"source query failed: {exc}", failure.TOOL) from None
        finally:
            await asyncio.to_thread(connection.close)


# --------------------------------------------------------------------------------------------
# HTTP


def pick_path(data: Any, path: str | None) -> Any:
    """`data_path` (dotted, list indexes allowed: `result.items`, `pages.0.rows`) into a response."""
    if not path:
        return data
    for part in str(path).split("."):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


@dataclass
class HttpReader(Reader):
    config: Mapping[str, Any] = field(default_factory=dict)
    ctx: ToolContext | None = None

    async def chunks(self, size: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        from noetl.tools import failure
        from noetl.tools.http import HttpTool

        assert self.ctx is not None
        request = {k: v for k, v in self.config.items() if k not in ("type", "kind", "tool", "data_path")}
        result = await HttpTool().run(request, self.ctx)
        if not result.ok:
            raise SourceError(f"source: {result.error}", result.failure_kind or failure.TOOL)
        body = result.data.get("body") if isinstance(result.data, Mapping) else None
        data_path = self.config.get("data_path")
        records = pick_path(body, data_path)
        if isinstance(records, Mapping):
            records = [records]
        if not isinstance(records, list):
            where = f" at data_path '{data_path}'" if data_path else ""
            shown = type(records).__name__ if records is not None else "nothing"
            raise SourceError(
                f"source: the HTTP response has {shown}{where}, not a list of records", failure.TOOL
            )
        rows = [r if isinstance(r, Mapping) else {"value": r} for r in records]
        columns: dict[str, None] = {}
        for row in rows:
            columns.update(dict.fromkeys(str(k) for k in row))
        self.columns = list(columns)
        for start in range(0, len(rows), size):
            yield [dict(row) for row in rows[start : start + size]]


SOURCE_TYPES = ("postgres", "duckdb", "http")


def reader_for(kind: str, config: Mapping[str, Any], ctx: ToolContext) -> Reader:
    if kind == "postgres":
        return PostgresReader(config=config, ctx=ctx)
    if kind == "duckdb":
        return DuckDBReader(config=config, ctx=ctx)
    if kind == "http":
        return HttpReader(config=config, ctx=ctx)
    raise ValueError(f"source type '{kind}' is not supported (use one of: {', '.join(SOURCE_TYPES)})")
