"""Item 12 at the tool level: SQL and Python read from files or URLs; item 8: `libs` as pip names."""

from __future__ import annotations

import asyncio
import base64
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from noetl.dsl.parser import parse_playbook
from noetl.tools import pylibs
from noetl.tools.base import ToolContext, ToolResult
from noetl.tools.duckdb import DuckDBTool
from noetl.tools.python import PythonTool
from noetl.tools.scripts import ScriptError, is_location, read_script, sql_texts


def ctx(base: Path | None = None, **render: Any) -> ToolContext:
    return ToolContext(
        execution_id=1, step="s", command_id="c", base_path=str(base) if base else None, render_context=render
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "q.sql").write_text("SELECT 1 AS one;\nSELECT 2 AS two;", encoding="utf-8")
    (tmp_path / "step.py").write_text("result = {'doubled': n * 2}", encoding="utf-8")
    return tmp_path


@pytest.fixture
def served(files: Path) -> Iterator[str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(files))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def read(script: Any, context: ToolContext) -> str:
    return asyncio.run(read_script(script, context, tool="t"))


@pytest.mark.parametrize(
    "script",
    [
        "./sql/q.sql",
        "sql/q.sql",
        {"uri": "./sql/q.sql"},
        {"uri": "sql/q.sql", "source": {"type": "file"}},
        {"source": {"type": "file", "path": "sql/q.sql"}},
        {"path": "sql/q.sql"},
    ],
)
def test_file_scripts_resolve_from_the_playbook_folder(files: Path, script: Any) -> None:
    assert read(script, ctx(files)) == "SELECT 1 AS one;\nSELECT 2 AS two;"


def test_absolute_and_file_uri_and_cwd_fallback(
    files: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    expected = "SELECT 1 AS one;\nSELECT 2 AS two;"
    assert read(str(files / "sql" / "q.sql"), ctx()) == expected
    assert read({"uri": (files / "sql" / "q.sql").as_uri()}, ctx()) == expected
    monkeypatch.chdir(files)  # upstream playbooks give paths relative to the repository root
    elsewhere = tmp_path / "playbook_dir"
    elsewhere.mkdir()
    assert read({"uri": "./sql/q.sql"}, ctx(elsewhere)) == expected


def test_http_scripts(served: str) -> None:
    assert read({"uri": f"{served}/sql/q.sql"}, ctx()).startswith("SELECT 1")
    assert read({"source": {"type": "http", "endpoint": f"{served}/step.py"}}, ctx()).startswith("result =")
    with pytest.raises(ScriptError, match="answered HTTP 404"):
        read(f"{served}/missing.sql", ctx())


def test_inline_and_errors(files: Path) -> None:
    assert read({"source": {"type": "inline", "code": "SELECT 3"}}, ctx()) == "SELECT 3"
    with pytest.raises(ScriptError, match=r"script file ./nope.sql not found \(looked at .*nope.sql"):
        read("./nope.sql", ctx(files))
    with pytest.raises(ScriptError, match="script source type 'gcs' is not supported"):
        read({"uri": "gs://b/o.sql", "source": {"type": "gcs"}}, ctx())
    with pytest.raises(ScriptError, match="needs a 'uri'"):
        read({"source": {"type": "file"}}, ctx())
    with pytest.raises(ScriptError, match="unknown script source type 'ftp'"):
        read({"uri": "x.sql", "source": {"type": "ftp"}}, ctx())


def test_is_location() -> None:
    assert is_location("./a.sql") and is_location("a/b.sql") and is_location("https://h/x")
    assert (
        not is_location("SELECT 1")
        and not is_location("SELECT 1;\nSELECT 2")
        and not is_location("DROP TABLE x;")
    )


def test_sql_texts_order_b64_and_rendering(files: Path) -> None:
    async def texts(config: dict[str, Any], context: ToolContext) -> list[str]:
        return await sql_texts(config, context, tool="t")

    (files / "t.sql").write_text("SELECT * FROM {{ workload.schema }}.t", encoding="utf-8")
    assert asyncio.run(texts({"script": {"uri": "t.sql"}}, ctx(files, workload={"schema": "s1"}))) == [
        "SELECT * FROM s1.t"
    ]
    encoded = base64.b64encode(b"SELECT 9").decode()
    assert asyncio.run(texts({"command_b64": encoded, "command": "SELECT 0"}, ctx())) == ["SELECT 9"]
    assert asyncio.run(texts({"commands": ["SELECT 1", "", "SELECT 2"]}, ctx())) == ["SELECT 1", "SELECT 2"]
    assert asyncio.run(texts({"script": "SELECT 4"}, ctx())) == ["SELECT 4"]  # inline SQL in script
    with pytest.raises(ScriptError, match="'command'"):
        asyncio.run(texts({}, ctx()))


def test_duckdb_and_python_run_scripts(files: Path) -> None:
    duck = asyncio.run(DuckDBTool().run({"script": {"uri": "sql/q.sql"}}, ctx(files)))
    assert duck.status == "success", duck.error
    assert duck.data == [{"two": 2}]
    py = asyncio.run(PythonTool().run({"script": {"uri": "./step.py"}, "input": {"n": 21}}, ctx(files)))
    assert py.status == "success", py.error
    assert py.data == {"doubled": 42}
    missing: ToolResult = asyncio.run(PythonTool().run({"script": "./none.py"}, ctx(files)))
    assert (missing.status, missing.failure_kind) == ("error", "tool")
    assert "script file ./none.py not found" in (missing.error or "")


def test_the_dsl_accepts_sql_steps_that_read_a_script() -> None:
    playbook = parse_playbook(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: s, path: s}\nworkflow:\n"
        "  - step: start\n    tool: {kind: postgres, auth: pg, script: {uri: ./x.sql}}\n    next: [d]\n"
        "  - step: d\n    tool: {kind: duckdb, source: {type: file, path: ./y.sql}}\n"
    )
    assert [step.tool.kind for step in playbook.steps.values() if step.tool] == ["postgres", "duckdb"]


