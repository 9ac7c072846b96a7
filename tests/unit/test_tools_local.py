"""Local tool kinds: python, shell, duckdb, noop, and the JSON-safety helper."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from noetl.tools.base import ToolContext, ToolResult, get_tool
from noetl.tools.duckdb import DuckDBTool
from noetl.tools.jsonsafe import to_jsonable
from noetl.tools.noop import NoopTool
from noetl.tools.python import PythonTool
from noetl.tools.shell import ShellTool


def _ctx(**kwargs: Any) -> ToolContext:
    base: dict[str, Any] = {"execution_id": 7, "step": "the_step", "command_id": "cmd-1"}
    base.update(kwargs)
    return ToolContext(**base)


def py(code: str, ctx: ToolContext | None = None, **config: Any) -> ToolResult:
    return asyncio.run(PythonTool().run({"code": code, **config}, ctx or _ctx()))


def sh(config: dict[str, Any], ctx: ToolContext | None = None) -> ToolResult:
    return asyncio.run(ShellTool().run(config, ctx or _ctx()))


def duck(config: dict[str, Any], ctx: ToolContext | None = None) -> ToolResult:
    return asyncio.run(DuckDBTool().run(config, ctx or _ctx()))


def test_registry_maps_local_kinds() -> None:
    assert isinstance(get_tool("python"), PythonTool)
    assert isinstance(get_tool("shell"), ShellTool)
    assert isinstance(get_tool("duckdb"), DuckDBTool)
    assert isinstance(get_tool("noop"), NoopTool)


# ---------------------------------------------------------------------------------------------- python


def test_python_result_global() -> None:
    res = py('result = {"status": "initialized"}\n')
    assert res.status == "success"
    assert res.data == {"status": "initialized"}
    assert res.duration_ms > 0


def test_python_inputs_are_globals() -> None:
    code = (
        "sample_data = sample_json_data or []\n"
        "test_table = test_table or 'fallback'\n"
        "result = {'count': len(sample_data), 'table': test_table}\n"
    )
    res = py(code, input={"test_table": "t1", "sample_json_data": [1, 2, 3]})
    assert res.data == {"count": 3, "table": "t1"}


def test_python_top_level_return_loop_test() -> None:
    code = (
        "num = input_data.get('num')\n"
        "loop_index = input_data.get('loop_index', 0)\n"
        'print(f"[LOOP] Processing number {num} at index {loop_index}")\n'
        "result = num * 2\n"
        'return {"number": num, "doubled": result, "index": loop_index}\n'
    )
    res = py(code, input={"num": 4, "loop_index": 2})
    assert res.status == "success", res.error
    assert res.data == {"number": 4, "doubled": 8, "index": 2}
    assert res.stdout == "[LOOP] Processing number 4 at index 2\n"


def test_python_return_inside_block_and_input_rebinding() -> None:
    code = "x = x + 1\ndef bigger():\n    return x * 10\nif x > 2:\n    return bigger()\nreturn 'small'\n"
    assert py(code, input={"x": 5}).data == 60
    assert py(code, input={"x": 0}).data == "small"


def test_python_return_none_falls_back_to_result() -> None:
    code = "result = {'from': 'result'}\nif False:\n    return 1\n"
    assert py(code).data == {"from": "result"}


def test_python_main_bound_by_parameter_name() -> None:
    code = "def main(a, b=2, *, c=None):\n    return [a, b, c]\n"
    assert py(code, input={"a": 1, "c": 3, "unused": 9}).data == [1, 2, 3]


def test_python_main_without_parameters() -> None:
    assert py('def main():\n    return {"reduced": True}\n').data == {"reduced": True}


def test_python_main_kwargs_gets_whole_input() -> None:
    assert py("def main(**kw):\n    return kw\n", input={"a": 1, "b": 2}).data == {"a": 1, "b": 2}


def test_python_main_missing_argument_is_error() -> None:
    res = py("def main(needed):\n    return needed\n", input={})
    assert res.status == "error"
    assert "needed" in (res.error or "")


def test_python_async_main() -> None:
    code = "import asyncio\nasync def main(n):\n    await asyncio.sleep(0.01)\n    return n + 1\n"
    assert py(code, input={"n": 41}).data == 42


def test_python_input_data_key_override() -> None:
    code = (
        "temp_table = input_data.get('temp_table', 'unknown')\n"
        "cleanup = input_data.get('cleanup_required', False)\n"
        "result = {'table': temp_table, 'cleaned_up': cleanup}\n"
    )
    res = py(code, input={"input_data": {"temp_table": "temp_session_12345", "cleanup_required": True}})
    assert res.data == {"table": "temp_session_12345", "cleaned_up": True}


def test_python_input_data_args_context_and_ids() -> None:
    code = (
        "input_data['extra'] = 1\n"
        "result = {'input_data': input_data, 'args': args, 'ctx': context.get('workload'),\n"
        "          'execution_id': execution_id, 'step': step}\n"
    )
    ctx = _ctx(render_context={"workload": {"w": 1}})
    res = py(code, ctx, input={"a": 1})
    assert res.data == {
        "input_data": {"a": 1, "extra": 1},
        "args": {"a": 1},  # input_data is a copy
        "ctx": {"w": 1},
        "execution_id": 7,
        "step": "the_step",
    }


def test_python_args_alias_for_input() -> None:
    assert py("result = a * 2", args={"a": 21}).data == 42


def test_python_libs_map_of_modules() -> None:
    res = py("time.sleep(0)\nresult = json.dumps({'a': 1})", libs={"json": "json", "time": "time"})
    assert res.data == '{"a": 1}'


def test_python_libs_from_import() -> None:
    libs = {"OD": {"from": "collections", "import": "OrderedDict"}, "osp": {"from": "os", "import": "path"}}
    res = py("result = [OD.__name__, osp.join('a', 'b')]", libs=libs)
    assert res.data == ["OrderedDict", "a/b"]


def test_python_libs_list() -> None:
    res = py(
        "result = [json.dumps(1), os.path.join('x', 'y'), m.floor(2.5)]",
        libs=["json", "os.path", "math as m"],
    )
    assert res.data == ["1", "x/y", 2]


def test_python_libs_import_error_names_the_lib() -> None:
    res = py("result = 1", libs={"nope": "noetl_no_such_module_xyz"})
    assert res.status == "error"
    assert "nope" in (res.error or "") and "noetl_no_such_module_xyz" in (res.error or "")


def test_python_exception_reports_type_message_and_line() -> None:
    code = "a = 1\n\ndef check(v):\n    raise ValueError(f'bad value {v}')\n\ncheck(a)\n"
    res = py(code)
    assert res.status == "error"
    assert res.error is not None
    assert res.error.startswith("ValueError: bad value 1")
    assert "line 4" in res.error and "raise ValueError" in res.error
    assert "line 6" in res.error


def test_python_assertion_and_system_exit_are_errors() -> None:
    res = py("x = 1\nassert x == 2, f'Expected 2, got {x}'\n")
    assert res.status == "error"
    assert res.error is not None and res.error.startswith("AssertionError: Expected 2, got 1")
    assert "line 2" in res.error
    res = py("import sys\nsys.exit(3)\n")
    assert res.status == "error"
    assert res.error is not None and res.error.startswith("SystemExit: 3")


def test_python_syntax_error() -> None:
    res = py("x = 1\nif x\n    pass\n")
    assert res.status == "error"
    assert res.error is not None and res.error.startswith("SyntaxError") and "line 2" in res.error


def test_python_missing_code_is_error() -> None:
    res = asyncio.run(PythonTool().run({"input": {}}, _ctx()))
    assert res.status == "error"


def test_python_dataclass_and_future_import() -> None:
    code = (
        '"""doc"""\n'
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class P:\n"
        "    x: int\n"
        "return P(3)\n"
    )
    assert py(code).data == {"x": 3}


def test_python_stdout_capture_is_isolated_between_concurrent_calls() -> None:
    code = (
        "import sys, time\n"
        "for i in range(20):\n"
        "    print(f'{tag}-{i}')\n"
        "    print(f'{tag}-err', file=sys.stderr)\n"
        "    time.sleep(0.002)\n"
        "result = tag\n"
    )

    async def both() -> list[ToolResult]:
        tool = PythonTool()
        return list(
            await asyncio.gather(
                tool.run({"code": code, "input": {"tag": "AAA"}}, _ctx()),
                tool.run({"code": code, "input": {"tag": "BBB"}}, _ctx()),
            )
        )

    first, second = asyncio.run(both())
    assert first.stdout == "".join(f"AAA-{i}\n" for i in range(20))
    assert second.stdout == "".join(f"BBB-{i}\n" for i in range(20))
    assert first.stderr == "AAA-err\n" * 20
    assert "AAA" not in (second.stderr or "")


def test_python_print_outside_a_call_reaches_the_real_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert py("print('inside')").stdout == "inside\n"
    print("outside")
    sys.stdout.flush()
    assert "outside" in capsys.readouterr().out


def test_python_stdout_truncated() -> None:
    res = py("for i in range(5000):\n    print('x' * 99)\n")
    assert res.stdout is not None
    assert len(res.stdout) < 70 * 1024
    assert "truncated" in res.stdout
    assert res.stdout.endswith("x" * 99 + "\n")


def test_python_timeout_stops_runaway_loop_and_process_survives() -> None:
    started = time.monotonic()
    res = py("while True:\n    pass\n", timeout=0.5)
    elapsed = time.monotonic() - started
    assert res.status == "timeout"
    assert res.error == "python code timed out after 0.5 s"
    assert elapsed < 1.5
    # the thread was stopped, and later calls work
    assert py("result = 'after'").data == "after"


def test_python_timeout_not_swallowed_by_except_exception() -> None:
    code = "while True:\n    try:\n        sum(range(1000))\n    except Exception:\n        pass\n"
    res = py(code, timeout_seconds=0.3)
    assert res.status == "timeout"
    assert py("result = 1").data == 1


def test_python_timeout_from_context() -> None:
    res = py("import time\nwhile True:\n    time.sleep(0.01)\n", _ctx(timeout=0.3))
    assert res.status == "timeout"


def test_python_many_stuck_calls_do_not_starve_the_pool() -> None:
    async def run() -> tuple[list[ToolResult], ToolResult]:
        tool = PythonTool()
        stuck = await asyncio.gather(
            *[tool.run({"code": "import time\ntime.sleep(3)", "timeout": 0.2}, _ctx()) for _ in range(40)]
        )
        fresh = await asyncio.wait_for(tool.run({"code": "result = 'ok'"}, _ctx()), 1.0)
        return list(stuck), fresh

    stuck, fresh = asyncio.run(run())
    assert all(r.status == "timeout" for r in stuck)
    assert fresh.data == "ok"


def test_python_result_is_json_safe() -> None:
    code = (
        "from decimal import Decimal\n"
        "import datetime, uuid\n"
        "result = {'dec': Decimal('1.50'), 'whole': Decimal('3'), 'when': datetime.datetime(2024, 5, 6, 7, 8, 9),\n"
        "          'day': datetime.date(2024, 5, 6), 'id': uuid.UUID(int=1), 'tags': {'b'}, 'pair': (1, 2),\n"
        "          'raw': b'hi'}\n"
    )
    assert py(code).data == {
        "dec": 1.5,
        "whole": 3,
        "when": "2024-05-06T07:08:09",
        "day": "2024-05-06",
        "id": "00000000-0000-0000-0000-000000000001",
        "tags": ["b"],
        "pair": [1, 2],
        "raw": "hi",
    }


def test_python_no_result_is_none() -> None:
    res = py("x = 1\n")
    assert res.status == "success"
    assert res.data is None


def test_python_many_fast_calls() -> None:
    async def run() -> float:
        tool = PythonTool()
        start = time.perf_counter()
        for i in range(10_000):
            res = await tool.run({"code": "result = i", "input": {"i": i}}, _ctx())
            assert res.data == i
        return time.perf_counter() - start

    assert asyncio.run(run()) < 10.0  # well over 1,000 calls per second; typically ~10x that


# ---------------------------------------------------------------------------------------------- jsonsafe


def test_to_jsonable_rules() -> None:
    class Obj:
        def __str__(self) -> str:
            return "obj!"

    class ArrayLike:
        def tolist(self) -> list[int]:
            return [1, 2]

    value = {
        "d": Decimal("2.25"),
        "i": Decimal("10"),
        "nan": float("nan"),
        "t": dt.time(1, 2, 3),
        "ts": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "u": uuid.UUID(int=2),
        "b": b"\xff\x00",
        "s": {3, 1},
        "tu": (Decimal("1"),),
        "arr": ArrayLike(),
        "o": Obj(),
        1: "int key",
    }
    assert to_jsonable(value) == {
        "d": 2.25,
        "i": 10,
        "nan": None,
        "t": "01:02:03",
        "ts": "2024-01-02T03:04:05+00:00",
        "u": "00000000-0000-0000-0000-000000000002",
        "b": "/wA=",
        "s": [1, 3],
        "tu": [1],
        "arr": [1, 2],
        "o": "obj!",
        "1": "int key",
    }
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert to_jsonable(cyclic) == [1, "<cycle>"]


# ---------------------------------------------------------------------------------------------- shell


def test_shell_command_env_cwd(tmp_path: Path) -> None:
    res = sh(
        {
            "command": "echo hello; echo warn >&2; echo $GREETING; pwd",
            "env": {"GREETING": 5},
            "cwd": str(tmp_path),
        }
    )
    assert res.status == "success"
    assert res.data == {"exit_code": 0, "stdout": f"hello\n5\n{tmp_path}\n", "stderr": "warn\n"}
    assert res.exit_code == 0


def test_shell_cmds_stop_at_first_failure() -> None:
    res = sh({"cmds": ["echo one", "echo broken >&2; exit 4", "echo never"]})
    assert res.status == "error"
    assert res.error == "command exited with code 4: broken"
    assert res.data["exit_code"] == 4
    assert res.data["stdout"] == "one\n"
    assert [c["command"] for c in res.data["commands"]] == ["echo one", "echo broken >&2; exit 4"]
    assert [c["exit_code"] for c in res.data["commands"]] == [0, 4]


def test_shell_nonzero_exit_is_error() -> None:
    res = sh({"command": "exit 2"})
    assert res.status == "error"
    assert res.error == "command exited with code 2"
    assert res.data["exit_code"] == 2


def test_shell_timeout_kills_process_group() -> None:
    started = time.monotonic()
    res = sh({"command": "echo started; sleep 30 & sleep 30", "timeout": 0.5})
    assert time.monotonic() - started < 4
    assert res.status == "timeout"
    assert res.error == "command timed out after 0.5 s"
    assert res.data["stdout"] == "started\n"


def test_shell_without_command_is_error() -> None:
    assert sh({}).status == "error"


# ---------------------------------------------------------------------------------------------- duckdb


def test_duckdb_multi_statement_conformance_query() -> None:
    query = (
        "CREATE TABLE users (id INTEGER, name VARCHAR, age INTEGER);\n"
        "INSERT INTO users VALUES (1, 'Alice', 30), (2, 'Bob', 25), (3, 'Charlie', 35);\n"
        "SELECT name, age FROM users WHERE age >= 30 ORDER BY age;\n"
    )
    res = duck({"database": ":memory:", "query": query})
    assert res.status == "success", res.error
    assert res.data == [{"name": "Alice", "age": 30}, {"name": "Charlie", "age": 35}]


def test_duckdb_single_select_via_command() -> None:
    res = duck({"command": "SELECT 42 as answer, 'success' as status"})
    assert res.data == [{"answer": 42, "status": "success"}]


def test_duckdb_last_result_set_wins_and_dml_only_is_empty() -> None:
    res = duck(
        {"commands": ["SELECT 1 AS a; CREATE TABLE t (x INT)", "INSERT INTO t VALUES (1); CHECKPOINT"]}
    )
    assert res.data == [{"a": 1}]
    assert duck({"query": "CREATE TABLE t (x INT); INSERT INTO t VALUES (1)"}).data == []
    ret = duck({"query": "CREATE TABLE t (x INT); INSERT INTO t VALUES (5) RETURNING x * 2 AS y"})
    assert ret.data == [{"y": 10}]


def test_duckdb_semicolons_in_strings_and_comments() -> None:
    res = duck({"sql": "-- a comment; with a semicolon\nSELECT 'a;b' AS v; /* x; */ SELECT 'c;d' AS v"})
    assert res.data == [{"v": "c;d"}]


def test_duckdb_params_and_json_safe_values() -> None:
    res = duck(
        {"query": "SELECT ?::INT + 1 AS n, 1.5::DECIMAL(4,2) AS d, DATE '2024-01-02' AS day", "params": [4]}
    )
    assert res.data == [{"n": 5, "d": 1.5, "day": "2024-01-02"}]


def test_duckdb_syntax_error_message() -> None:
    res = duck({"query": "SELEC 1"})
    assert res.status == "error"
    assert res.error is not None and "syntax error" in res.error.lower()


def test_duckdb_file_database_persists(tmp_path: Path) -> None:
    db = str(tmp_path / "sub" / "test.duckdb")
    first = duck({"database": db, "query": "CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2)"})
    assert first.status == "success", first.error
    second = duck({"db_path": db, "query": "SELECT sum(x) AS total FROM t"})
    assert second.data == [{"total": 2 + 1}]


def test_duckdb_timeout_interrupts_query() -> None:
    started = time.monotonic()
    res = duck({"query": "SELECT count(*) FROM range(1000000000000)", "timeout": 0.3})
    assert res.status == "timeout"
    assert time.monotonic() - started < 3


# ---------------------------------------------------------------------------------------------- noop


def test_noop() -> None:
    tool = NoopTool()
    assert asyncio.run(tool.run({}, _ctx())).data == {"status": "ok", "message": "noop"}
    assert asyncio.run(tool.run({"message": "hi"}, _ctx())).data == {"status": "ok", "message": "hi"}
    res = asyncio.run(tool.run({"result": {"x": 1}}, _ctx()))
    assert res.status == "success" and res.data == {"x": 1}
