"""The control plane end to end, as a user drives it: a real `noetl server start` subprocess, a
real `noetl worker start` subprocess, and the CLI client commands (`register`, `exec`, `status`,
`cancel`, `catalog list`).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from tests.support.auth import AUTH
from tests.support.cli import CliResult, noetl

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello.yaml"
HELLO_RESULT = {"greeting": "Hello, world!", "sum_of_squares": 14}
STARTUP_SECONDS = 20.0

SLEEPER = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: sleeper
  path: tests/remote/sleeper
workflow:
  - step: start
    tool:
      kind: python
      code: |
        import time
        time.sleep(3)
        result = {"slept": 3}
    next:
      arcs:
        - step: end
  - step: end
    tool:
      kind: python
      code: |
        result = {"done": True}
"""

FAILING = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: failing
  path: tests/remote/failing
workflow:
  - step: start
    tool:
      kind: python
      code: |
        raise ValueError("boom from the remote worker")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def _server_command_missing() -> str | None:
    """Why the server cannot be started, or None when `noetl server start` exists."""
    proc = subprocess.run(
        [sys.executable, "-m", "noetl", "server", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return (
            f"`noetl server start` is not available yet (exit {proc.returncode}): {proc.stderr.strip()[:200]}"
        )
    return None


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """Terminate a subprocess (SIGTERM, then SIGKILL); returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str | Path, timeout: float = 120) -> CliResult:
        return noetl(*args, "--server", self.url, timeout=timeout)

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers=AUTH, timeout=10)
        response.raise_for_status()
        return response.json()


def _spawn(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    return proc, handle


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    missing = _server_command_missing()
    if missing:
        pytest.skip(missing)
    tmp = tmp_path_factory.mktemp("remote")
    port = _free_port()
    log = tmp / "server.log"
    proc, handle = _spawn(
        ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--store", f"sqlite:///{tmp}/s.db"],
        log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the server did not answer /health within {STARTUP_SECONDS:g}s:\n{log.read_text(errors='replace')}"
                )
            time.sleep(0.1)
        yield Server(url, proc, log)
    finally:
        _stop(proc)
        handle.close()


def _start_worker(server: Server, worker_id: str, log: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    return _spawn(
        [
            "worker",
            "start",
            "--server",
            server.url,
            "--worker-id",
            worker_id,
            "--pool",
            "shared",
            "--concurrency",
            "4",
            "--poll-interval",
            "0.05",
            "--heartbeat-interval",
            "1",
        ],
        log,
    )


def _worker_names(server: Server) -> list[str]:
    return [str(row.get("name")) for row in server.get("/api/worker/pools")]


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def worker(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `noetl worker start` subprocess serving the module's executions."""
    worker_id = f"test-worker-{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc, handle = _start_worker(server, worker_id, log)
    try:
        _wait_until(
            lambda: worker_id in _worker_names(server) or proc.poll() is not None,
            20,
            "the worker to register",
        )
        if proc.poll() is not None:
            pytest.fail(f"the worker exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        yield worker_id
    finally:
        _stop(proc)
        handle.close()


@pytest.fixture(scope="module")
def registered(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Register the module's playbooks once; maps a short name to its catalog path."""
    tmp = tmp_path_factory.mktemp("playbooks")
    paths = {"hello": HELLO}
    for name, text in (("sleeper", SLEEPER), ("failing", FAILING)):
        file = tmp / f"{name}.yaml"
        file.write_text(text, encoding="utf-8")
        paths[name] = file
    found: dict[str, str] = {}
    for name, file in paths.items():
        result = server.cli("register", file)
        assert result.code == 0, result.stderr
        words = result.stdout.split()
        assert words[0] == "registered" and "catalog_id" in words, result.stdout
        found[name] = words[1]
    return found


def _exec_json(server: Server, *args: str, timeout: float = 90) -> tuple[CliResult, dict[str, Any]]:
    result = server.cli("exec", *args, "--json", timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON object on stdout:\n{result.stdout}\n{result.stderr}"
    return result, json.loads(lines[0])


# ---------------------------------------------------------------------- register and catalog


def test_register_prints_path_version_and_catalog_id(server: Server, conformance_dir: Path) -> None:
    result = server.cli("register", HELLO)
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("registered examples/hello version "), result.stdout
    assert "catalog_id " in result.stdout

    again = server.cli("register", conformance_dir / "hello_world" / "hello_world.yaml", "--json")
    assert again.code == 0, again.stderr
    answer = json.loads(again.stdout)
    assert answer["status"] == "success"
    assert answer["path"] == "fixtures/playbooks/hello_world"
    assert int(answer["version"]) >= 1
    assert str(answer["catalog_id"]).isdigit()


def test_register_rejects_an_invalid_playbook(server: Server, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        FAILING.replace("    tool:\n      kind: python\n", "    tool:\n      kind: nosuchtool\n")
    )
    result = server.cli("register", broken)
    assert result.code == 2
    assert "error:" in result.stderr
    assert server.cli("register", tmp_path / "missing.yaml").code == 2


def test_catalog_list_json(server: Server, registered: dict[str, str], conformance_dir: Path) -> None:
    assert server.cli("register", conformance_dir / "hello_world" / "hello_world.yaml").code == 0
    result = server.cli("catalog", "list", "--json")
    assert result.code == 0, result.stderr
    entries = json.loads(result.stdout)["entries"]
    paths = {entry["path"] for entry in entries}
    assert {"examples/hello", "fixtures/playbooks/hello_world", registered["sleeper"]} <= paths
    only = json.loads(server.cli("catalog", "list", "--kind", "playbook", "--json").stdout)["entries"]
    assert {entry["kind"] for entry in only} == {"playbook"}
    human = server.cli("catalog", "list")
    assert human.code == 0 and "examples/hello" in human.stdout


# ---------------------------------------------------------------------- exec, status


def test_exec_wait_json_completes_with_the_result(
    server: Server, registered: dict[str, str], worker: str
) -> None:
    result, outcome = _exec_json(server, registered["hello"], "--wait", "--timeout", "60")
    assert result.code == 0, result.stderr
    assert outcome["status"] == "COMPLETED"
    assert outcome["error"] is None
    assert outcome["steps"]["end"] == {"status": "COMPLETED", "result": HELLO_RESULT}
    assert set(outcome) == {"execution_id", "status", "error", "steps"}  # the shape of `noetl run --json`
    assert str(outcome["execution_id"]).isdigit()
    assert "COMPLETED" in result.stderr  # progress lines go to stderr

    status = server.cli("status", outcome["execution_id"], "--json")
    assert status.code == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["status"] == "COMPLETED"
    assert body["completed"] is True
    assert body["result"] == HELLO_RESULT
    human = server.cli("status", outcome["execution_id"])
    assert human.code == 0 and "COMPLETED" in human.stdout

    # The remote worker ran the commands and reported their events.
    events = server.get(f"/api/executions/{outcome['execution_id']}/events")["events"]
    started = [e for e in events if e["event_type"] == "command.started"]
    assert started and all(
        e.get("worker_id") == worker or (e.get("meta") or {}).get("worker_id") == worker for e in started
    )


def test_exec_with_set_and_payload(server: Server, registered: dict[str, str], worker: str) -> None:
    result, outcome = _exec_json(
        server, registered["hello"], "--wait", "--set", "who=remote", "--payload", '{"numbers": [2, 3]}'
    )
    assert result.code == 0, result.stderr
    assert outcome["steps"]["end"]["result"] == {"greeting": "Hello, remote!", "sum_of_squares": 13}


def test_exec_conformance_hello_world(server: Server, conformance_dir: Path, worker: str) -> None:
    assert server.cli("register", conformance_dir / "hello_world" / "hello_world.yaml").code == 0
    result, outcome = _exec_json(server, "fixtures/playbooks/hello_world", "--wait")
    assert result.code == 0, result.stderr
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["end"]["result"] == {"status": "complete"}


def test_exec_without_wait_prints_the_execute_answer(
    server: Server, registered: dict[str, str], worker: str
) -> None:
    result, answer = _exec_json(server, registered["hello"])
    assert result.code == 0, result.stderr
    assert answer["status"] == "started"
    assert str(answer["execution_id"]).isdigit()
    _wait_until(
        lambda: server.get(f"/api/executions/{answer['execution_id']}/status")["status"] == "COMPLETED",
        60,
        "the execution to complete",
    )


def test_exec_failed_run_exits_1(server: Server, registered: dict[str, str], worker: str) -> None:
    result, outcome = _exec_json(server, registered["failing"], "--wait")
    assert result.code == 1
    assert outcome["status"] == "FAILED"
    assert "boom from the remote worker" in (outcome["error"] or "")


def test_exec_bad_arguments_exit_2(server: Server, registered: dict[str, str]) -> None:
    unknown = server.cli("exec", "no/such/playbook", "--wait")
    assert unknown.code == 2
    assert "not found" in unknown.stderr.lower()
    assert server.cli("exec", registered["hello"], "--payload", "[1]").code == 2
    assert server.cli("exec", registered["hello"], "--set", "novalue").code == 2
    assert server.cli("exec", str(HELLO)).code == 2  # a file: register it first


def test_status_of_unknown_execution(server: Server) -> None:
    result = server.cli("status", "12345")
    assert result.code == 1
    assert "not found" in result.stderr.lower()


# ---------------------------------------------------------------------- cancel


def test_cancel_a_running_execution(server: Server, registered: dict[str, str], worker: str) -> None:
    result, answer = _exec_json(server, registered["sleeper"])
    assert result.code == 0, result.stderr
    execution_id = answer["execution_id"]
    _wait_until(
        lambda: server.get(f"/api/executions/{execution_id}/status").get("current_step") == "start",
        20,
        "the sleeping step to run",
    )
    cancelled = server.cli("cancel", execution_id, "--reason", "test says stop")
    assert cancelled.code == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    status = json.loads(server.cli("status", execution_id, "--json").stdout)
    assert status["status"] == "CANCELLED"
    assert status["is_cancelled"] is True
    # Cancelling an ended execution is refused.
    again = server.cli("cancel", execution_id, "--no-cascade")
    assert again.code == 1
    assert "error:" in again.stderr
    # The worker survives the refused outcome of the cancelled command and keeps serving.
    time.sleep(3.5)
    after, outcome = _exec_json(server, registered["hello"], "--wait", "--timeout", "60")
    assert after.code == 0, after.stderr
    assert outcome["steps"]["end"]["result"] == HELLO_RESULT


def test_exec_wait_reports_a_cancelled_run(server: Server, registered: dict[str, str], worker: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "noetl",
            "exec",
            registered["sleeper"],
            "--wait",
            "--json",
            "--server",
            server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running() -> bool:
            rows = server.get("/api/executions?status=RUNNING")
            return any(row.get("path") == registered["sleeper"] for row in rows)

        _wait_until(running, 20, "the execution to start")
        rows = [
            r for r in server.get("/api/executions?status=RUNNING") if r.get("path") == registered["sleeper"]
        ]
        assert server.cli("cancel", str(rows[0]["execution_id"])).code == 0
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr
    assert json.loads(stdout)["status"] == "CANCELLED"


# ---------------------------------------------------------------------- worker lifecycle


def test_worker_sigterm_while_idle_exits_0_and_deregisters(server: Server, tmp_path: Path) -> None:
    worker_id = f"test-idle-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "idle-worker.log"
    proc, handle = _start_worker(server, worker_id, log)
    try:
        _wait_until(
            lambda: worker_id in _worker_names(server) or proc.poll() is not None,
            20,
            "the worker to register",
        )
        assert proc.poll() is None, log.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM)
        begin = time.monotonic()
        code = proc.wait(timeout=10)
        assert code == 0, log.read_text(errors="replace")
        assert time.monotonic() - begin < 5
        assert worker_id not in _worker_names(server)
    finally:
        _stop(proc)
        handle.close()


def test_worker_sigterm_lets_the_running_command_finish(
    server: Server, registered: dict[str, str], tmp_path: Path
) -> None:
    pool = f"drain-{uuid.uuid4().hex[:8]}"  # a pool of its own, so the module's worker stays out
    worker_id = f"test-drain-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "drain-worker.log"
    proc, handle = _spawn(
        [
            "worker",
            "start",
            "--server",
            server.url,
            "--worker-id",
            worker_id,
            "--pool",
            pool,
            "--poll-interval",
            "0.05",
        ],
        log,
    )
    try:
        _wait_until(
            lambda: worker_id in _worker_names(server) or proc.poll() is not None,
            20,
            "the worker to register",
        )
        result, answer = _exec_json(server, registered["sleeper"], "--pool", pool)
        assert result.code == 0, result.stderr
        execution_id = answer["execution_id"]
        _wait_until(
            lambda: server.get(f"/api/executions/{execution_id}/status").get("current_step") == "start",
            20,
            "the sleeping step to run",
        )
        time.sleep(0.5)  # claimed and running
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code == 0, log.read_text(errors="replace")
        assert worker_id not in _worker_names(server)
        events = server.get(f"/api/executions/{execution_id}/events")["events"]
        done = [e for e in events if e["event_type"] == "command.completed" and e.get("node_name") == "start"]
        assert len(done) == 1, "the in-flight command reported its outcome before the worker left"
        assert server.cli("cancel", execution_id).code == 0  # `end` waits for a worker of that pool
    finally:
        _stop(proc)
        handle.close()


def test_secret_data_is_not_given_to_a_client_without_a_command(server: Server) -> None:
    """Secrets leave the server only to a worker holding a command that uses them: the admin
    token, or a worker asking outside such a command, gets a 403 and no data."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    name = f"remote_cred_{uuid.uuid4().hex[:6]}"
    response = httpx.post(
        server.url + "/api/credentials",
        json={"name": name, "type": "postgres", "data": {"db_host": "db.internal", "db_password": secret}},
        headers=AUTH,
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    assert secret not in response.text
    for params in (
        {"include_data": "true"},
        {"include_data": "true", "worker_id": "w-x", "command_id": "1:start:2"},
    ):
        refused = httpx.get(f"{server.url}/api/credentials/{name}", params=params, headers=AUTH, timeout=10)
        assert refused.status_code == 403, refused.text
        assert secret not in refused.text
    plain = httpx.get(f"{server.url}/api/credentials/{name}", headers=AUTH, timeout=10)
    assert plain.status_code == 200 and "data" not in plain.json()


def test_unreachable_server_is_reported() -> None:
    port = _free_port()
    result = noetl("status", "1", "--server", f"http://127.0.0.1:{port}", timeout=60)
    assert result.code == 1
    assert f"cannot reach the NoETL server at http://127.0.0.1:{port}" in result.stderr


SPINNER = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: spinner
  path: tests/remote/spinner
workflow:
  - step: start
    tool:
      kind: python
      input: {marker: "{{ marker }}"}
      code: |
        import pathlib, time
        pathlib.Path(marker + ".started").write_text("started")
        for _ in range(120):  # 6 s in short sleeps: stoppable between them
            time.sleep(0.05)
        pathlib.Path(marker).write_text("finished")
        result = {"spun": True}
"""


def test_cancel_stops_the_running_tool_on_the_worker(server: Server, worker: str, tmp_path: Path) -> None:
    """SYSTEM.md §4 item 5: a cancel reaches the worker (in its heartbeat answer), which stops
    the running tool: the code never reaches its last line."""
    file = tmp_path / "spinner.yaml"
    file.write_text(SPINNER, encoding="utf-8")
    assert server.cli("register", file).code == 0
    marker = tmp_path / "spun"
    result, answer = _exec_json(server, "tests/remote/spinner", "--set", f"marker={marker}")
    assert result.code == 0, result.stderr
    _wait_until(lambda: (tmp_path / "spun.started").exists(), 30, "the spinner to start on the worker")
    assert server.cli("cancel", answer["execution_id"]).code == 0
    time.sleep(7)  # past the spinner's 6 s: it would have finished had it not been stopped
    assert not marker.exists(), "the cancelled command's tool ran to its end"
