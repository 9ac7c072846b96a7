"""No step can take the runtime or the server down (issue 12): a python step runs in a process of
its own, so a crash, an endless loop or a memory blow-up fails that step (or is stopped by its
timeout or a cancel), and the process that orchestrates is the same one before and after.

Each case runs locally (`noetl run`, whose process must survive and report) and against
`noetl server start --with-worker` (whose pid must not change).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.auth import AUTH
from tests.support.cluster import Cluster, ServerProcess, post_json, wait_for, wait_terminal

HEADER = (
    "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata:\n  name: {name}\n  path: tests/isolation/{name}\n"
)


def playbook(name: str, code: str, tool_extra: str = "") -> str:
    body = "".join(f"        {line}\n" for line in code.splitlines())
    return (
        HEADER.format(name=name)
        + "workflow:\n  - step: start\n    next: [{step: work}]\n"
        + f"  - step: work\n    tool:\n      kind: python\n{tool_extra}      code: |\n{body}"
    )


def pid_file_code(pid_file: Path, tail: str) -> str:
    return f"import os\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n{tail}"


CRASH = "import os\nos._exit(3)"
HOG = "x = bytearray(600 * 1024 * 1024)\nresult = len(x)"
LIMITED = "      spec:\n        max_memory_mb: 256\n"
RETRY_CRASH = (
    "      spec:\n        policy:\n          rules:\n"
    "            - when: \"{{ output.status == 'error' }}\"\n"
    "              then: {do: retry, attempts: 3, delay: 0.1}\n"
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_pid(pid_file: Path, timeout: float = 30.0) -> int:
    return wait_for(lambda: int(pid_file.read_text()) if pid_file.exists() and pid_file.read_text() else None,
                    timeout, "the step to write its pid")  # fmt: skip


# ---------------------------------------------------------------------------------- local


def run_local(tmp_path: Path, name: str, text: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "noetl", "run", str(path), "--json", "--quiet", "--store", f"sqlite:///{tmp_path}/n.db"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr  # the runtime survived to report
    return proc.returncode, json.loads(proc.stdout)


def test_local_crash_fails_the_step_not_the_runtime(tmp_path: Path) -> None:
    code, outcome = run_local(tmp_path, "crash", playbook("crash", CRASH))
    assert code == 1 and outcome["status"] == "FAILED"
    assert "worker process exited with code 3 while running step 'work'" in outcome["error"]


def test_local_repeated_crash_fails_after_its_attempts(tmp_path: Path) -> None:
    code, outcome = run_local(tmp_path, "again", playbook("again", CRASH, RETRY_CRASH))
    assert code == 1 and outcome["status"] == "FAILED"
    assert "exited with code 3" in outcome["error"] and "after 3 attempts" in outcome["error"]


def test_local_memory_limit_fails_the_step(tmp_path: Path) -> None:
    code, outcome = run_local(tmp_path, "hog", playbook("hog", HOG, LIMITED))
    assert code == 1 and outcome["status"] == "FAILED"
    assert "MemoryError" in outcome["error"] and "256 MB" in outcome["error"]


def test_local_timeout_kills_the_endless_loop(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    text = playbook("spin", pid_file_code(pid_file, "while True:\n    pass"), "      timeout: 2\n")
    started = time.monotonic()
    code, outcome = run_local(tmp_path, "spin", text)
    assert code == 1 and outcome["status"] == "FAILED"
    assert "timed out after 2 s" in outcome["error"]
    assert time.monotonic() - started < 30
    pid = int(pid_file.read_text())
    wait_for(lambda: not alive(pid), 1.0, f"the step's process {pid} to be gone")


def test_local_cancel_kills_the_endless_loop(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    path = tmp_path / "forever.yaml"
    path.write_text(playbook("forever", pid_file_code(pid_file, "while True:\n    pass")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl", "run", str(path), "--json", "--quiet", "--store", f"sqlite:///{tmp_path}/n.db"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        pid = wait_pid(pid_file)
        proc.send_signal(signal.SIGINT)  # Ctrl-C cancels the run
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    outcome = json.loads(out)
    assert proc.returncode == 1 and outcome["status"] == "CANCELLED", err
    wait_for(lambda: not alive(pid), 1.0, f"the step's process {pid} to be gone")


# ---------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("isolation")
    with Cluster(tmp, f"sqlite:///{tmp}/server.db") as cluster:
        yield cluster.start_server("iso", extra_args=["--with-worker"])


def run_on_server(server: ServerProcess, name: str, text: str) -> tuple[str, dict[str, Any]]:
    assert post_json(server.url, "/api/catalog/register", {"content": text})["status"] == "success"
    execution_id = str(
        post_json(server.url, "/api/execute", {"path": f"tests/isolation/{name}"})["execution_id"]
    )
    return execution_id, wait_terminal(server.url, execution_id, 120)


def assert_server_unharmed(server: ServerProcess, pid: int) -> None:
    assert server.alive() and server.pid == pid
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    _, status = run_on_server(server, "after", playbook("after", "result = 'still here'"))
    assert status["status"] == "COMPLETED" and status["steps"]["work"]["result"] == "still here"


def test_server_crash_fails_the_step_not_the_server(server: ServerProcess) -> None:
    pid = server.pid
    _, status = run_on_server(server, "crash", playbook("crash", CRASH))
    assert status["status"] == "FAILED"
    assert "worker process exited with code 3 while running step 'work'" in status["error"]
    assert_server_unharmed(server, pid)


def test_server_repeated_crash_is_no_crash_loop(server: ServerProcess) -> None:
    pid = server.pid
    _, status = run_on_server(server, "again", playbook("again", CRASH, RETRY_CRASH))
    assert status["status"] == "FAILED" and "after 3 attempts" in status["error"]
    assert_server_unharmed(server, pid)


def test_server_memory_limit_fails_the_step(server: ServerProcess) -> None:
    pid = server.pid
    _, status = run_on_server(server, "hog", playbook("hog", HOG, LIMITED))
    assert status["status"] == "FAILED"
    assert "MemoryError" in status["error"] and "256 MB" in status["error"]
    assert_server_unharmed(server, pid)


def test_server_timeout_kills_the_endless_loop(server: ServerProcess, tmp_path: Path) -> None:
    pid, pid_file = server.pid, tmp_path / "pid"
    text = playbook("spin", pid_file_code(pid_file, "while True:\n    pass"), "      timeout: 2\n")
    _, status = run_on_server(server, "spin", text)
    assert status["status"] == "FAILED" and "timed out after 2 s" in status["error"]
    step_pid = int(pid_file.read_text())
    wait_for(lambda: not alive(step_pid), 1.0, f"the step's process {step_pid} to be gone")
    assert_server_unharmed(server, pid)


def test_server_cancel_kills_the_endless_loop(server: ServerProcess, tmp_path: Path) -> None:
    pid, pid_file = server.pid, tmp_path / "pid"
    text = playbook("forever", pid_file_code(pid_file, "while True:\n    pass"))
    assert post_json(server.url, "/api/catalog/register", {"content": text})["status"] == "success"
    execution_id = str(
        post_json(server.url, "/api/execute", {"path": "tests/isolation/forever"})["execution_id"]
    )
    step_pid = wait_pid(pid_file)
    response = httpx.post(
        f"{server.url}/api/executions/{execution_id}/cancel", json={}, headers=AUTH, timeout=10
    )
    assert response.status_code == 200, response.text
    cancelled = time.monotonic()
    status = wait_terminal(server.url, execution_id, 30)
    assert status["status"] == "CANCELLED"
    wait_for(lambda: not alive(step_pid), 1.0, f"the step's process {step_pid} to be gone")
    assert time.monotonic() - cancelled < 2.0
    assert_server_unharmed(server, pid)


# ---------------------------------------------------------------------------------- big loops

MILLION = (
    HEADER.format(name="million")
    + "workload:\n  n: 1000000\n"
    + "workflow:\n  - step: start\n    next: [{step: big}]\n"
    + '  - step: big\n    loop:\n      in: "{{ workload.n }}"\n      iterator: i\n'
    + "      spec: {mode: parallel}\n    tool: {kind: python, code: 'result = i'}\n"
)


def test_local_million_item_loop_starts_lazily_and_cancels_fast(tmp_path: Path) -> None:
    """A loop over a million items keeps a window of commands outstanding (not a million), runs,
    and a cancel ends it within 2 s."""
    import asyncio

    from noetl.dsl import parse_playbook
    from noetl.engine import events as ev
    from noetl.runtime.local import LocalRuntime
    from noetl.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "million.db")
    issued = completed = 0

    def count(event: Any) -> None:
        nonlocal issued, completed
        issued += event.event_type == ev.COMMAND_ISSUED
        completed += event.event_type == ev.COMMAND_COMPLETED

    async def main() -> tuple[Any, float, int, int]:
        async with LocalRuntime(store, on_event=count, loop_window=200) as runtime:
            task = asyncio.create_task(runtime.run(parse_playbook(MILLION, source=str(tmp_path / "m.yaml"))))
            await asyncio.sleep(3)
            execution_id = runtime.root_execution()
            assert execution_id is not None
            outstanding, done = issued, completed
            started = time.monotonic()
            runtime.cancel(execution_id)
            outcome = await asyncio.wait_for(task, 10)
            return outcome, time.monotonic() - started, outstanding, done

    try:
        outcome, took, outstanding, done = asyncio.run(main())
    finally:
        store.close()
    assert outcome.status == "CANCELLED"
    assert took < 2.0
    assert 0 < done < 1_000_000
    assert outstanding <= done + 200  # never more than the window ahead of what finished


def test_server_million_item_loop_answers_at_once_and_cancels_fast(server: ServerProcess) -> None:
    assert post_json(server.url, "/api/catalog/register", {"content": MILLION})["status"] == "success"
    started = time.monotonic()
    answer = post_json(server.url, "/api/execute", {"path": "tests/isolation/million"})
    assert time.monotonic() - started < 10  # the items run later; execute only issues the first window
    assert 0 < int(answer["commands_generated"]) <= 1000  # `start`, a noop: the loop comes after it
    execution_id = str(answer["execution_id"])
    time.sleep(3)
    response = httpx.post(
        f"{server.url}/api/executions/{execution_id}/cancel", json={}, headers=AUTH, timeout=10
    )
    assert response.status_code == 200, response.text
    cancelled = time.monotonic()
    status = wait_terminal(server.url, execution_id, 30)
    assert status["status"] == "CANCELLED" and time.monotonic() - cancelled < 2.0
