"""`noetl.cli.common`: the helpers every command shares, and the shape of the cli package."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from noetl.cli import common

CLI = Path(__file__).resolve().parents[2] / "src" / "noetl" / "cli"


def test_die_prints_the_error_and_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        common.die("no such thing")
    assert caught.value.code == common.EXIT_INVALID == 2
    with pytest.raises(SystemExit) as caught:
        common.die("it failed", common.EXIT_FAILED)
    assert caught.value.code == 1
    assert capsys.readouterr().err == "error: no such thing\nerror: it failed\n"


def test_fail_exits_2_only_for_the_errors_meaning_bad_arguments() -> None:
    from noetl.errors import NotFound, StoreError

    with pytest.raises(SystemExit) as caught:
        common.fail(NotFound("gone"), invalid=(NotFound,))
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        common.fail(StoreError("down"), invalid=(NotFound,))
    assert caught.value.code == 1


def test_print_json_writes_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_json({"id": 1, "path": Path("a/b")})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"id": 1, "path": "a/b"}


def test_assignments_are_json_when_they_parse_else_text() -> None:
    assert common.parse_assignments(["n=3", "flag=true", "who=world", " k =[1, 2]", "empty="]) == {
        "n": 3,
        "flag": True,
        "who": "world",
        "k": [1, 2],
        "empty": "",
    }


@pytest.mark.parametrize("pair", ["novalue", "=3", "  =x"])
def test_a_pair_without_a_key_is_invalid(pair: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        common.parse_assignments([pair])
    assert caught.value.code == 2
    assert f"--set expects key=value, got '{pair}'" in capsys.readouterr().err


def test_the_workload_is_the_payload_overlaid_by_the_assignments(capsys: pytest.CaptureFixture[str]) -> None:
    assert common.build_workload('{"a": 1, "b": {"c": 2}}', ["b=5", "d=x"]) == {"a": 1, "b": 5, "d": "x"}
    assert common.build_workload(None, []) == {}
    for payload, message in (
        ("[1]", "--payload must be a JSON object"),
        ("{", "--payload is not valid JSON"),
    ):
        with pytest.raises(SystemExit) as caught:
            common.build_workload(payload, [])
        assert caught.value.code == 2
        assert message in capsys.readouterr().err


# -- the package's shape ---------------------------------------------------------------------------


def _cli_imports(path: Path) -> set[str]:
    """The `noetl.cli` modules one module imports, at any level (function-level imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name.split(".")[2] for name in found if name.startswith("noetl.cli.")}


def test_no_import_cycle_among_the_cli_modules() -> None:
    graph = {p.stem: _cli_imports(p) - {p.stem} for p in CLI.glob("*.py")}
    assert graph["remote"] == {"common"}  # the cycle this replaced
    assert graph["common"] == {"options"}  # the typer option types, imported on first use
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for imported in graph.get(module, set()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_no_cli_function_is_longer_than_60_lines() -> None:
    long: list[str] = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.name}:{node.name} has {lines} lines")
    assert long == []


def test_one_die_for_the_whole_cli() -> None:
    defined = [
        f"{path.name}:{node.name}"
        for path in sorted(CLI.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in ("die", "fail", "dump", "client")
    ]
    assert defined == ["common.py:die", "common.py:fail"]


FAST_RUN_CHECK = """
import sys
from noetl.cli import entry
sys.argv = ["noetl", "run", sys.argv[1], "--set", "who=fast", "--json", "-q", "--store", sys.argv[2]]
try:
    entry.main()
except SystemExit as exc:
    heavy = sorted(m for m in ("typer", "click", "rich", "httpx", "fastapi", "pydantic") if m in sys.modules)
    sys.stderr.write(f"exit={exc.code} heavy={heavy}\\n")
"""


def test_noetl_run_takes_the_fast_path_without_typer(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    playbook = tmp_path / "p.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: p, path: t/p}\n"
        "workload: {who: nobody}\nworkflow:\n"
        "  - step: start\n    tool:\n      kind: python\n"
        "      input: {who: '{{ workload.who }}'}\n      code: 'result = {\"hello\": who}'\n"
    )
    store = f"sqlite:///{tmp_path / 's.db'}"
    done = subprocess.run(
        [sys.executable, "-c", FAST_RUN_CHECK, str(playbook), store],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "exit=0 heavy=[]" in done.stderr, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["start"]["result"] == {"hello": "fast"}


def test_what_the_fast_path_does_not_recognise_goes_to_the_full_command_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    noetl = [sys.executable, "-m", "noetl"]
    helped = subprocess.run([*noetl, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--payload" in helped.stdout
    typo = subprocess.run(
        [*noetl, "run", "x.yaml", "--sett", "a=1"], capture_output=True, text=True, timeout=120
    )
    assert typo.returncode == 2 and "No such option" in typo.stderr
    zero = subprocess.run(
        [*noetl, "run", "x.yaml", "--concurrency", "0"], capture_output=True, text=True, timeout=120
    )
    assert zero.returncode == 2 and "--concurrency" in zero.stderr
    missing = subprocess.run(
        [*noetl, "run", str(tmp_path / "none.yaml")], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
