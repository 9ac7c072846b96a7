"""`kind: transfer` at the tool level: every direction, the three modes, mapping, custom insert
statements, value adaptation, and all-or-nothing failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from tests.support.credentials import pg_credential_data
from tests.support.stub_api import StubAPI

from noetl.errors import CredentialError
from noetl.tools.base import ToolContext, ToolResult, get_tool
from noetl.tools.postgres import close_pools
from noetl.tools.transfer import TransferTool


class Creds:
    def __init__(self, dsn: str) -> None:
        self.data = pg_credential_data(dsn)

    def resolve(self, alias: str) -> Mapping[str, Any]:
        if alias != "pg":
            raise CredentialError(f"credential '{alias}' not found")
        return {"name": alias, "type": "postgres", "data": self.data}


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_tr_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(
            f"CREATE TABLE {name}.src (id int PRIMARY KEY, name text, doc jsonb, ts timestamptz, price numeric(8,2))"
        )
        conn.execute(
            f"INSERT INTO {name}.src SELECT g, 'n' || g, jsonb_build_object('g', g), "
            f"timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour', g * 1.25 FROM generate_series(1, 10) g"
        )
        conn.execute(
            f"CREATE TABLE {name}.dst (id int PRIMARY KEY, name text, doc jsonb, ts timestamptz, price numeric(8,2))"
        )
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def transfer(config: dict[str, Any], pg_dsn: str, **ctx: Any) -> ToolResult:
    async def go() -> ToolResult:
        try:
            context = ToolContext(execution_id=1, step="t", command_id="c", credentials=Creds(pg_dsn), **ctx)
            return await TransferTool().run(config, context)
        finally:
            await close_pools()

    return asyncio.run(go())


def rows(pg_dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description is not None else []


def pg_source(schema: str, query: str | None = None) -> dict[str, Any]:
    return {"type": "postgres", "auth": "pg", "query": query or f"SELECT * FROM {schema}.src ORDER BY id"}


def test_registered_as_a_tool_kind() -> None:
    assert isinstance(get_tool("transfer"), TransferTool)


def test_postgres_to_postgres_append_in_chunks(pg_dsn: str, schema: str) -> None:
    result = transfer(
        {
            "source": pg_source(schema),
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
            "chunk_size": 4,
        },
        pg_dsn,
    )
    assert result.status == "success", result.error
    assert result.data == {
        "rows_transferred": 10,
        "chunks_processed": 3,
        "target_table": f"{schema}.dst",
        "columns": ["id", "name", "doc", "ts", "price"],
        "mode": "append",
        "source_type": "postgres",
        "target_type": "postgres",
        "direction": "postgres_to_postgres",
    }
    assert rows(pg_dsn, f"SELECT * FROM {schema}.dst EXCEPT SELECT * FROM {schema}.src") == []
    assert rows(pg_dsn, f"SELECT count(*) FROM {schema}.dst") == [(10,)]


def test_replace_empties_the_table_first_and_upsert_updates(pg_dsn: str, schema: str) -> None:
    target = {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"}
    rows(pg_dsn, f"INSERT INTO {schema}.dst (id, name) VALUES (500, 'old')")
    replaced = transfer({"source": pg_source(schema), "target": target, "mode": "replace"}, pg_dsn)
    assert replaced.status == "success", replaced.error
    assert rows(pg_dsn, f"SELECT count(*), max(id) FROM {schema}.dst") == [(10, 10)]

    upsert_src = pg_source(
        schema, f"SELECT id, upper(name) AS name FROM {schema}.src WHERE id > 8 UNION ALL SELECT 11, 'new'"
    )
    upserted = transfer({"source": upsert_src, "target": target, "mode": "upsert"}, pg_dsn)
    assert upserted.status == "success", upserted.error
    assert upserted.data["rows_transferred"] == 3
    assert rows(pg_dsn, f"SELECT id, name, price FROM {schema}.dst WHERE id >= 8 ORDER BY id") == [
        (8, "n8", Decimal("10.00")),
        (9, "N9", Decimal("11.25")),
        (10, "N10", Decimal("12.50")),
        (11, "new", None),
    ]


def test_upsert_with_an_explicit_key_and_without_one(pg_dsn: str, schema: str) -> None:
    rows(pg_dsn, f"CREATE TABLE {schema}.nokey (code text, label text, UNIQUE (code))")
    src = pg_source(schema, "SELECT 'a' AS code, 'first' AS label UNION ALL SELECT 'b', 'second'")
    first = transfer(
        {
            "source": src,
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.nokey"},
            "mode": "upsert",
        },
        pg_dsn,
    )
    assert first.status == "error"
    assert first.failure_kind == "tool"
    assert "needs a key: set target.key" in (first.error or "")
    keyed = {"type": "postgres", "auth": "pg", "table": f"{schema}.nokey", "key": "code"}
    assert transfer({"source": src, "target": keyed, "mode": "upsert"}, pg_dsn).ok
    again = pg_source(schema, "SELECT 'b' AS code, 'changed' AS label")
    assert transfer({"source": again, "target": keyed, "mode": "upsert"}, pg_dsn).ok
    assert rows(pg_dsn, f"SELECT code, label FROM {schema}.nokey ORDER BY code") == [
        ("a", "first"),
        ("b", "changed"),
    ]


def test_a_failing_chunk_leaves_the_target_untouched(pg_dsn: str, schema: str) -> None:
    rows(
        pg_dsn, f"INSERT INTO {schema}.dst (id, name, price) VALUES (7, 'already there', 1), (500, 'kept', 2)"
    )
    rows(pg_dsn, f"ALTER TABLE {schema}.dst ADD CONSTRAINT cheap CHECK (price < 10)")  # id 8 costs 10.00
    result = transfer(
        {
            "source": pg_source(schema),
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
            "chunk_size": 3,
            "mode": "replace",
        },
        pg_dsn,
    )
    assert (result.status, result.failure_kind, result.is_retryable) == ("error", "tool", False)
    assert "writing chunk 3 (rows 7-9) failed" in (result.error or "")
    assert 'violates check constraint "cheap"' in (result.error or "")
    assert "nothing was written" in (result.error or "")
    # the DELETE of replace mode and chunks 1-2 were rolled back with it
    assert rows(pg_dsn, f"SELECT id, name FROM {schema}.dst ORDER BY id") == [
        (7, "already there"),
        (500, "kept"),
    ]


def test_http_to_postgres_with_mapping_and_dotted_paths(pg_dsn: str, schema: str, stub_api: StubAPI) -> None:
    rows(pg_dsn, f"CREATE TABLE {schema}.users (uid int PRIMARY KEY, email text, raw jsonb, total int)")
    result = transfer(
        {
            "source": {
                "type": "http",
                "url": f"{stub_api.base_url}/api/v1/users",
                "params": {"offset": 0, "limit": 12},
                "data_path": "users",
            },
            "target": {
                "type": "postgres",
                "auth": "pg",
                "table": f"{schema}.users",
                "mapping": {"uid": "id", "email": "email", "raw": "name", "total": "missing.field"},
            },
            "chunk_size": 5,
        },
        pg_dsn,
    )
    assert result.status == "success", result.error
    assert (result.data["rows_transferred"], result.data["chunks_processed"]) == (12, 3)
    assert result.data["columns"] == ["uid", "email", "raw", "total"]
    assert rows(
        pg_dsn, f"SELECT uid, email, raw, total FROM {schema}.users WHERE uid IN (1, 12) ORDER BY uid"
    ) == [
        (1, "user1@example.com", "User 1", None),
        (12, "user12@example.com", "User 12", None),
    ]


def test_http_source_errors_keep_their_kind(pg_dsn: str, schema: str, stub_api: StubAPI) -> None:
    target = {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"}
    limited = transfer(
        {"source": {"type": "http", "url": f"{stub_api.base_url}/api/v1/status/429"}, "target": target},
        pg_dsn,
    )
    assert (limited.status, limited.failure_kind, limited.is_retryable) == ("error", "rate_limit", True)
    not_rows = transfer(
        {
            "source": {"type": "http", "url": f"{stub_api.base_url}/health", "data_path": "status"},
            "target": target,
        },
        pg_dsn,
    )
    assert not_rows.status == "error"
    assert "not a list of records" in (not_rows.error or "")


def test_postgres_to_duckdb_and_back(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    database = str(tmp_path / "copy.duckdb")
    with duckdb.connect(database) as conn:
        conn.execute(
            "CREATE TABLE dst (id INTEGER PRIMARY KEY, name VARCHAR, doc JSON, ts TIMESTAMPTZ, price DECIMAL(8,2))"
        )
    to_duck = transfer(
        {
            "source": pg_source(schema),
            "target": {"type": "duckdb", "database": database, "table": "dst"},
            "chunk_size": 6,
        },
        pg_dsn,
    )
    assert to_duck.status == "success", to_duck.error
    assert (to_duck.data["rows_transferred"], to_duck.data["chunks_processed"]) == (10, 2)
    assert to_duck.data["direction"] == "postgres_to_duckdb"
    with duckdb.connect(database) as conn:
        got = conn.execute("SELECT id, name, doc->>'g', price, ts FROM dst WHERE id = 2").fetchall()
    assert got[0][:4] == (2, "n2", "2", Decimal("2.50"))
    assert got[0][4] == datetime(2024, 1, 1, 2, tzinfo=UTC)  # the same instant

    back = transfer(
        {
            "source": {
                "type": "duckdb",
                "database": database,
                "query": "SELECT id + 100 AS id, name, doc, ts, price FROM dst",
            },
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
            "chunk_size": 4,
        },
        pg_dsn,
    )
    assert back.status == "success", back.error
    assert (back.data["rows_transferred"], back.data["chunks_processed"], back.data["direction"]) == (
        10,
        3,
        "duckdb_to_postgres",
    )
    assert (
        rows(
            pg_dsn,
            f"SELECT id - 100, name, doc, ts, price FROM {schema}.dst EXCEPT SELECT id, name, doc, ts, price FROM {schema}.src",
        )
        == []
    )


def test_duckdb_upsert_and_custom_insert(pg_dsn: str, schema: str, tmp_path: Path) -> None:
    database = str(tmp_path / "up.duckdb")
    with duckdb.connect(database) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR)")
        conn.execute("INSERT INTO t VALUES (1, 'old'), (99, 'kept')")
    src = pg_source(schema, f"SELECT id, name FROM {schema}.src WHERE id <= 3")
    up = transfer(
        {"source": src, "target": {"type": "duckdb", "database": database, "table": "t"}, "mode": "upsert"},
        pg_dsn,
    )
    assert up.status == "success", up.error
    custom = transfer(
        {
            "source": pg_source(schema, "SELECT 50 AS id, 'x' AS name"),
            "target": {
                "type": "duckdb",
                "database": database,
                "query": "INSERT INTO t VALUES (? * 2, upper(?))",
            },
        },
        pg_dsn,
    )
    assert custom.status == "success", custom.error
    assert custom.data["target_table"] is None
    with duckdb.connect(database) as conn:
        assert conn.execute("SELECT * FROM t ORDER BY id").fetchall() == [
            (1, "n1"),
            (2, "n2"),
            (3, "n3"),
            (99, "kept"),
            (100, "X"),
        ]


def test_custom_postgres_insert_with_dollar_placeholders(pg_dsn: str, schema: str) -> None:
    result = transfer(
        {
            "source": pg_source(schema, f"SELECT id, name FROM {schema}.src WHERE id <= 2"),
            "target": {
                "type": "postgres",
                "auth": "pg",
                "query": f"INSERT INTO {schema}.dst (id, name) VALUES ($1 + 1000, $2 || '!')",
            },
        },
        pg_dsn,
    )
    assert result.status == "success", result.error
    assert rows(pg_dsn, f"SELECT id, name FROM {schema}.dst ORDER BY id") == [(1001, "n1!"), (1002, "n2!")]


def test_empty_source_in_replace_mode_empties_the_target(pg_dsn: str, schema: str) -> None:
    rows(pg_dsn, f"INSERT INTO {schema}.dst (id, name) VALUES (1, 'x')")
    result = transfer(
        {
            "source": pg_source(schema, f"SELECT * FROM {schema}.src WHERE false"),
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
            "mode": "replace",
        },
        pg_dsn,
    )
    assert result.status == "success", result.error
    assert (result.data["rows_transferred"], result.data["chunks_processed"]) == (0, 0)
    assert rows(pg_dsn, f"SELECT count(*) FROM {schema}.dst") == [(0,)]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target": {"type": "postgres", "table": "t"}}, "'source' is required"),
        (
            {"source": {"type": "ftp"}, "target": {"type": "postgres", "table": "t"}},
            "source.type must be one of",
        ),
        (
            {"source": {"type": "postgres", "query": "SELECT 1"}, "target": {"type": "http"}},
            "target.type must be one of",
        ),
        (
            {"source": {"type": "postgres", "query": "SELECT 1"}, "target": {"type": "postgres"}},
            "target.table is required",
        ),
        (
            {
                "source": {"type": "postgres", "query": "SELECT 1"},
                "target": {"type": "postgres", "table": "t"},
                "mode": "merge-ish",
            },
            "mode must be one of append, replace, upsert",
        ),
        (
            {
                "source": {"type": "postgres", "query": "SELECT 1"},
                "target": {"type": "postgres", "table": "t"},
                "chunk_size": 0,
            },
            "chunk_size must be a positive integer",
        ),
    ],
)
def test_configuration_errors_are_clear(config: dict[str, Any], message: str, pg_dsn: str) -> None:
    result = transfer(config, pg_dsn)
    assert result.status == "error"
    assert result.failure_kind == "tool"
    assert message in (result.error or "")


def test_a_source_sql_error_names_the_query(pg_dsn: str, schema: str) -> None:
    result = transfer(
        {
            "source": pg_source(schema, "SELECT * FROM noetl_missing_table_q"),
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
        },
        pg_dsn,
    )
    assert result.status == "error"
    assert result.failure_kind == "tool"
    assert 'source query failed: relation "noetl_missing_table_q" does not exist' in (result.error or "")


def test_a_timeout_rolls_back(pg_dsn: str, schema: str) -> None:
    result = transfer(
        {
            "source": pg_source(schema, f"SELECT id, name FROM {schema}.src WHERE pg_sleep(0.2)::text = ''"),
            "target": {"type": "postgres", "auth": "pg", "table": f"{schema}.dst"},
            "chunk_size": 2,
            "timeout": 0.5,
        },
        pg_dsn,
    )
    assert (result.status, result.failure_kind, result.is_retryable) == ("error", "timeout", True)
    assert rows(pg_dsn, f"SELECT count(*) FROM {schema}.dst") == [(0,)]
