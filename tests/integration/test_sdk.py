"""The Python API (`noetl.run`, `noetl.run_async`): the outcome `noetl run --json` gives, from a
user's program (a subprocess with threads and open sockets of its own) and in this process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.support.cli import events, run_playbook
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key
from tests.support.stub_api import StubAPI

import noetl
from noetl.errors import ArgumentError, NoetlError, PlaybookError
from noetl.sdk import RunResult, StepResult

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.yaml"

PIDS = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sdk_pids, path: tests/sdk/pids}
workload: {fd: -1, inode: 0, factor: 2}
workflow:
  - step: start
    tool:
      kind: python
      input: {fd: "{{ workload.fd }}", inode: "{{ workload.inode }}", factor: "{{ workload.factor }}"}
      code: |
        import os
        try:
            inherited = os.fstat(fd).st_ino == inode
        except OSError:
            inherited = False
        result = {"pid": os.getpid(), "inherited_socket": inherited, "product": 21 * factor}
"""

FAILING = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sdk_failing, path: tests/sdk/failing}
workflow:
  - step: start
    tool: {kind: python, code: "raise ValueError('no good')"}
"""

ECHO = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sdk_echo, path: tests/sdk/echo}
workload: {api: "http://127.0.0.1:1"}
workflow:
  - step: start
    tool: {kind: http, url: "{{ workload.api }}/api/v1/echo", auth: sdk_secret}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_import_noetl_stays_light() -> None:
    code = (
        "import sys, noetl\n"
        "heavy = [m for m in ('noetl.sdk', 'noetl.runtime', 'noetl.engine', 'noetl.store', 'jinja2') "
        "if m in sys.modules]\n"
        "print(heavy, callable(noetl.run), 'noetl.sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "True", "True"]


def test_from_a_user_program_with_threads_and_open_sockets(tmp_path: Path) -> None:
    """A program with a thread running and a listening socket calls `noetl.run`: the python step runs
    in a process of its own, which does not hold the program's socket."""
    playbook = write(tmp_path, "pids", PIDS)
    program = tmp_path / "user_program.py"
    program.write_text(
        textwrap.dedent(
            f"""\
            import json, os, socket, threading, time
            import noetl

            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()  # a thread of the program
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen()
            fd, inode = server.fileno(), os.fstat(server.fileno()).st_ino
            result = noetl.run({str(playbook)!r}, {{"fd": fd, "inode": inode}}, sets=["factor=3"],
                               store="sqlite:///{tmp_path}/user.db")
            stop.set()
            print(json.dumps({{"me": os.getpid(), "type": type(result).__name__, **result.to_json()}}))
            """
        ),
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "RunResult"
    assert out["status"] == "COMPLETED", out["error"]
    step = out["steps"]["start"]["result"]
    assert step["product"] == 63  # sets=["factor=3"] parsed as JSON, like --set
    assert step["pid"] != out["me"]
    assert step["inherited_socket"] is False


def test_in_process_matches_noetl_run_json(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/noetl.db"
    result = noetl.run(HELLO, {"who": "API", "numbers": [1, 2]}, sets=["who=SDK"], store=store)
    assert isinstance(result, RunResult)
    assert result.ok and result.status == "COMPLETED" and result.error is None
    assert result.result == {"greeting": "Hello, SDK!", "sum_of_squares": 5}  # sets win over workload
    assert result.steps["end"] == StepResult("COMPLETED", {"greeting": "Hello, SDK!", "sum_of_squares": 5})
    assert result.execution_id.isdigit()

    cli = run_playbook(
        HELLO, store, "--payload", json.dumps({"who": "API", "numbers": [1, 2]}), "--set", "who=SDK"
    )
    assert cli.code == 0, cli.stderr
    from_cli = cli.json
    ours = result.to_json()
    assert set(ours) == set(from_cli) == {"execution_id", "status", "error", "steps"}
    assert {k: v for k, v in ours.items() if k != "execution_id"} == {
        k: v for k, v in from_cli.items() if k != "execution_id"
    }


def test_run_async_and_run_inside_a_running_loop(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/noetl.db"

    async def main() -> tuple[RunResult, RunResult]:
        first = await noetl.run_async(HELLO, {"who": "async"}, store=store)
        second = noetl.run(HELLO, {"who": "nested"}, store=store)  # a notebook calling the sync API
        return first, second

    first, second = asyncio.run(main())
    assert first.result == {"greeting": "Hello, async!", "sum_of_squares": 14}
    assert second.result == {"greeting": "Hello, nested!", "sum_of_squares": 14}
    assert first.execution_id != second.execution_id


def test_a_failed_run_is_a_result_and_bad_input_raises(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/noetl.db"
    failed = noetl.run(write(tmp_path, "failing", FAILING), store=store)
    assert failed.status == "FAILED" and not failed.ok
    assert "no good" in (failed.error or "")
    assert failed.steps["start"].status == "FAILED"

    broken = write(tmp_path, "broken", FAILING.replace("kind: python", "kind: pythn"))
    with pytest.raises(PlaybookError, match="pythn"):
        noetl.run(broken, store=store)
    with pytest.raises(ArgumentError, match="key=value"):
        noetl.run(HELLO, sets=["novalue"], store=store)
    with pytest.raises(ArgumentError, match="mapping"):
        noetl.run(HELLO, [1, 2], store=store)  # type: ignore[arg-type]
    with pytest.raises(NoetlError):
        noetl.run(tmp_path / "missing.yaml", store=store)


def test_default_store_and_credentials_are_those_of_noetl_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub_api: StubAPI
) -> None:
    """Without `store=`, NOETL_STORE_URL is used (where `noetl credential add` wrote the
    credential, and where the events go); resolved secrets are masked in the result."""
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())
    store = f"sqlite:///{tmp_path}/default.db"
    monkeypatch.setenv("NOETL_STORE_URL", store)
    add_credential(store, "sdk_secret", "bearer", {"token": "sdk-secret-value-123"})
    result = noetl.run(write(tmp_path, "echo", ECHO), {"api": stub_api.base_url})
    assert result.ok, result.error
    sent = result.steps["start"].result["data"]["headers"]["authorization"]
    assert sent.startswith("Bearer ") and "sdk-secret-value-123" not in json.dumps(result.to_json())
    recorded = events(result.execution_id, store)
    assert recorded[-1]["event_type"] == "playbook.completed"


SLEEPER = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sdk_sleeper, path: tests/sdk/sleeper}
workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(60); result = 1"}
"""


def test_cancelling_run_async_records_the_cancellation(tmp_path: Path) -> None:
    """A caller cancelling its task cancels the execution (CANCELLED in the log, the step's
    process ended), as Ctrl-C does for `noetl run`."""
    store = f"sqlite:///{tmp_path}/noetl.db"

    async def main() -> None:
        task = asyncio.create_task(noetl.run_async(write(tmp_path, "sleeper", SLEEPER), store=store))
        while not ((tmp_path / "noetl.db").exists() and _started(store)):
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 120))
    from noetl.store import open_store

    target = open_store(store)
    try:
        assert [run.status for run in target.executions()] == ["CANCELLED"]
    finally:
        target.close()


def _started(store: str) -> bool:
    from noetl.store import open_store

    target = open_store(store)
    try:
        return any(
            e.event_type == "command.started"
            for run in target.executions()
            for e in target.read(run.execution_id)
        )
    finally:
        target.close()
