"""Small playbooks for the tool items of the "real NoETL playbooks" issue, run as a user runs
them: locally with `noetl run --json`, and (items 2, 4, 10) on a `noetl server start` with two
`noetl worker start` processes (PostgreSQL store in a schema of its own, workers polling).

2  postgres `command_<i>`          4  error kinds in policy rules    8  `libs:` as pip names
10 `kind: transfer`                11 `kind: artifact` + result_ref 12 SQL/Python from script files
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from tests.support.cli import CliResult, noetl, run_playbook
from tests.support.cluster import Cluster, ServerProcess, events_of, post_json, worker_of
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key, pg_credential_data
from tests.support.stub_api import StubAPI

RUN_TIMEOUT = 180.0
HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\n"

# ------------------------------------------------------------------------------------ playbooks

PG_COMMANDS = (
    HEADER
    + """\
metadata: {name: tools_pg_commands, path: tests/tools/pg_commands}
workload: {schema: public}
workflow:
  - step: start
    tool:
      kind: postgres
      auth: pg_local
      command: |
        CREATE TABLE {{ workload.schema }}.items (id int PRIMARY KEY, name text);
        INSERT INTO {{ workload.schema }}.items VALUES (1, 'a'), (2, 'b'), (3, 'c');
        SELECT id, name FROM {{ workload.schema }}.items ORDER BY id;
        UPDATE {{ workload.schema }}.items SET name = upper(name) WHERE id < 3;
        SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) AS names FROM {{ workload.schema }}.items
    next: [check]
  - step: check
    tool:
      kind: python
      input:
        created: "{{ start.command_0 }}"
        inserted: "{{ start.command_1.row_count }}"
        rows: "{{ start.command_2.rows }}"
        columns: "{{ start.command_2.columns }}"
        updated: "{{ start.command_3 }}"
        last: "{{ start.command_4.rows[0] }}"
        top: "{{ start.rows }}"
      code: |
        result = dict(created=created, inserted=inserted, rows=rows, columns=columns,
                      updated=updated, last=last, top=top)
"""
)
PG_COMMANDS_EXPECTED = {
    "created": {"status": "success", "row_count": 0, "message": "CREATE TABLE: 0 rows affected"},
    "inserted": 3,
    "rows": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    "columns": ["id", "name"],
    "updated": {"status": "success", "row_count": 2, "message": "UPDATE: 2 rows affected"},
    "last": {"n": 3, "names": "A,B,c"},
    "top": [{"n": 3, "names": "A,B,c"}],
}


def _kind_step(name: str, tool: str, kind: str, retryable: bool, nxt: str) -> str:
    """A step whose failure must carry `kind`: the matching rule records it, anything else fails."""
    flag = "true" if retryable else "false"
    return f"""\
  - step: {name}
    tool:
{tool}
      spec:
        policy:
          rules:
            - when: "{{{{ output.error.kind == '{kind}' and output.error.retryable == {flag} }}}}"
              then: {{do: continue, set: {{ctx.k_{name}: "{{{{ output.error.kind }}}}"}}}}
            - else: {{then: {{do: fail}}}}
    next: [{nxt}]
