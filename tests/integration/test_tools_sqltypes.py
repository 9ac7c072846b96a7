"""Item 3: every DuckDB and PostgreSQL column type that maps to JSON, with the exact JSON value.

The rules (noetl.tools.sqljson) are the same for both engines: timestamps with a zone in UTC,
intervals in seconds, decimals as numbers, binary as base64, JSON parsed, arrays as lists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import run_playbook
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key, pg_credential_data

from noetl.errors import CredentialError
from noetl.tools.base import ToolContext, ToolResult
from noetl.tools.duckdb import DuckDBTool
from noetl.tools.postgres import PostgresTool, close_pools

UID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"

# (SQL expression, expected JSON value) - the same literal in both engines where they agree.
COMMON = [
    ("TIMESTAMP '2024-02-29 13:45:00.25'", "2024-02-29T13:45:00.250000"),
    ("TIMESTAMP '2024-02-29 13:45:00'", "2024-02-29T13:45:00"),
    ("TIMESTAMPTZ '2024-02-29 13:45:00+02'", "2024-02-29T11:45:00+00:00"),
    ("DATE '2024-02-29'", "2024-02-29"),
    ("TIME '08:30:05'", "08:30:05"),
    ("INTERVAL '1 day 2 hours'", 93600.0),
    ("INTERVAL '90 seconds'", 90.0),
    ("CAST(12.50 AS DECIMAL(10,2))", 12.5),
    ("CAST(10 AS DECIMAL(10,2))", 10),
    ("CAST(-0.125 AS DECIMAL(10,3))", -0.125),
    (f"CAST('{UID}' AS UUID)", UID),
    ("CAST(1.5 AS REAL)", 1.5),
    ("CAST(2.25 AS DOUBLE PRECISION)", 2.25),
    ("CAST('NaN' AS DOUBLE PRECISION)", None),
    ("CAST('Infinity' AS DOUBLE PRECISION)", None),
    ("CAST(9223372036854775807 AS BIGINT)", 9223372036854775807),
    ("CAST(7 AS SMALLINT)", 7),
    ("TRUE", True),
    ("CAST(NULL AS VARCHAR)", None),
    ("'héllo'", "héllo"),
]
DUCKDB_ONLY = [
    ("CAST('abc' AS BLOB)", base64.b64encode(b"abc").decode()),
    ("CAST('\\xFF\\x00' AS BLOB)", base64.b64encode(b"\xff\x00").decode()),
    ('CAST(\'{"a": [1, 2.5, null], "b": {"c": true}}\' AS JSON)', {"a": [1, 2.5, None], "b": {"c": True}}),
    ("CAST('[1, \"x\"]' AS JSON)", [1, "x"]),
    ("[CAST('{\"q\": 1}' AS JSON)]", [{"q": 1}]),
    ("{'j': CAST('{\"z\": 2}' AS JSON), 'n': 1}", {"j": {"z": 2}, "n": 1}),
    ("MAP {'k': CAST('[1]' AS JSON)}", {"k": [1]}),
    ("[1, 2, 3]", [1, 2, 3]),
    ("[[1, 2], [3]]", [[1, 2], [3]]),
    ("['a', NULL]", ["a", None]),
    ("{'x': 1, 'y': 'z'}", {"x": 1, "y": "z"}),
    ("MAP {'k': 1}", {"k": 1}),
    ("[TIMESTAMPTZ '2024-01-02 03:04:05+02']", ["2024-01-02T01:04:05+00:00"]),
    ("CAST(170141183460469231731687303715884105727 AS HUGEINT)", "170141183460469231731687303715884105727"),
    ("CAST(18446744073709551615 AS UBIGINT)", "18446744073709551615"),
    ("TIMETZ '03:04:05+02'", "03:04:05+02:00"),
    ("INTERVAL 14 MONTH", 14 * 30 * 86400.0),
    ("CAST('a' AS ENUM('a', 'b'))", "a"),
    ("CAST('101' AS BIT)", "101"),
    ("CAST('NaN' AS DOUBLE)", None),
]
POSTGRES_ONLY = [
    ("'\\x0102ff'::bytea", base64.b64encode(b"\x01\x02\xff").decode()),
    ('\'{"a": [1, 2.5, null], "b": {"c": true}}\'::jsonb', {"a": [1, 2.5, None], "b": {"c": True}}),
    ("'{\"a\": 1}'::json", {"a": 1}),
    ("'[1, \"x\"]'::jsonb", [1, "x"]),
    ("ARRAY['{\"q\": 1}'::jsonb]", [{"q": 1}]),
    ("ARRAY[1, 2, 3]", [1, 2, 3]),
    ("ARRAY[ARRAY[1, 2], ARRAY[3, 4]]", [[1, 2], [3, 4]]),
    ("ARRAY['x', NULL]", ["x", None]),
    ("ARRAY['2024-01-02 03:04:05+02'::timestamptz]", ["2024-01-02T01:04:05+00:00"]),
    ("ARRAY['\\x00ff'::bytea]", [base64.b64encode(b"\x00\xff").decode()]),
    ("ARRAY[1.5, 2]::numeric[]", [1.5, 2]),
    ("'03:04:05+02'::timetz", "03:04:05+02:00"),
    ("'14 months'::interval", 425 * 86400.0),  # psycopg counts a year as 365 days
    ("'NaN'::numeric", None),
    ("'infinity'::timestamp", "infinity"),
    ("'-infinity'::timestamptz", "-infinity"),
    ("'infinity'::date", "infinity"),
    ("'192.168.0.1'::inet", "192.168.0.1"),
    ("'10.0.0.0/8'::cidr", "10.0.0.0/8"),
    ("'12.34'::money", "$12.34"),
    ("B'101'::bit(3)", "101"),
    ("'x'::char(3)", "x  "),
    ("12345678901234567890::numeric", "12345678901234567890"),  # beyond 64 bits: text
    ("ROW(1, 'a')", ["1", "a"]),  # an anonymous record: its fields as text
]


def _aliased(cases: list[tuple[str, Any]]) -> str:
    return ", ".join(f"{expr} AS c{i}" for i, (expr, _) in enumerate(cases))


def _expected(cases: list[tuple[str, Any]]) -> dict[str, Any]:
    return {f"c{i}": value for i, (_, value) in enumerate(cases)}


def _ctx(credentials: Any = None) -> ToolContext:
    return ToolContext(execution_id=1, step="types", command_id="c", credentials=credentials)


def test_duckdb_values_map_to_json() -> None:
    cases = COMMON + DUCKDB_ONLY
    result = asyncio.run(DuckDBTool().run({"query": f"SELECT {_aliased(cases)}"}, _ctx()))
    assert result.status == "success", result.error
    row = result.data[0]
    for name, expected in _expected(cases).items():
        assert row[name] == expected, (name, cases[int(name[1:])][0], row[name])
    assert json.loads(json.dumps(result.data)) == result.data


def test_duckdb_now_is_a_utc_timestamp_without_pytz_errors() -> None:
    result = asyncio.run(DuckDBTool().run({"query": "SELECT NOW() AS ts, current_date AS d"}, _ctx()))
    assert result.status == "success", result.error
    [row] = result.data
    assert row["ts"].endswith("+00:00") and row["ts"][10] == "T"
    assert row["ts"][:10] == row["d"] or row["ts"][:10] > row["d"]  # UTC may be a day ahead


def test_duckdb_timezone_setting_does_not_change_the_instant() -> None:
    sql = "SET TimeZone = 'America/New_York'; SELECT TIMESTAMPTZ '2024-06-01 12:00:00+00' AS ts"
    result = asyncio.run(DuckDBTool().run({"query": sql}, _ctx()))
    assert result.status == "success", result.error
    assert result.data == [{"ts": "2024-06-01T12:00:00+00:00"}]


class _Creds:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data

    def resolve(self, alias: str) -> Mapping[str, Any]:
        if alias != "pg":
            raise CredentialError(f"credential '{alias}' not found")
        return {"name": "pg", "type": "postgres", "data": self.data}


def pg(config: dict[str, Any], pg_dsn: str) -> ToolResult:
    async def go() -> ToolResult:
        try:
            return await PostgresTool().run(
                {"auth": "pg", **config}, _ctx(_Creds(pg_credential_data(pg_dsn)))
            )
        finally:
            await close_pools()

    return asyncio.run(go())


def test_postgres_values_map_to_json(pg_dsn: str) -> None:
    cases = [(expr.replace("DOUBLE PRECISION", "float8"), value) for expr, value in COMMON] + POSTGRES_ONLY
    result = pg({"command": f"SELECT {_aliased(cases)}"}, pg_dsn)
    assert result.status == "success", result.error
    row = result.data["rows"][0]
    for name, expected in _expected(cases).items():
        assert row[name] == expected, (name, cases[int(name[1:])][0], row[name])
    assert result.data["command_0"]["rows"] == [row]
    assert json.loads(json.dumps(result.data)) == result.data


def test_postgres_session_time_zone_does_not_change_the_instant(pg_dsn: str) -> None:
    sql = "SET TIME ZONE 'Asia/Tokyo'; SELECT '2024-06-01 12:00:00+00'::timestamptz AS ts, now() AS n"
    result = pg({"command": sql}, pg_dsn)
    assert result.status == "success", result.error
    [row] = result.data["rows"]
    assert row["ts"] == "2024-06-01T12:00:00+00:00"
    assert row["n"].endswith("+00:00")


def test_duckdb_now_in_a_playbook(tmp_path: Path) -> None:
    """The issue's failing case: `SELECT NOW() AS ts` in a duckdb step, read by a later step."""
    path = tmp_path / "now.yaml"
    path.write_text(
        """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: duck_now, path: tests/tools/duck_now}
workflow:
  - step: start
    tool: {kind: duckdb, query: "SELECT NOW() AS ts, TIMESTAMPTZ '2024-01-02 03:04:05+02' AS fixed"}
    next: [check]
  - step: check
    tool:
      kind: python
      input: {rows: "{{ start }}"}
      code: |
        from datetime import datetime
        ts = datetime.fromisoformat(rows[0]["ts"])
        result = {"aware": ts.utcoffset() is not None, "fixed": rows[0]["fixed"]}
""",
        encoding="utf-8",
    )
    outcome = run_playbook(path, f"sqlite:///{tmp_path}/noetl.db", env={KEY_ENV: fresh_encryption_key()})
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.json["steps"]["check"]["result"] == {"aware": True, "fixed": "2024-01-02T01:04:05+00:00"}


