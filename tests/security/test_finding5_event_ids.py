"""Finding 5: event ids were predictable (timestamp + pid % 1024), and an `event_id` already used in
another execution was answered "ok" and silently dropped: seeding predicted ids left 5 of 5 new
runs RUNNING forever.

Now an event id stored under another execution is a 409 (never a silent drop), ids come from a
snowflake node leased per process, and ids planted ahead of time cannot wedge new runs: each one
still ends.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.security.helpers import (
    claim,
    events,
    execute,
    http,
    ok,
    outcome,
    pending_of,
    register,
    report,
    status,
)


def _node(event_id: int) -> int:
    return (event_id >> 12) & 0x3FF


def _started(execution_id: str, command: dict[str, Any], event_id: int) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "worker_id": "w1",
        "step": "start",
        "event_type": "command.started",
        "event_id": str(event_id),
        "payload": {"command_id": command["command_id"]},
    }


def test_an_event_id_of_another_execution_is_never_taken_as_done(server: str) -> None:
    with http(server) as client:
        register(client)
        first = execute(client)
        first_command = pending_of(client, first)
        ok(claim(client, first_command, "w1"))
        server_ids = [int(e["event_id"]) for e in events(client, first)]
        # A worker's own id (another snowflake node than the server's), stored in the first run.
        worker_id = (int(first) & ~(0x3FF << 12)) | (((_node(int(first)) + 1) % 1024) << 12)
        ok(client.post("/api/events", json=_started(first, first_command, worker_id)))
        second = execute(client)
        command = pending_of(client, second)
        ok(claim(client, command, "w1"))
        for event_id in [worker_id, *server_ids]:
            body = _started(second, command, event_id)
            single = client.post("/api/events", json=body)
            batch = report(client, command, "w1", [body])
            for answer in (single, batch):
                # 409: stored under another execution; 422: in the server's own id space.
                assert answer.status_code in (409, 422), (event_id, answer.status_code, answer.text)
            if event_id == worker_id:
                assert single.status_code == batch.status_code == 409
        taken = {int(e["event_id"]) for e in events(client, first)}
        assert worker_id in taken and set(server_ids) <= taken  # nothing moved
        assert not [e for e in events(client, second) if int(e["event_id"]) in taken]
        assert status(client, second)["status"] == "RUNNING"


def _predicted(seen: int, seconds: float, per_ms: int) -> list[str]:
    """Ids a snowflake generator at `seen`'s node would mint over the next `seconds`."""
    millis, node = seen >> 22, (seen >> 12) & 0x3FF
    return [
        str(((millis + step) << 22) | (node << 12) | sequence)
        for step in range(1, int(seconds * 1000))
        for sequence in range(per_ms)
    ]


def _claim_retrying(client: httpx.Client, command: dict[str, Any], worker_id: str) -> None:
    """Claim; a 409 from an id collision with a planted event is retried (the server mints anew)."""
    for _ in range(20):
        answer = claim(client, command, worker_id)
        if answer.status_code == 200:
            return
        assert answer.status_code == 409 and "already claimed" not in answer.text, answer.text
        time.sleep(0.05)
    raise AssertionError(f"could not claim {command['command_id']}")


def _run_by_hand(client: httpx.Client, execution_id: str, worker_id: str) -> dict[str, Any]:
    """Claim and report every command of the run until it ends."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = status(client, execution_id)
        if current["status"] != "RUNNING":
            return current
        command = pending_of(client, execution_id)
        _claim_retrying(client, command, worker_id)
        for _ in range(20):
            answer = report(client, command, worker_id, outcome(command, {"ok": True}))
            if answer.status_code == 200:
                break
            assert answer.status_code == 409, answer.text
    raise AssertionError(f"execution {execution_id} never ended: {status(client, execution_id)}")


def test_planted_ids_do_not_wedge_new_runs(server: str) -> None:
    with http(server) as client:
        register(client)
        planter_run = execute(client)
        held = pending_of(client, planter_run)
        ok(claim(client, held, "planter"))
        # The ids the server will mint next (its node and clock show in the ids it hands out),
        # planted as events of a command the planter holds.
        newest = max(int(e["event_id"]) for e in events(client, planter_run))
        planted = [
            {
                "step": "start",
                "event_type": "command.heartbeat",
                "event_id": event_id,
                "payload": {"command_id": held["command_id"]},
            }
            for event_id in _predicted(newest, seconds=4, per_ms=2)
        ]
        answer = report(client, held, "planter", planted)
        assert answer.status_code == 422, answer.text[:300]  # ids in the server's space are refused
        outcomes = []
        for _ in range(5):
            started = client.post("/api/execute", json={"path": "security/two_steps"})
            assert started.status_code == 200, started.text
            outcomes.append(_run_by_hand(client, str(started.json()["execution_id"]), "honest"))
        assert [o["status"] for o in outcomes] == ["COMPLETED"] * 5, outcomes