"""


KIND_CASES: list[tuple[str, str, str, bool]] = [
    ("limited", "kind: http\n      url: '{{ workload.api }}/api/v1/status/429'", "rate_limit", True),
    ("denied", "kind: http\n      url: '{{ workload.api }}/api/v1/status/401'", "auth", False),
    ("forbidden", "kind: http\n      url: '{{ workload.api }}/api/v1/status/403'", "auth", False),
    ("missing", "kind: http\n      url: '{{ workload.api }}/api/v1/status/404'", "not_found", False),
    ("bad", "kind: http\n      url: '{{ workload.api }}/api/v1/status/400'", "client_error", False),
    ("down", "kind: http\n      url: '{{ workload.api }}/api/v1/status/503'", "server_error", True),
    (
        "slow",
        "kind: http\n      url: '{{ workload.api }}/api/v1/echo'\n      params: {delay: 2}\n      timeout: 0.3",
        "timeout",
        True,
    ),
    ("refused", "kind: http\n      url: '{{ workload.closed }}/x'", "connection", True),
    ("py", "kind: python\n      code: raise ValueError('bad input')", "tool", False),
    (
        "py_http",
        "kind: python\n      input: {url: '{{ workload.api }}/api/v1/status/503'}\n"
        "      code: |\n        import urllib.request\n        urllib.request.urlopen(url, timeout=5)",
        "server_error",
        True,
    ),
    ("shell", "kind: shell\n      command: exit 3", "tool", False),
    ("duck", "kind: duckdb\n      query: SELEC 1", "tool", False),
    (
        "pg_sql",
        "kind: postgres\n      auth: pg_local\n      command: SELECT * FROM noetl_no_such_table_x",
        "tool",
        False,
    ),
    (
        "pg_slow",
        "kind: postgres\n      auth: pg_local\n      command: SELECT pg_sleep(3)\n      timeout: 0.3",
        "timeout",
        True,
    ),
    ("pg_role", "kind: postgres\n      auth: pg_nobody\n      command: SELECT 1", "auth", False),
]


def error_kinds_playbook() -> str:
    names = [case[0] for case in KIND_CASES]
    steps = "".join(
        _kind_step(name, "      " + tool, kind, retryable, nxt)
        for (name, tool, kind, retryable), nxt in zip(KIND_CASES, [*names[1:], "report"], strict=True)
    )
    return (
        (
            HEADER
            + """\
metadata: {name: tools_error_kinds, path: tests/tools/error_kinds}
workload: {api: "http://127.0.0.1:1", closed: "http://127.0.0.1:1", page: 7}
workflow:
  - step: start
    desc: HTTP 500 twice, then 200; the rule real playbooks write retries it
    tool:
      kind: http
      url: "{{ workload.api }}/api/v1/flaky"
      params: {page: "{{ workload.page }}", fail_on: "{{ workload.page }}", fail_times: 2}
      spec:
        policy:
          rules:
            - when: "{{ output.error.retryable and output.error.kind == 'server_error' }}"
              then: {do: retry, attempts: 5, delay: 0.05}
    next: [FIRST_KIND_STEP]
KIND_STEPS  - step: report
    tool:
      kind: python
      input: {seen: "{{ ctx }}", attempt: "{{ start.data.attempt }}"}
      code: |
        result = {"attempt": attempt, "kinds": {k[2:]: v for k, v in seen.items() if k.startswith("k_")}}
"""
        )
        .replace("FIRST_KIND_STEP", names[0])
        .replace("KIND_STEPS", steps)
    )


ERROR_KINDS_EXPECTED = {"attempt": 3, "kinds": {name: kind for name, _, kind, _ in KIND_CASES}}

TRANSFER = (
    HEADER
    + """\
metadata: {name: tools_transfer, path: tests/tools/transfer}
workload: {schema: public, api: "http://127.0.0.1:1"}
workflow:
  - step: start
    tool:
      kind: postgres
      auth: pg_local
      command: |
        CREATE TABLE {{ workload.schema }}.src (id int PRIMARY KEY, name text, tags jsonb, at timestamptz);
        INSERT INTO {{ workload.schema }}.src
          SELECT g, 'name ' || g, jsonb_build_array(g, g * 2), timestamptz '2024-01-01 00:00:00+00' + g * interval '1 day'
          FROM generate_series(1, 7) g;
        CREATE TABLE {{ workload.schema }}.dst (id int PRIMARY KEY, name text, tags jsonb, at timestamptz);
        INSERT INTO {{ workload.schema }}.dst VALUES (1, 'stale', '[]', NULL), (99, 'kept', '[]', NULL);
        CREATE TABLE {{ workload.schema }}.items (item_id int PRIMARY KEY, label text, value int);
        INSERT INTO {{ workload.schema }}.items VALUES (500, 'replaced away', 0)
    next: [copy]
  - step: copy
    tool:
      kind: transfer
      source:
        type: postgres
        auth: pg_local
        query: SELECT id, name, tags, at FROM {{ workload.schema }}.src ORDER BY id
      target: {type: postgres, auth: pg_local, table: "{{ workload.schema }}.dst"}
      mode: upsert
      chunk_size: 3
    next: [fetch]
  - step: fetch
    tool:
      kind: transfer
      source:
        type: http
        url: "{{ workload.api }}/api/v1/assessments"
        params: {page: 1, pageSize: 35}
        data_path: data
      target:
        type: postgres
        auth: pg_local
        table: "{{ workload.schema }}.items"
        mapping: {item_id: id, label: name, value: value}
      mode: replace
      chunk_size: 10
    next: [check]
  - step: check
    tool:
      kind: postgres
      auth: pg_local
      command: |
        SELECT id, name, tags, at FROM {{ workload.schema }}.dst ORDER BY id;
        SELECT count(*) AS n, sum(value) AS total, min(item_id) AS low, max(label) AS top FROM {{ workload.schema }}.items
