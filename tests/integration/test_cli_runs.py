"""`noetl runs`, `noetl logs`, `noetl events --server`, `noetl --version` and shell completion, as
a user runs them (subprocesses), against a local store and against a real server; and the run
context on log lines (`NOETL_LOG_FORMAT=json`)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.auth import AUTH
from tests.support.cli import noetl, run_playbook
from tests.support.cluster import Cluster, wait_for

from noetl import __version__
from noetl.logcontext import RunContextFilter, run_context
from noetl.logs import StructuredFormatter

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: talk, path: tests/cli/talk}
workload: {items: [1, 2]}
workflow:
  - step: start
    tool:
      kind: shell
      command: "echo said-hello; echo said-warning 1>&2"
    next: each
  - step: each
    loop:
      in: "{{ workload.items }}"
      iterator: n
    tool:
      kind: python
      code: |
        print("item", n)
        result = n
"""

BROKEN = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: broken, path: tests/cli/broken}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        raise RuntimeError("it broke")
"""


@pytest.fixture
def local(tmp_path: Path) -> dict[str, Any]:
    store = f"sqlite:///{tmp_path}/cli.db"
    (tmp_path / "talk.yaml").write_text(PLAYBOOK)
    (tmp_path / "broken.yaml").write_text(BROKEN)
    talk = run_playbook(tmp_path / "talk.yaml", store)
    broken = run_playbook(tmp_path / "broken.yaml", store)
    assert talk.code == 0 and broken.code == 1
    return {"store": store, "talk": talk.json["execution_id"], "broken": broken.json["execution_id"]}


def test_runs_and_logs_from_a_local_store(local: dict[str, Any]) -> None:
    store = local["store"]
    listed = noetl("runs", "--store", store, "--json")
    assert listed.code == 0, listed.stderr
    assert [r["execution_id"] for r in listed.json] == [local["broken"], local["talk"]]
    failed = noetl("runs", "--store", store, "--status", "failed", "--json").json
    assert [(r["execution_id"], r["status"]) for r in failed] == [(local["broken"], "FAILED")]
    by_book = noetl("runs", "--store", store, "--playbook", "tests/cli/talk", "--limit", "1", "--json").json
    assert [r["path"] for r in by_book] == ["tests/cli/talk"]
    table = noetl("runs", "--store", store)
    assert "tests/cli/broken" in table.stdout and "FAILED" in table.stdout

    logs = noetl("logs", local["talk"], "--store", store)
    assert logs.code == 0, logs.stderr
    assert "said-hello" in logs.stdout and "said-warning" in logs.stdout
    assert "item 1" in logs.stdout and "item 2" in logs.stdout and "== each[1]" in logs.stdout
    one = noetl("logs", local["talk"], "start", "--store", store, "--json").json
    assert [(a["step"], a["stdout"], a["stderr"]) for a in one["attempts"]] == [
        ("start", "said-hello\n", "said-warning\n")
    ]
    broken = noetl("logs", local["broken"], "--store", store)
    assert "RuntimeError: it broke" in broken.stdout and "failed" in broken.stdout
    assert noetl("logs", "12345", "--store", store).code == 1


def test_runs_logs_and_events_from_a_server(tmp_path: Path) -> None:
    with Cluster(tmp_path, f"sqlite:///{tmp_path}/server.db") as cluster:
        server = cluster.start_server("cli-server", extra_args=("--with-worker",))
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
            api.post("/api/catalog/register", json={"content": PLAYBOOK}).raise_for_status()
            execution_id = str(
                api.post("/api/execute", json={"path": "tests/cli/talk"}).json()["execution_id"]
            )
            wait_for(
                lambda: api.get(f"/api/executions/{execution_id}/status").json()["status"] == "COMPLETED",
                30,
                "the run to complete",
            )
        at = ("--server", server.url)
        listed = noetl("runs", *at, "--json")
        assert listed.code == 0, listed.stderr
        assert [(r["execution_id"], r["status"]) for r in listed.json] == [(execution_id, "COMPLETED")]
        logs = noetl("logs", execution_id, "start", *at)
        assert "said-hello" in logs.stdout and "said-warning" in logs.stdout
        events = noetl("events", execution_id, *at, "--json")
        assert events.code == 0, events.stderr
        kinds = [e["event_type"] for e in events.json]
        assert kinds[0] == "playbook_started" and kinds[-1] == "playbook.completed"
        assert noetl("events", execution_id, *at).stdout.count("command.issued") == 3
        missing = noetl("logs", "999", *at)
        assert missing.code == 1 and "not found" in missing.stderr


def test_version_and_completion() -> None:
    version = noetl("--version")
    assert version.code == 0 and version.stdout.strip() == f"noetl {__version__}"
    # The shell is named, not detected from the parent process (make runs tests under sh).
    script = noetl("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert script.code == 0 and "COMPLETE=complete_bash" in script.stdout and "COMPREPLY" in script.stdout


def test_log_lines_of_a_run_carry_its_execution_step_and_command() -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(StructuredFormatter(as_json=True))
    handler.addFilter(RunContextFilter())
    logger = logging.getLogger("tests.logcontext")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with run_context(42, "load", "42:load:7:i3"):
            logger.info("inside")
        logger.info("outside")
        logger.info("about a command", extra={"command_id": "43:fan:9"})
    finally:
        logger.removeHandler(handler)
    inside, outside, about = (json.loads(line) for line in sink.getvalue().splitlines())
    assert (inside["execution_id"], inside["step"], inside["command_id"]) == ("42", "load", "42:load:7:i3")
    assert "execution_id" not in outside
    assert (about["execution_id"], about["step"]) == ("43", "fan")


def test_a_step_logging_in_process_is_tagged(tmp_path: Path) -> None:
    """The executor marks the command it runs: a line a tool logs names the run (json format)."""
    (tmp_path / "fetch.yaml").write_text(
        """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fetch, path: tests/cli/fetch}
workflow:
  - step: start
    tool:
      kind: http
      url: "http://127.0.0.1:9/unreachable"
      timeout: 1
"""
    )
    result = run_playbook(
        tmp_path / "fetch.yaml",
        f"sqlite:///{tmp_path}/f.db",
        env={"NOETL_LOG_FORMAT": "json", "NOETL_LOG_LEVEL": "DEBUG"},
    )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    tagged = [line for line in lines if line.get("step") == "start"]
    assert tagged, result.stderr[-2000:]
    assert all(line["execution_id"] == result.json["execution_id"] for line in tagged)
    assert all(line["command_id"].startswith(result.json["execution_id"] + ":start:") for line in tagged)
