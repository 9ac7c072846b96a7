"""The http tool against the stub API, the postgres tool against the local PostgreSQL, and the stub itself."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from tests.support.stub_api import StubAPI

from noetl.errors import CredentialError
from noetl.secrets import MASK, masker
from noetl.tools.base import ToolContext, ToolResult, get_tool
from noetl.tools.http import HttpTool, close_clients
from noetl.tools.postgres import PostgresTool, close_pools, split_statements

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


class FakeCredentials:
    """The smallest CredentialResolver: a dict of alias -> {name, type, data}."""

    def __init__(self, **creds: Mapping[str, Any]) -> None:
        self.creds = creds

    def resolve(self, alias: str) -> Mapping[str, Any]:
        try:
            return self.creds[alias]
        except KeyError:
            raise CredentialError(f"credential '{alias}' not found") from None


def make_ctx(credentials: FakeCredentials | None = None, timeout: float | None = None) -> ToolContext:
    return ToolContext(execution_id=1, step="test", command_id="c1", credentials=credentials, timeout=timeout)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh loop, then close the clients and pools it opened."""

    async def main() -> T:
        try:
            return await factory()
        finally:
            await close_clients()
            await close_pools()

    return asyncio.run(main())


def http(config: dict[str, Any], ctx: ToolContext | None = None) -> ToolResult:
    return run(lambda: HttpTool().run(config, ctx or make_ctx()))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def get_json(url: str, method: str = "GET") -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ---------------------------------------------------------------------------------------------
# http tool


def test_registry_finds_network_tools() -> None:
    assert isinstance(get_tool("http"), HttpTool)
    assert isinstance(get_tool("postgres"), PostgresTool)


def test_http_get_json(stub_api: StubAPI) -> None:
    url = f"{stub_api.base_url}/api/v1/assessments"
    result = http({"url": url, "params": {"page": 2, "pageSize": 10}})
    assert result.status == "success", result.error
    assert result.http_status == 200
    data = result.data
    assert set(data) == {"status_code", "headers", "url", "elapsed", "body", "data"}
    assert data["status_code"] == 200
    assert data["body"] == data["data"]
    assert [item["id"] for item in data["body"]["data"]] == list(range(11, 21))
    assert data["body"]["paging"] == {"page": 2, "pageSize": 10, "total": 35, "hasMore": True}
    assert data["headers"]["content-type"].startswith("application/json")
    assert data["url"] == f"{url}?page=2&pageSize=10"
    assert isinstance(data["elapsed"], float)
    json.dumps(data)  # the whole result is JSON-safe


def test_http_params_headers_and_endpoint_alias(stub_api: StubAPI) -> None:
    result = http(
        {
            "endpoint": f"{stub_api.base_url}/api/v1/echo",
            "params": {"page": 1, "ratio": 0.5, "flag": True, "skip": None, "tags": ["a", "b"]},
            "headers": {"X-Trace": 7, "X-Empty": None},
        }
    )
    assert result.status == "success", result.error
    echo = result.data["data"]
    assert echo["method"] == "GET"
    assert echo["query"] == {"page": "1", "ratio": "0.5", "flag": "true", "tags": ["a", "b"]}
    assert echo["headers"]["x-trace"] == "7"
    assert "x-empty" not in echo["headers"]


def test_http_post_bodies(stub_api: StubAPI) -> None:
    url = f"{stub_api.base_url}/api/v1/echo"
    as_json = http({"url": url, "method": "post", "json": {"a": 1, "nested": {"b": [1, 2]}}})
    assert as_json.status == "success", as_json.error
    assert as_json.data["data"]["method"] == "POST"
    assert as_json.data["data"]["body"] == {"a": 1, "nested": {"b": [1, 2]}}
    assert as_json.data["data"]["headers"]["content-type"] == "application/json"

    raw = http(
        {"url": url, "method": "PUT", "body": "hello there", "headers": {"Content-Type": "text/plain"}}
    )
    assert raw.data["data"]["body"] == "hello there"

    body_map = http({"url": url, "method": "POST", "body": {"x": 1}})
    assert body_map.data["data"]["body"] == {"x": 1}

    form = http({"url": url, "method": "POST", "form": {"a": 1, "b": "x y"}})
    assert form.data["data"]["body"] == "a=1&b=x+y"
    assert form.data["data"]["headers"]["content-type"] == "application/x-www-form-urlencoded"

    payload = http({"url": url, "method": "PATCH", "payload": [1, 2, 3]})
    assert payload.data["data"]["body"] == [1, 2, 3]


