"""What the security tests share: a real `noetl server start` (a subprocess, so the same tests
can be pointed at an older build with PYTHONPATH), plain HTTP calls with a chosen token, and the
worker protocol spelled out by hand (claim, then report), as an attacker would drive it.

Nothing here imports NoETL: these tests must fail on the code before the security work (commit
648127f) for the right reason, not on an import.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.support.auth import TEST_TOKEN

TWO_STEPS = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: two_steps
  path: security/two_steps
workflow:
  - step: start
    tool:
      kind: python
      code: |
        result = {"step": "start"}
    next: end
  - step: end
    tool:
      kind: python
      code: |
        result = {"step": "end"}
"""

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


@contextmanager
def http(url: str, token: str | None = TEST_TOKEN) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def register(client: httpx.Client, content: str = TWO_STEPS) -> dict[str, Any]:
    answer: dict[str, Any] = ok(client.post("/api/catalog/register", json={"content": content}))
    return answer


def execute(client: httpx.Client, path: str = "security/two_steps", **payload: Any) -> str:
    answer = ok(client.post("/api/execute", json={"path": path, "payload": payload}))
    return str(answer["execution_id"])


def status(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = ok(client.get(f"/api/executions/{execution_id}/status"))
    return answer


def wait_end(client: httpx.Client, execution_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = status(client, execution_id)
        if str(body.get("status")).upper() in TERMINAL:
            return body
        time.sleep(0.1)
    raise AssertionError(f"execution {execution_id} did not end: {body}")


def events(client: httpx.Client, execution_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok(client.get(f"/api/executions/{execution_id}/events"))["events"]
    return rows


def pending(client: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok(client.get("/api/commands/pending"))["commands"]
    return rows


def pending_of(client: httpx.Client, execution_id: str) -> dict[str, Any]:
    """The one pending command of an execution (waits a little for it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for command in pending(client):
            if str(command["execution_id"]) == execution_id:
                return command
        time.sleep(0.05)
    raise AssertionError(f"no pending command for execution {execution_id}")


def claim(client: httpx.Client, command: dict[str, Any], worker_id: str) -> httpx.Response:
    return client.post(f"/api/commands/{command['event_id']}/claim", json={"worker_id": worker_id})


def outcome(command: dict[str, Any], data: Any) -> list[dict[str, Any]]:
    """The events a worker posts for a command it ran: started, the call's result, completed."""
    cid = command["command_id"]
    return [
        {"step": command["step"], "event_type": "command.started", "payload": {"command_id": cid}},
        {
            "step": command["step"],
            "event_type": "call.done",
            "payload": {"command_id": cid, "call_index": 0, "result": {"status": "success", "data": data}},
        },
        {
            "step": command["step"],
            "event_type": "command.completed",
            "payload": {"command_id": cid, "status": "success"},
        },
    ]


def report(
    client: httpx.Client, command: dict[str, Any], worker_id: str, items: list[dict[str, Any]]
) -> httpx.Response:
    body = {"execution_id": str(command["execution_id"]), "worker_id": worker_id, "events": items}
    return client.post("/api/events/batch", json=body)


def make_token(client: httpx.Client, scope: str, name: str) -> str:
    """A new token of `scope`, made with the admin token."""
    answer = ok(client.post("/api/tokens", json={"name": name, "scope": scope}))
    token = answer["token"]
    assert isinstance(token, str) and token
    return token