"""
)


def transfer_expected(schema: str) -> dict[str, Any]:
    dst = [
        {
            "id": i,
            "name": f"name {i}",
            "tags": [i, i * 2],
            "at": f"2024-01-{1 + i:02d}T00:00:00+00:00",
        }
        for i in range(1, 8)
    ] + [{"id": 99, "name": "kept", "tags": [], "at": None}]
    return {
        "copy": {
            "rows_transferred": 7,
            "chunks_processed": 3,
            "target_table": f"{schema}.dst",
            "columns": ["id", "name", "tags", "at"],
            "mode": "upsert",
            "source_type": "postgres",
            "target_type": "postgres",
            "direction": "postgres_to_postgres",
        },
        "fetch": {
            "rows_transferred": 35,
            "chunks_processed": 4,
            "target_table": f"{schema}.items",
            "columns": ["item_id", "label", "value"],
            "mode": "replace",
            "source_type": "http",
            "target_type": "postgres",
            "direction": "http_to_postgres",
        },
        "dst": dst,
        "items": [{"n": 35, "total": sum(10 * i for i in range(1, 36)), "low": 1, "top": "Item 9"}],
    }


# ------------------------------------------------------------------------------------ helpers


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def results(outcome: dict[str, Any]) -> dict[str, Any]:
    return {name: step.get("result") for name, step in outcome["steps"].items()}


def check_error_kinds(outcome: dict[str, Any], stub: StubAPI, page: int) -> None:
    assert outcome["status"] == "COMPLETED", outcome
    assert results(outcome)["report"] == ERROR_KINDS_EXPECTED
    assert stub.state.flaky_calls[page] == 3  # two 500s retried, then the 200


def check_transfer(outcome: dict[str, Any], schema: str) -> None:
    assert outcome["status"] == "COMPLETED", outcome
    got = results(outcome)
    expected = transfer_expected(schema)
    assert got["copy"] == expected["copy"]
    assert got["fetch"] == expected["fetch"]
    assert got["check"]["command_0"]["rows"] == expected["dst"]
    assert got["check"]["command_1"]["rows"] == expected["items"]


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_tools_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@dataclass
class Local:
    """`noetl run --json` against a SQLite store of the test, with credentials in it."""

    tmp: Path
    store: str

    def run(
        self, name: str, text: str, payload: dict[str, Any] | None = None
    ) -> tuple[CliResult, dict[str, Any]]:
        path = self.tmp / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        extra = ["--payload", json.dumps(payload)] if payload else []
        result = run_playbook(path, self.store, *extra)
        assert result.stdout.strip(), result.stderr
        return result, result.json


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_dsn: str) -> Local:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # inherited by the `noetl` subprocesses
    monkeypatch.setenv("NOETL_RESULT_STORE_DIR", str(tmp_path / "results"))
    store = f"sqlite:///{tmp_path}/noetl.db"
    add_credential(store, "pg_local", "postgres", pg_credential_data(pg_dsn))
    add_credential(
        store, "pg_nobody", "postgres", {**pg_credential_data(pg_dsn), "db_user": "noetl_no_such_role"}
    )
    return Local(tmp_path, store)


# ------------------------------------------------------------------------------------ local mode


def test_item2_postgres_command_results_local(local: Local, schema: str) -> None:
    result, outcome = local.run("pg_commands", PG_COMMANDS, {"schema": schema})
    assert result.code == 0, result.stdout + result.stderr
    assert results(outcome)["check"] == PG_COMMANDS_EXPECTED


def test_item4_error_kinds_in_policy_rules_local(local: Local, stub_api: StubAPI) -> None:
    payload = {"api": stub_api.base_url, "closed": closed_url(), "page": 7}
    result, outcome = local.run("error_kinds", error_kinds_playbook(), payload)
    assert result.code == 0, result.stdout + result.stderr
    check_error_kinds(outcome, stub_api, 7)


def test_item4_an_unmatched_kind_fails_the_step(local: Local, stub_api: StubAPI) -> None:
    """The `else: fail` guard is real: a 401 read as a rate limit does not pass."""
    text = error_kinds_playbook().replace(
        "output.error.kind == 'auth'", "output.error.kind == 'rate_limit'", 1
    )
    payload = {"api": stub_api.base_url, "closed": closed_url(), "page": 8}
    result, outcome = local.run("error_kinds_wrong", text, payload)
    assert result.code == 1
    assert outcome["status"] == "FAILED"
    assert outcome["steps"]["denied"]["status"] == "FAILED"
    assert "HTTP 401" in (outcome["error"] or "")


def test_item10_transfer_local(local: Local, schema: str, stub_api: StubAPI) -> None:
    result, outcome = local.run("transfer", TRANSFER, {"schema": schema, "api": stub_api.base_url})
    assert result.code == 0, result.stdout + result.stderr
    check_transfer(outcome, schema)


LIBS = (
    HEADER
    + """\