def test_http_text_response(stub_api: StubAPI) -> None:
    result = http({"url": f"{stub_api.base_url}/api/v1/text"})
    assert result.status == "success"
    assert result.data["body"] == result.data["data"] == "plain text response"


def test_http_500_is_a_retryable_error(stub_api: StubAPI) -> None:
    url = f"{stub_api.base_url}/api/v1/status/500"
    result = http({"url": url})
    assert result.status == "error"
    assert result.retryable is True
    assert result.http_status == 500
    assert result.error == f'HTTP 500 from GET {url}: {{"status": 500}}'
    assert result.data["status_code"] == 500
    assert result.data["body"] == {"status": 500}


@pytest.mark.parametrize(("code", "retryable"), [(404, False), (400, False), (429, True), (503, True)])
def test_http_status_retryability(stub_api: StubAPI, code: int, retryable: bool) -> None:
    result = http({"url": f"{stub_api.base_url}/api/v1/status/{code}"})
    assert result.status == "error"
    assert result.http_status == code
    assert result.retryable is retryable


def test_http_connection_refused_is_clear() -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    result = http({"url": url})
    assert result.status == "error"
    assert result.retryable is True
    assert result.http_status is None
    assert result.error is not None
    assert result.error.startswith(f"cannot connect to {url}: connection refused")


def test_http_timeout_is_clear(stub_api: StubAPI) -> None:
    url = f"{stub_api.base_url}/api/v1/echo"
    started = time.monotonic()
    result = http({"url": url, "params": {"delay": 2}, "timeout": 0.3})
    assert time.monotonic() - started < 1.8
    assert result.status == "error"
    assert result.retryable is True
    assert result.error is not None
    assert result.error == f"request to GET {url} timed out after 0.3 s while waiting for the response"


def test_http_context_timeout_caps_request_timeout(stub_api: StubAPI) -> None:
    config = {"url": f"{stub_api.base_url}/api/v1/echo", "params": {"delay": 2}, "timeout_seconds": 30}
    result = http(config, make_ctx(timeout=0.3))
    assert result.status == "error"
    assert "timed out after 0.3 s" in (result.error or "")


def test_http_bad_config_is_reported_not_raised() -> None:
    missing = http({"method": "GET"})
    assert missing.status == "error" and "'url' is required" in (missing.error or "")
    bad_method = http({"url": "http://127.0.0.1:1/", "method": "FETCH"})
    assert bad_method.status == "error" and "unsupported method" in (bad_method.error or "")
    bad_url = http({"url": "127.0.0.1/no-scheme"})
    assert bad_url.status == "error" and "invalid URL" in (bad_url.error or "")


def test_http_auth_from_credentials(stub_api: StubAPI) -> None:
    creds = FakeCredentials(
        api_bearer={"name": "api_bearer", "type": "bearer", "data": {"token": "tok-bearer-12345"}},
        api_key={
            "name": "api_key",
            "type": "api_key",
            "data": {"api_key": "key-abcdef-999", "header": "X-Key"},
        },
        api_basic={
            "name": "api_basic",
            "type": "basic",
            "data": {"username": "ann", "password": "pw-basic-777"},
        },
        api_pg={"name": "api_pg", "type": "postgres", "data": {"db_host": "x"}},
    )
    ctx = make_ctx(creds)
    url = f"{stub_api.base_url}/api/v1/echo"

    bearer = http({"url": url, "auth": "api_bearer"}, ctx)
    assert bearer.data["data"]["headers"]["authorization"] == "Bearer tok-bearer-12345"
    key = http({"url": url, "auth": "api_key"}, ctx)
    assert key.data["data"]["headers"]["x-key"] == "key-abcdef-999"
    basic = http({"url": url, "auth": "api_basic"}, ctx)
    expected = "Basic " + base64.b64encode(b"ann:pw-basic-777").decode()
    assert basic.data["data"]["headers"]["authorization"] == expected
    for secret in ("tok-bearer-12345", "key-abcdef-999", "pw-basic-777"):
        assert masker.mask_text(f"x {secret} y") == f"x {MASK} y"

    explicit = http({"url": url, "auth": "api_bearer", "headers": {"Authorization": "Bearer mine"}}, ctx)
    assert explicit.data["data"]["headers"]["authorization"] == "Bearer mine"

    missing = http({"url": url, "auth": "nope"}, ctx)
    assert missing.status == "error"
    assert "credential 'nope' not found" in (missing.error or "")
    wrong = http({"url": url, "auth": "api_pg"}, ctx)
    assert wrong.status == "error"
    assert "type 'postgres'" in (wrong.error or "")


