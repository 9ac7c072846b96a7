"""Leases, re-issue and recovery in the control plane (SYSTEM.md §4 item 7), on real stores."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from noetl.engine.events import Event
from noetl.errors import Conflict
from noetl.ids import default_ids
from noetl.runtime.control import ControlPlane, ExecuteRequest
from noetl.store import open_store
from noetl.worker.command import Command
from noetl.worker.executor import Executor

PLAYBOOK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leases, path: tests/leases}
workflow:
  - step: start
    loop: {in: "{{ [1, 2, 3, 4] }}", iterator: x, spec: {mode: parallel}}
    tool: {kind: python, code: "result = x * 10"}
    next: end
  - step: end
    tool: {kind: python, input: {r: "{{ start.results }}"}, code: "result = sum(r)"}
"""


def run_command(control: ControlPlane, store: Any, event_id: int, worker: str) -> list[Event]:
    """Claim and run one command the way a worker does; returns its events (not yet posted)."""
    control.claim(event_id, worker)
    issued = store.get_event(event_id)
    command = Command.from_event(issued)
    executor = Executor(ids=default_ids, worker_id=worker)
    return [executor.events.started(command), *asyncio.run(executor.execute(command))]


def drain(control: ControlPlane, store: Any, execution_id: int, worker: str = "w-live") -> dict[str, Any]:
    for _ in range(100):
        pending = control.pending(limit=50)
        if not pending:
            break
        for item in pending:
            control.ingest(run_command(control, store, item["event_id"], worker))
    return control.status(execution_id)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/cp.db"
    handle = open_store(url)
    yield handle
    handle.close()


def start(control: ControlPlane) -> int:
    control.register(PLAYBOOK)
    return control.execute(ExecuteRequest(path="tests/leases")).execution_id


def test_expired_lease_reissues_and_the_stale_result_is_ignored(store: Any) -> None:
    control = ControlPlane(store, lease_seconds=0.05)
    execution_id = start(control)
    victim = control.pending(limit=1)[0]
    stale = run_command(control, store, victim["event_id"], "w-dead")  # runs, but never reports
    time.sleep(0.1)
    assert control.reap()["reissued"] == 1
    pending_ids = {p["command_id"] for p in control.pending(limit=10)}
    assert victim["command_id"] not in pending_ids and len(pending_ids) == 4
    reissued = next(p for p in control.pending(limit=10) if p["command_id"].endswith(":i0"))
    assert store.get_event(reissued["event_id"]).meta["attempt"] == 2
    control.ingest(stale)  # the dead worker's late report changes nothing
    status = drain(control, store, execution_id)
    assert status["status"] == "COMPLETED"
    assert status["result"] == 100
    log = store.read(execution_id)
    accepted = [e for e in log if e.event_type == "command.completed" and e.node_name == "start"]
    assert len(accepted) == 4  # one per iteration: the superseded attempt's late report was not stored
    assert victim["command_id"] not in {e.command_id for e in accepted}
    assert [e.event_type for e in log].count("command.expired") == 1
    assert control.engine(execution_id).step_data("start") == {
        "results": [10, 20, 30, 40],
        "count": 4,
        "stats": {"total": 4, "completed": 4, "failed": 0},
    }


def test_heartbeat_keeps_the_lease(store: Any) -> None:
    control = ControlPlane(store, lease_seconds=0.3)
    start(control)
    item = control.pending(limit=1)[0]
    control.claim(item["event_id"], "w-slow")
    for _ in range(4):
        time.sleep(0.1)
        assert control.heartbeat("w-slow") == 1
    assert control.reap()["reissued"] == 0


def test_lease_gives_up_after_max_attempts(store: Any) -> None:
    control = ControlPlane(store, lease_seconds=0.01, max_attempts=2)
    execution_id = start(control)
    for _ in range(2):
        target = next(p for p in control.pending(limit=10) if p["command_id"].endswith(":i0"))
        control.claim(target["event_id"], "w-flaky")
        time.sleep(0.03)
        control.reap()
    status = control.status(execution_id)
    assert status["status"] == "FAILED"
    assert "gave up after 2 attempt(s)" in status["error"]


def test_claims_are_exclusive(store: Any) -> None:
    control = ControlPlane(store)
    start(control)
    item = control.pending(limit=1)[0]
    control.claim(item["event_id"], "w1")
    control.claim(item["event_id"], "w1")  # idempotent for the same worker
    with pytest.raises(Conflict):
        control.claim(item["event_id"], "w2")


def test_restart_resumes_from_the_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"
    store = open_store(url)
    control = ControlPlane(store, lease_seconds=0.05)
    execution_id = start(control)
    first, second = control.pending(limit=2)
    control.ingest(run_command(control, store, first["event_id"], "w1"))  # done before the crash
    control.claim(second["event_id"], "w2")  # claimed; w2 dies with the server
    store.close()

    store = open_store(url)  # a new server process on the same store
    control = ControlPlane(store, lease_seconds=0.05)
    assert control.recover() == 1
    assert len(control.pending(limit=10)) == 2  # the two never-claimed iterations
    time.sleep(0.1)
    assert control.reap()["reissued"] == 1  # w2 never came back
    status = drain(control, store, execution_id)
    assert status["status"] == "COMPLETED" and status["result"] == 100
    store.close()