metadata: {name: tools_libs, path: tests/tools/libs}
workflow:
  - step: start
    tool:
      kind: python
      libs: [PyYAML, platformdirs, "psycopg[binary]>=3.1", noetl-declared-only-xyz]
      code: |
        result = {"yaml": yaml.safe_dump({"a": 1}).strip(), "psycopg": psycopg.__name__,
                  "dirs": callable(platformdirs.user_data_dir)}
    next: [uses_missing]
  - step: uses_missing
    tool:
      kind: python
      libs: [noetl-missing-lib-xyz]
      code: |
        import noetl_missing_lib_xyz
        result = {"never": True}
"""
)


def test_item8_libs_are_pip_names_and_a_missing_one_is_named(local: Local) -> None:
    result, outcome = local.run("libs", LIBS)
    assert result.code == 1
    assert outcome["status"] == "FAILED"
    # installed distributions are bound under their import names; an unused undeclared-missing
    # one is only a declaration (upstream ignores libs)
    assert outcome["steps"]["start"] == {
        "status": "COMPLETED",
        "result": {"yaml": "a: 1", "psycopg": "psycopg", "dirs": True},
    }
    assert outcome["steps"]["uses_missing"]["status"] == "FAILED"
    error = outcome["error"] or ""
    assert "python library 'noetl-missing-lib-xyz' (module 'noetl_missing_lib_xyz')" in error
    assert "pip install noetl-missing-lib-xyz" in error


ARTIFACT = (
    HEADER
    + """\
metadata: {name: tools_artifact, path: tests/tools/artifact}
workflow:
  - step: start
    desc: a large result, externalised as the executor will (result_ref + the selected fields)
    tool:
      kind: python
      code: |
        from noetl.tools.results import externalize
        items = [{"id": i, "name": f"item_{i}", "data": "x" * 200, "status": "active"} for i in range(1000)]
        full = {"status": "success", "count": len(items), "total_size": 200 * len(items), "items": items}
        result = externalize(full, execution_id=execution_id, step=step, threshold=64 * 1024,
                             select=["status", "count", "total_size"])
    next: [verify_extracted_fields]
  - step: verify_extracted_fields
    tool:
      - verify:
          kind: python
          args:
            status: "{{ start.status }}"
            count: "{{ start.count }}"
            has_ref: "{{ start._ref is defined }}"
            inline_items: "{{ 'items' in start }}"
          code: |
            result = {"status": status, "count": count, "has_ref": has_ref, "inline_items": inline_items}
    next: [lazy_load_full_data]
  - step: lazy_load_full_data
    tool:
      - load_artifact:
          kind: artifact
          action: get
          args:
            result_ref: "{{ start._ref }}"
    next: [keep]
  - step: keep
    tool:
      kind: artifact
      action: put
      data: "{{ lazy_load_full_data.data.items[:3] }}"
      uri: ./out/first3.json.gz
    next: [keep_in_store]
  - step: keep_in_store
    tool: {kind: artifact, action: put, data: {answer: 42}}
    next: [reload]
  - step: reload
    tool:
      - from_file: {kind: artifact, uri: "{{ keep.uri }}"}
      - from_store:
          kind: artifact
          input: {result_ref: "{{ keep_in_store.result_ref }}"}
          set: {stored: "{{ output.data }}"}
      - combine:
          kind: python
          input: {first3: "{{ from_file.data }}", stored: "{{ stored }}"}
          code: |
            result = {"ids": [row["id"] for row in first3], "stored": stored}
    next: [summary]
  - step: summary
    tool:
      kind: python
      input:
        data: "{{ lazy_load_full_data.data }}"
        reloaded: "{{ reload.combine }}"
      code: |
        result = {"total_items": len(data["items"]),
                  "active_items": sum(1 for i in data["items"] if i["status"] == "active"),
                  "reloaded": reloaded}