def test_http_shares_one_client_per_loop(stub_api: StubAPI) -> None:
    from noetl.tools import http as http_module

    async def twice() -> int:
        tool = HttpTool()
        await tool.run({"url": f"{stub_api.base_url}/health"}, make_ctx())
        first = http_module._client(True)
        await tool.run({"url": f"{stub_api.base_url}/health"}, make_ctx())
        assert http_module._client(True) is first
        return id(first)

    run(twice)


# ---------------------------------------------------------------------------------------------
# the stub itself


def test_stub_flaky_fails_once_then_succeeds(stub_api: StubAPI) -> None:
    base = stub_api.base_url
    url = f"{base}/api/v1/flaky?page=2&fail_on=2,3"
    assert get_json(url)[0] == 500
    status, body = get_json(url)
    assert status == 200
    assert [item["id"] for item in body["data"]] == list(range(11, 21))
    assert body["paging"]["hasMore"] is True
    assert get_json(f"{base}/api/v1/flaky?page=1&fail_on=2,3")[0] == 200
    assert get_json(f"{base}/api/v1/flaky/stats")[1]["calls"] == {"1": 1, "2": 2}
    assert get_json(f"{base}/api/v1/flaky/reset", "POST") == (200, {"status": "reset"})
    assert get_json(f"{base}/api/v1/flaky/stats")[1]["calls"] == {}
    assert get_json(url)[0] == 500  # fails again after a reset


def test_stub_http_tool_retry_sequence(stub_api: StubAPI) -> None:
    """What retry_simple_config.yaml relies on: 500 with http_status, then 200 on the retry."""
    config = {"url": f"{stub_api.base_url}/api/v1/flaky", "params": {"page": 1, "fail_on": "1"}}
    first = http(config)
    assert (first.status, first.http_status, first.retryable) == ("error", 500, True)
    second = http(config)
    assert (second.status, second.http_status) == ("success", 200)
    assert len(second.data["data"]["data"]) == 10


def test_stub_concurrency_probe_stats(stub_api: StubAPI) -> None:
    base = stub_api.base_url
    assert get_json(f"{base}/api/v1/concurrency/reset", "POST") == (200, {"status": "reset"})
    threads = [
        threading.Thread(
            target=get_json, args=(f"{base}/api/v1/concurrency/probe?delay_seconds=0.4&label=t",)
        )
        for _ in range(3)
    ]
    threads.append(threading.Thread(target=get_json, args=(f"{base}/api/v1/concurrency/probe?delay=0.4",)))
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    during = get_json(f"{base}/api/v1/concurrency/stats")[1]
    assert during["active"] >= 2
    for thread in threads:
        thread.join()
    stats = get_json(f"{base}/api/v1/concurrency/stats")[1]
    assert stats["started"] == 4 and stats["completed"] == 4 and stats["active"] == 0
    assert stats["max_active"] >= 2
    get_json(f"{base}/api/v1/concurrency/reset", "POST")
    assert get_json(f"{base}/api/v1/concurrency/stats")[1] == {
        "started": 0,
        "completed": 0,
        "active": 0,
        "max_active": 0,
    }