# ------------------------------------------------------------------------------------ libs (item 8)


def py(code: str, libs: Any) -> ToolResult:
    return asyncio.run(PythonTool().run({"code": code, "libs": libs}, ctx()))


def test_libs_pip_names_bind_their_import_names() -> None:
    res = py(
        "result = [yaml.__name__, platformdirs.__name__, psycopg.__name__, json.__name__]",
        ["PyYAML", "platformdirs>=4", "psycopg[binary]", "json"],
    )
    assert res.status == "success", res.error
    assert res.data == ["yaml", "platformdirs", "psycopg", "json"]


def test_libs_map_with_a_pip_name_value() -> None:
    res = py("result = y.safe_load('a: 1')", {"y": "PyYAML"})
    assert res.status == "success", res.error
    assert res.data == {"a": 1}


def test_a_declared_missing_lib_only_fails_when_imported() -> None:
    unused = py("result = 1", ["noetl-absent-pkg-q"])
    assert (unused.status, unused.data) == ("success", 1)
    used = py("import noetl_absent_pkg_q\nresult = 1", ["noetl-absent-pkg-q"])
    assert (used.status, used.failure_kind) == ("error", "tool")
    assert used.error is not None
    assert used.error.startswith(
        "python library 'noetl-absent-pkg-q' (module 'noetl_absent_pkg_q') is listed in libs but not installed"
    )
    assert "pip install noetl-absent-pkg-q" in used.error
    assert "at line 1" in used.error  # the usual traceback summary follows


def test_an_undeclared_missing_module_gets_an_install_hint() -> None:
    res = py("import bs4_not_installed_q", None)
    assert res.status == "error"
    assert "python module 'bs4_not_installed_q' is not installed where the step runs" in (res.error or "")
    assert "pip install bs4-not-installed-q" in (res.error or "")


def test_a_missing_map_lib_fails_before_the_code_runs() -> None:
    res = py("result = 1", {"pg": "psycopg2-binary-noetl-missing"})
    assert res.status == "error"
    assert "cannot import lib 'pg'" in (res.error or "")
    assert "pip install psycopg2-binary-noetl-missing" in (res.error or "")


@pytest.mark.parametrize(
    ("project", "module"),
    [
        ("psycopg2-binary", "psycopg2"),
        ("PyYAML", "yaml"),
        ("beautifulsoup4", "bs4"),
        ("scikit-learn", "sklearn"),
        ("python-dateutil", "dateutil"),
        ("google-cloud-storage", "google.cloud.storage"),
        ("some_lib-python", "some_lib"),
        ("requests", "requests"),
    ],
)
def test_import_names_of_pip_projects(project: str, module: str) -> None:
    assert pylibs._import_name(project) == module