def test_postgres_types_in_a_playbook(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # inherited by the `noetl` subprocesses
    store = f"sqlite:///{tmp_path}/noetl.db"
    table = f"noetl_types_{uuid.uuid4().hex[:10]}"
    add_credential(store, "pg_local", "postgres", pg_credential_data(pg_dsn))
    path = tmp_path / "types.yaml"
    path.write_text(
        f"""\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: pg_types, path: tests/tools/pg_types}}
workflow:
  - step: start
    tool:
      kind: postgres
      auth: pg_local
      command: |
        CREATE TEMP TABLE {table} (at timestamptz, born date, raw bytea, doc jsonb, span interval, price numeric(8,2));
        INSERT INTO {table} VALUES ('2024-02-29 13:45:00+01', '2024-02-29', '\\x6869', '{{"k": [1]}}', '36 hours', 9.99);
        SELECT * FROM {table}
    next: [check]
  - step: check
    tool:
      kind: python
      input: {{row: "{{{{ start.command_2.rows[0] }}}}"}}
      code: |
        import base64
        result = {{**row, "raw": base64.b64decode(row["raw"]).decode()}}
""",
        encoding="utf-8",
    )
    outcome = run_playbook(path, store)
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert outcome.json["steps"]["check"]["result"] == {
        "at": "2024-02-29T12:45:00+00:00",
        "born": "2024-02-29",
        "raw": "hi",
        "doc": {"k": [1]},
        "span": 129600.0,
        "price": 9.99,
    }