def test_stub_pagination_shapes(stub_api: StubAPI) -> None:
    base = stub_api.base_url
    users: list[int] = []
    has_more_seen: list[bool] = []
    offset = 0
    while True:
        body = get_json(f"{base}/api/v1/users?offset={offset}&limit=10")[1]
        assert body["users"] == body["data"]
        assert body["pagination"] == {
            "offset": offset,
            "limit": 10,
            "total": 35,
            "has_more": body["has_more"],
        }
        users += [u["id"] for u in body["users"]]
        has_more_seen.append(body["has_more"])
        if not body["has_more"]:
            break
        offset += 10
    assert users == list(range(1, 36))
    assert has_more_seen == [True, True, True, False]
    assert body["users"][0] == {"id": 31, "name": "User 31", "email": "user31@example.com"}

    last = get_json(f"{base}/api/v1/assessments?page=4&pageSize=10")[1]
    assert [i["id"] for i in last["data"]] == [31, 32, 33, 34, 35]
    assert last["paging"] == {"page": 4, "pageSize": 10, "total": 35, "hasMore": False}
    assert last["data"][0] == {"id": 31, "name": "Item 31", "value": 310}

    events: list[int] = []
    cursor = ""
    for _ in range(10):
        body = get_json(f"{base}/api/v1/events?limit=15&cursor={cursor}")[1]
        events += [e["id"] for e in body["data"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert events == list(range(1, 36))
    assert get_json(f"{base}/api/v1/events?cursor=!!bad")[0] == 400

    assert get_json(f"{base}/health") == (200, {"status": "ok"})
    assert get_json(f"{base}/api/v1/status/418")[0] == 418
    status, body = get_json(f"{base}/nowhere")
    assert status == 404 and body["error"] == "not found"


def test_stub_runs_standalone() -> None:
    port = closed_port()
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.stub_api", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"http://127.0.0.1:{port}" in line, line + (proc.stderr.read() if proc.stderr else "")
            assert get_json(f"http://127.0.0.1:{port}/health") == (200, {"status": "ok"})
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# postgres tool


PG_CRED = {
    "name": "pg_test",
    "type": "postgres",
    "data": {
        "db_host": "127.0.0.1",
        "db_port": 5432,
        "db_user": "postgres",
        "db_password": "",
        "db_name": "test",
    },
}


@pytest.fixture
def pg_ctx(pg_dsn: str) -> ToolContext:
    return make_ctx(FakeCredentials(pg_test=PG_CRED))


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    """A unique table name, dropped afterwards."""
    name = f"noetl_tt_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{name}")


def pg(command: str, ctx: ToolContext, **extra: Any) -> ToolResult:
    return run(lambda: PostgresTool().run({"auth": "pg_test", "command": command, **extra}, ctx))


def test_postgres_select_values_are_json_safe(pg_ctx: ToolContext, table: str) -> None:
    setup = pg(
        f"""
        CREATE TABLE public.{table} (
          id int, price numeric(10,2), qty numeric, born date, seen timestamp, seen_tz timestamptz,
          uid uuid, doc jsonb, raw bytea, span interval, tags text[], at time
        );
        INSERT INTO public.{table} VALUES
          (1, 12.50, 3, '2024-02-29', '2024-02-29 13:45:00', '2024-02-29 13:45:00+00',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": [1, 2.5, null], "b": {{"c": true}}}}',
           '\\x0102ff', '1 day 02:00:00', ARRAY['x', 'y'], '08:30:00');
        """,
        pg_ctx,
    )
    assert setup.status == "success", setup.error
    result = pg(f"SELECT * FROM public.{table}", pg_ctx)
    assert result.status == "success", result.error
    data = result.data
    assert isinstance(data, dict)
    assert data["row_count"] == 1
    assert data["columns"] == [
        "id",
        "price",
        "qty",
        "born",
        "seen",
        "seen_tz",
        "uid",
        "doc",
        "raw",
        "span",
        "tags",
        "at",
    ]
    row = data["rows"][0]
    assert row["price"] == 12.5 and isinstance(row["price"], float)
    assert row["qty"] == 3 and isinstance(row["qty"], int)
    assert row["born"] == "2024-02-29"
    assert row["seen"] == "2024-02-29T13:45:00"
    assert row["seen_tz"].startswith("2024-02-29T") and row["seen_tz"][-6] in "+-"
    assert row["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert row["doc"] == {"a": [1, 2.5, None], "b": {"c": True}}
    assert base64.b64decode(row["raw"]) == b"\x01\x02\xff"
    assert row["span"] == 93600.0  # seconds (sqljson: intervals are numbers of seconds)
    assert row["tags"] == ["x", "y"]
    assert row["at"] == "08:30:00"
    assert json.loads(json.dumps(data)) == data


def test_postgres_multi_statement_script(pg_ctx: ToolContext, table: str) -> None:
    script = f"""
        -- a comment with a ; semicolon
        DROP TABLE IF EXISTS public.{table};
        CREATE TABLE public.{table} (id serial PRIMARY KEY, name text, note text DEFAULT 'a;b');
        /* block comment; with semicolon */
        INSERT INTO public.{table} (name) VALUES ('one'), ('two;2'), ($$three;'3'$$);
        UPDATE public.{table} SET note = E'it\\'s; fine' WHERE id > 1;
        SELECT count(*) AS n FROM public.{table};
        DO $body$ BEGIN RAISE NOTICE 'inside; a block'; END $body$;
        SELECT id, name, note FROM public.{table} ORDER BY id;
        -- trailing comment only;
    """
    result = pg(script, pg_ctx)
    assert result.status == "success", result.error
    data = result.data
    assert data["columns"] == ["id", "name", "note"]
    assert data["rows"] == [
        {"id": 1, "name": "one", "note": "a;b"},
        {"id": 2, "name": "two;2", "note": "it's; fine"},
        {"id": 3, "name": "three;'3'", "note": "it's; fine"},
    ]
    assert data["row_count"] == 3
    assert data["affected_rows"] == 5
    assert [s["command"] for s in data["statements"]] == [
        "DROP TABLE",
        "CREATE TABLE",
        "INSERT",
        "UPDATE",
        "SELECT",
        "DO",
        "SELECT",
    ]
    assert data["statements"][2] == {"command": "INSERT", "row_count": 3}
    assert data["statements"][4] == {"command": "SELECT", "row_count": 1}


def test_postgres_non_query_result_has_empty_rows(pg_ctx: ToolContext, table: str) -> None:
    result = pg(f"CREATE TABLE public.{table} (id int); INSERT INTO public.{table} VALUES (1), (2)", pg_ctx)
    assert result.status == "success", result.error
    assert result.data["rows"] == [] and result.data["columns"] == []
    assert result.data["row_count"] == 0
    assert result.data["affected_rows"] == 2


def test_postgres_step_is_all_or_nothing(pg_ctx: ToolContext, table: str) -> None:
    assert pg(f"CREATE TABLE public.{table} (id int PRIMARY KEY)", pg_ctx).ok
    failed = pg(f"INSERT INTO public.{table} VALUES (1); INSERT INTO public.{table} VALUES (1)", pg_ctx)
    assert failed.status == "error"
    assert failed.error is not None
    assert "(SQLSTATE 23505) in statement 2 of 2" in failed.error
    assert "duplicate key value violates unique constraint" in failed.error
    assert "DETAIL: Key (id)=(1) already exists." in failed.error
    assert "rolled back" in failed.error
    assert failed.retryable is False
    count = pg(f"SELECT count(*) AS n FROM public.{table}", pg_ctx)
    assert count.data["rows"] == [{"n": 0}]

    # transaction: false commits statement by statement
    partial = pg(
        f"INSERT INTO public.{table} VALUES (1); INSERT INTO public.{table} VALUES (1)",
        pg_ctx,
        transaction=False,
    )
    assert partial.status == "error"
    assert "statements 1-1 were committed" in (partial.error or "")
    assert pg(f"SELECT count(*) AS n FROM public.{table}", pg_ctx).data["rows"] == [{"n": 1}]


def test_postgres_syntax_error_message(pg_ctx: ToolContext) -> None:
    result = pg("SELECT\n  COUNT(*) as row_count,\nFROM patient_info;\n", pg_ctx)
    assert result.status == "error"
    assert result.error is not None
    assert result.error.startswith('syntax error at or near "FROM" (SQLSTATE 42601) in statement 1')
    assert result.retryable is False


def test_postgres_params(pg_ctx: ToolContext) -> None:
    named = pg("SELECT %(a)s::int + 1 AS x, %(b)s::jsonb AS doc", pg_ctx, params={"a": 41, "b": {"k": [1]}})
    assert named.status == "success", named.error
    assert named.data["rows"] == [{"x": 42, "doc": {"k": [1]}}]
    dollar = pg("SELECT $2::text || '%' AS t, $1::int AS n", pg_ctx, params=[7, "50"])
    assert dollar.status == "success", dollar.error
    assert dollar.data["rows"] == [{"t": "50%", "n": 7}]
    too_many = pg("SELECT 1; SELECT 2", pg_ctx, params=[1])
    assert too_many.status == "error"
    assert "single SQL statement" in (too_many.error or "")


def test_postgres_inline_connection_and_list_sql(pg_dsn: str) -> None:
    result = run(
        lambda: PostgresTool().run(
            {"connection": pg_dsn, "sql": ["SELECT 1 AS a", "SELECT 2 AS b"]}, make_ctx()
        )
    )
    assert result.status == "success", result.error
    assert result.data["rows"] == [{"b": 2}]
    assert len(result.data["statements"]) == 2


def test_postgres_pool_is_reused(pg_ctx: ToolContext) -> None:
    from noetl.tools import pgconn as pg_module

    async def go() -> None:
        tool = PostgresTool()
        config = {"auth": "pg_test", "command": "SELECT 1 AS test_value"}
        first = await tool.run(config, pg_ctx)
        assert first.data["rows"] == [{"test_value": 1}]
        await asyncio.gather(*(tool.run(config, pg_ctx) for _ in range(5)))
        state = pg_module._loop_pools[asyncio.get_running_loop()]
        assert len(state.pools) == 1

    run(go)


def test_postgres_connection_refused_hides_password() -> None:
    password = "pw-very-secret-4242"
    creds = FakeCredentials(
        pg_bad={
            "name": "pg_bad",
            "type": "postgres",
            "data": {
                "db_host": "127.0.0.1",
                "db_port": 1,
                "db_user": "ann",
                "db_password": password,
                "db_name": "x",
            },
        }
    )
    result = run(lambda: PostgresTool().run({"auth": "pg_bad", "command": "SELECT 1"}, make_ctx(creds)))
    assert result.status == "error"
    assert result.retryable is True
    assert result.error is not None
    assert "127.0.0.1:1" in result.error
    assert "credential 'pg_bad'" in result.error
    assert "connection refused" in result.error
    assert password not in result.error
    assert masker.mask_text(password) == MASK


def test_postgres_missing_credential() -> None:
    result = run(
        lambda: PostgresTool().run({"auth": "pg_x", "command": "SELECT 1"}, make_ctx(FakeCredentials()))
    )
    assert result.status == "error"
    assert result.retryable is False
    assert "credential 'pg_x' not found; add it with: noetl credential add pg_x --type postgres" in (
        result.error or ""
    )


def test_postgres_config_errors() -> None:
    no_sql = run(lambda: PostgresTool().run({"connection": "postgresql://x@127.0.0.1:1/db"}, make_ctx()))
    assert no_sql.status == "error" and "'command'" in (no_sql.error or "")
    only_comments = run(
        lambda: PostgresTool().run(
            {"connection": "postgresql://x@127.0.0.1:1/db", "command": "-- nothing;"}, make_ctx()
        )
    )
    assert only_comments.status == "error" and "empty" in (only_comments.error or "")
    no_conn = run(lambda: PostgresTool().run({"command": "SELECT 1"}, make_ctx()))
    assert no_conn.status == "error" and "no connection" in (no_conn.error or "")


def test_split_statements() -> None:
    sql = """
    -- leading comment; with semicolon
    SELECT 'a;b', "odd;name" FROM t;
    /* nested /* comment; */ still; comment */
    CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql;
    SELECT E'x\\';y', 'it''s;' ;
    ;;
    DO $$ BEGIN PERFORM 1; END $$
    """
    assert split_statements(sql) == [
        "SELECT 'a;b', \"odd;name\" FROM t",
        "CREATE FUNCTION f() RETURNS int AS $fn$ SELECT 1; $fn$ LANGUAGE sql",
        "SELECT E'x\\';y', 'it''s;'",
        "DO $$ BEGIN PERFORM 1; END $$",
    ]
    assert split_statements("-- only\n/* comments */ ; ;") == []
    assert split_statements("SELECT $1, a$b$c FROM t; SELECT 2") == ["SELECT $1, a$b$c FROM t", "SELECT 2"]


def test_postgres_statement_timeout_from_context(pg_dsn: str) -> None:
    ctx = make_ctx(FakeCredentials(pg_test=PG_CRED), timeout=0.3)
    result = run(lambda: PostgresTool().run({"auth": "pg_test", "command": "SELECT pg_sleep(3)"}, ctx))
    assert result.status == "error"
    assert "canceling statement due to statement timeout (SQLSTATE 57014)" in (result.error or "")
    assert result.retryable is True


def test_postgres_session_settings_do_not_leak(pg_ctx: ToolContext) -> None:
    async def go() -> list[Any]:
        tool = PostgresTool()
        with_schema = await tool.run(
            {"auth": "pg_test", "command": "SHOW search_path", "schema": "pg_catalog"}, pg_ctx
        )
        plain = await tool.run({"auth": "pg_test", "command": "SHOW search_path"}, pg_ctx)
        return [with_schema.data["rows"][0]["search_path"], plain.data["rows"][0]["search_path"]]

    scoped, after = run(go)
    assert scoped == "pg_catalog"
    assert after != "pg_catalog"


def test_duckdb_attaches_postgres_through_a_credential(pg_dsn: str) -> None:
    """`auth: <alias>` on a duckdb tool ATTACHes that PostgreSQL database under the alias."""
    import uuid

    import psycopg

    from noetl.tools.duckdb import DuckDBTool

    table = f"duck_attach_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE public.{table} (id int, name text)")
        conn.execute(f"INSERT INTO public.{table} VALUES (1, 'a'), (2, 'b')")

    class Creds:
        def resolve(self, alias: str) -> dict[str, Any]:
            assert alias == "pg_local"
            return {
                "name": alias,
                "type": "postgres",
                "data": {
                    "db_host": "127.0.0.1",
                    "db_port": 5432,
                    "db_user": "postgres",
                    "db_password": "unused-by-trust",
                    "db_name": "test",
                },
            }

    try:
        ctx = ToolContext(execution_id=1, step="s", command_id="c", credentials=Creds())
        config = {"auth": "pg_local", "query": f"SELECT id, name FROM pg_local.public.{table} ORDER BY id"}
        result = asyncio.run(DuckDBTool().run(config, ctx))
        assert result.status == "success", result.error
        assert result.data == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
        wrong = asyncio.run(DuckDBTool().run({**config, "auth": {"x-y": "pg_local"}}, ctx))
        assert wrong.status == "error" and "cannot attach a database named" in (wrong.error or "")
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE public.{table}")


# ---------------------------------------------------------------------------------------------
# failure kinds (output.error.kind in policy rules) and per-statement postgres results


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (500, "server_error", True),
        (503, "server_error", True),
        (429, "rate_limit", True),
        (401, "auth", False),
        (403, "auth", False),
        (404, "not_found", False),
        (400, "client_error", False),
        (422, "client_error", False),
        (408, "timeout", True),
    ],
)
def test_http_error_kinds(stub_api: StubAPI, code: int, kind: str, retryable: bool) -> None:
    result = http({"url": f"{stub_api.base_url}/api/v1/status/{code}"})
    assert (result.status, result.http_status) == ("error", code)
    assert (result.failure_kind, result.is_retryable, result.retryable) == (kind, retryable, retryable)