"""
)


def test_item11_artifact_get_put_and_result_ref_local(local: Local) -> None:
    result, outcome = local.run("artifact", ARTIFACT)
    assert result.code == 0, result.stdout + result.stderr
    got = results(outcome)
    verified = {"status": "success", "count": 1000, "has_ref": True, "inline_items": False}
    # A pipeline step: its task's result by label, and the task's keys at the top level.
    assert got["verify_extracted_fields"] == {**verified, "verify": verified}
    assert got["start"]["_ref"]["kind"] == "result_ref"
    assert got["start"]["_ref"]["ref"].startswith(
        f"noetl://execution/{outcome['execution_id']}/result/start/"
    )
    assert got["start"]["_size_bytes"] > 64 * 1024
    assert got["summary"] == {
        "total_items": 1000,
        "active_items": 1000,
        "reloaded": {"ids": [0, 1, 2], "stored": {"answer": 42}},
    }
    assert (local.tmp / "out" / "first3.json.gz").is_file()  # relative to the playbook's folder
    assert got["keep"]["uri"] == (local.tmp / "out" / "first3.json.gz").resolve().as_uri()


SCRIPTS = (
    HEADER
    + """\
metadata: {name: tools_scripts, path: tests/tools/scripts}
workload: {folder: .}
workflow:
  - step: start
    tool:
      kind: postgres
      auth: pg_local
      script: {uri: ./sql/create.sql, source: {type: file}}
    next: [read]
  - step: read
    tool:
      kind: postgres
      auth: pg_local
      script: {source: {type: file, path: sql/select.sql}}
    next: [duck]
  - step: duck
    tool: {kind: duckdb, script: {uri: "file://{{ workload.folder }}/duck.sql"}}
    next: [py]
  - step: py
    tool:
      kind: python
      script: {uri: py/step.py}
      input: {rows: "{{ read.rows }}", duck: "{{ duck }}"}