def test_http_transport_error_kinds(stub_api: StubAPI) -> None:
    slow = http({"url": f"{stub_api.base_url}/api/v1/echo", "params": {"delay": 2}, "timeout": 0.3})
    assert (slow.failure_kind, slow.is_retryable) == ("timeout", True)
    refused = http({"url": f"http://127.0.0.1:{closed_port()}/x"})
    assert (refused.failure_kind, refused.is_retryable) == ("connection", True)
    config = http({"url": "ftp://example.invalid/x"})
    assert (config.failure_kind, config.is_retryable) == ("tool", False)
    ok = http({"url": f"{stub_api.base_url}/health"})
    assert (ok.failure_kind, ok.is_retryable) == (None, False)


def test_postgres_error_kinds(pg_ctx: ToolContext, pg_dsn: str) -> None:
    bad_sql = pg("SELECT * FROM noetl_no_such_table_k", pg_ctx)
    assert (bad_sql.failure_kind, bad_sql.is_retryable) == ("tool", False)
    slow = run(
        lambda: PostgresTool().run(
            {"auth": "pg_test", "command": "SELECT pg_sleep(3)", "timeout": 0.3}, pg_ctx
        )
    )
    assert (slow.status, slow.failure_kind, slow.is_retryable) == ("error", "timeout", True)
    nobody = {**PG_CRED, "data": {**PG_CRED["data"], "db_user": "noetl_no_such_role_k"}}
    role = run(
        lambda: PostgresTool().run(
            {"auth": "pg_test", "command": "SELECT 1"}, make_ctx(FakeCredentials(pg_test=nobody))
        )
    )
    assert (role.failure_kind, role.is_retryable) == ("auth", False)
    assert "noetl_no_such_role_k" in (role.error or "")
    no_db = {**PG_CRED, "data": {**PG_CRED["data"], "db_name": "noetl_no_such_db_k"}}
    database = run(
        lambda: PostgresTool().run(
            {"auth": "pg_test", "command": "SELECT 1"}, make_ctx(FakeCredentials(pg_test=no_db))
        )
    )
    assert (database.failure_kind, database.is_retryable) == ("not_found", False)
    refused = {**PG_CRED, "data": {**PG_CRED["data"], "db_port": closed_port()}}
    down = run(
        lambda: PostgresTool().run(
            {"auth": "pg_test", "command": "SELECT 1"}, make_ctx(FakeCredentials(pg_test=refused))
        )
    )
    assert (down.failure_kind, down.is_retryable) == ("connection", True)
    missing = run(lambda: PostgresTool().run({"auth": "pg_nope", "command": "SELECT 1"}, pg_ctx))
    assert (missing.failure_kind, missing.is_retryable) == ("tool", False)


def test_postgres_command_results_per_statement(pg_ctx: ToolContext, table: str) -> None:
    script = f"""
        CREATE TABLE public.{table} (id int PRIMARY KEY, name text);
        INSERT INTO public.{table} VALUES (1, 'a'), (2, 'b');
        SELECT id FROM public.{table} WHERE id > 5;
        DELETE FROM public.{table} WHERE id = 1;
        DO $$ BEGIN PERFORM 1; END $$;
        INSERT INTO public.{table} VALUES (3, 'c') RETURNING id, name;
        SELECT id, name FROM public.{table} ORDER BY id
    """
    result = pg(script, pg_ctx, transaction=False)
    assert result.status == "success", result.error
    data = result.data
    assert data["command_0"] == {
        "status": "success",
        "row_count": 0,
        "message": "CREATE TABLE: 0 rows affected",
    }
    assert data["command_1"] == {"status": "success", "row_count": 2, "message": "INSERT: 2 rows affected"}
    assert data["command_2"] == {"status": "success", "rows": [], "row_count": 0, "columns": ["id"]}
    assert data["command_3"] == {"status": "success", "row_count": 1, "message": "DELETE: 1 row affected"}
    assert data["command_4"] == {"status": "success", "row_count": 0, "message": "DO: 0 rows affected"}
    assert data["command_5"] == {
        "status": "success",
        "rows": [{"id": 3, "name": "c"}],
        "row_count": 1,
        "columns": ["id", "name"],
    }
    assert data["command_6"]["rows"] == [{"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    assert "command_7" not in data
    # the top-level fields are unchanged: the last statement that returned rows, summed counts
    assert data["rows"] == data["command_6"]["rows"] and data["row_count"] == 2
    assert data["columns"] == ["id", "name"]
    assert data["affected_rows"] == 4
    assert len(data["statements"]) == 7
    single = pg("SELECT %(a)s::int AS a", pg_ctx, params={"a": 5})
    assert single.data["command_0"] == {
        "status": "success",
        "rows": [{"a": 5}],
        "row_count": 1,
        "columns": ["a"],
    }