"""
)


def test_item12_sql_and_python_from_script_files_local(local: Local, schema: str, tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    (folder / "sql").mkdir(parents=True)
    (folder / "py").mkdir()
    (folder / "sql" / "create.sql").write_text(
        f"CREATE TABLE {schema}.script_test (id int, label text);\n"
        f"INSERT INTO {schema}.script_test VALUES (1, 'one; with a semicolon'), (2, 'two');\n",
        encoding="utf-8",
    )
    (folder / "sql" / "select.sql").write_text(
        f"-- read back\nSELECT id, label FROM {schema}.script_test ORDER BY id;\n", encoding="utf-8"
    )
    (folder / "duck.sql").write_text("SELECT 40 + 2 AS answer;", encoding="utf-8")
    (folder / "py" / "step.py").write_text(
        "result = {'labels': [r['label'] for r in rows], 'answer': duck[0]['answer']}\n", encoding="utf-8"
    )
    path = folder / "scripts.yaml"
    path.write_text(SCRIPTS, encoding="utf-8")
    payload = json.dumps({"folder": str(folder)})
    result = run_playbook(path, local.store, "--payload", payload)  # cwd is the repository, not folder
    assert result.code == 0, result.stdout + result.stderr
    got = results(result.json)
    assert got["start"]["command_1"] == {
        "status": "success",
        "row_count": 2,
        "message": "INSERT: 2 rows affected",
    }
    assert got["read"]["rows"] == [{"id": 1, "label": "one; with a semicolon"}, {"id": 2, "label": "two"}]
    assert got["py"] == {"labels": ["one; with a semicolon", "two"], "answer": 42}


def test_item12_a_missing_script_names_the_paths_tried(local: Local) -> None:
    text = (
        HEADER
        + "metadata: {name: tools_noscript, path: tests/tools/noscript}\n"
        + "workflow:\n  - step: start\n    tool: {kind: postgres, auth: pg_local, script: {uri: ./nope.sql}}\n"
    )
    result, outcome = local.run("noscript", text)
    assert result.code == 1
    assert "script file ./nope.sql not found" in (outcome["error"] or "")
    assert str(local.tmp / "nope.sql") in (outcome["error"] or "")


# ------------------------------------------------------------------------------------ server mode


@dataclass
class Remote:
    cluster: Cluster
    server: ServerProcess
    stub: StubAPI

    def run(self, text: str, payload: dict[str, Any]) -> dict[str, Any]:
        path = self.cluster.tmp / f"{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(text, encoding="utf-8")
        registered = noetl("register", path, "--json", "--server", self.server.url, timeout=120)
        assert registered.code == 0, registered.stderr
        catalog_path = yaml.safe_load(text)["metadata"]["path"]
        result = noetl(
            "exec", catalog_path, "--wait", "--json", "--timeout", str(RUN_TIMEOUT),
            "--payload", json.dumps(payload), "--server", self.server.url, timeout=RUN_TIMEOUT + 60,
        )  # fmt: skip
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"{result.stdout}\n{result.stderr}\n{self.cluster.logs()}"
        outcome: dict[str, Any] = json.loads(lines[0])
        return outcome


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> Iterator[Remote]:
    store_schema = f"noetl_tools_store_{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("tools-cluster")
    env = {KEY_ENV: fresh_encryption_key(), "NOETL_RESULT_STORE_DIR": str(tmp / "results")}
    try:
        with StubAPI() as stub, Cluster(tmp, f"{pg_dsn}?schema={store_schema}", env=env) as cluster:
            server = cluster.start_server("tools-server")
            for worker_id in ("tools-w1", "tools-w2"):
                cluster.start_worker(worker_id, server.url, concurrency=4)
            data = pg_credential_data(pg_dsn)
            post_json(server.url, "/api/credentials", {"name": "pg_local", "type": "postgres", "data": data})
            nobody = {**data, "db_user": "noetl_no_such_role"}
            post_json(
                server.url, "/api/credentials", {"name": "pg_nobody", "type": "postgres", "data": nobody}
            )
            yield Remote(cluster, server, stub)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{store_schema}" CASCADE')


def assert_ran_on_workers(remote: Remote, outcome: dict[str, Any]) -> None:
    """Every command started on one of the two worker processes (none in the server)."""
    events = events_of(remote.server.url, outcome["execution_id"])
    started = [e for e in events if e["event_type"] == "command.started"]
    assert started
    assert {worker_of(e) for e in started} <= {"tools-w1", "tools-w2"}


def test_item2_postgres_command_results_on_workers(remote: Remote, schema: str) -> None:
    outcome = remote.run(PG_COMMANDS, {"schema": schema})
    assert outcome["status"] == "COMPLETED", outcome
    assert results(outcome)["check"] == PG_COMMANDS_EXPECTED
    assert_ran_on_workers(remote, outcome)


def test_item4_error_kinds_in_policy_rules_on_workers(remote: Remote) -> None:
    payload = {"api": remote.stub.base_url, "closed": closed_url(), "page": 17}
    outcome = remote.run(error_kinds_playbook(), payload)
    check_error_kinds(outcome, remote.stub, 17)
    assert_ran_on_workers(remote, outcome)


def test_item10_transfer_on_workers(remote: Remote, schema: str) -> None:
    outcome = remote.run(TRANSFER, {"schema": schema, "api": remote.stub.base_url})
    check_transfer(outcome, schema)
    assert_ran_on_workers(remote, outcome)
