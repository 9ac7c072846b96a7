"""Finding 9: ids above 2^53 were JSON numbers in `/status`, `/api/executions` and the events
(JavaScript clients round them), but strings in `/api/execute`.

Now every id in every answer is a string: no JSON number in an answer is an id, and none is
beyond 2^53 (the playbook here holds no such number in its own data).
"""

from __future__ import annotations

from typing import Any

from tests.security.helpers import (
    claim,
    execute,
    http,
    ok,
    outcome,
    pending_of,
    register,
    report,
)

ID_KEYS = {
    "execution_id",
    "event_id",
    "catalog_id",
    "parent_execution_id",
    "parent_event_id",
    "runtime_id",
    "node_id",
}


def _numbers(value: Any, where: str = "") -> list[str]:
    """Every id given as a number, and every number beyond 2^53, in a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ID_KEYS and item is not None and not isinstance(item, str):
                found.append(f"{where}.{key}={item!r}")
            found += _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _numbers(item, f"{where}[{index}]")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        found.append(f"{where}={value}")
    return found


def test_every_id_in_every_answer_is_a_string(server: str) -> None:
    with http(server) as client:
        registered = register(client)
        ok(client.post("/api/worker/pool/register", json={"name": "w1", "runtime": {"kind": "python"}}))
        execution_id = execute(client)
        command = pending_of(client, execution_id)
        claimed = ok(claim(client, command, "w1"))
        posted = ok(report(client, command, "w1", outcome(command, {"n": 1})))
        second = pending_of(client, execution_id)
        ok(claim(client, second, "w1"))
        ok(report(client, second, "w1", outcome(second, {"n": 2})))
        answers = {
            "register": registered,
            "claim": claimed,
            "events/batch": posted,
            "status": ok(client.get(f"/api/executions/{execution_id}/status")),
            "executions": ok(client.get("/api/executions")),
            "execution": ok(client.get(f"/api/executions/{execution_id}")),
            "events": ok(client.get(f"/api/executions/{execution_id}/events")),
            "command": ok(client.get(f"/api/commands/{command['event_id']}")),
            "catalog/list": ok(client.post("/api/catalog/list", json={})),
            "catalog/resource": ok(client.post("/api/catalog/resource", json={"path": "security/two_steps"})),
            "workers": ok(client.get("/api/worker/pools")),
            "execute": ok(client.post("/api/execute", json={"path": "security/two_steps"})),
        }
        answers["pending/list"] = ok(client.get("/api/commands/pending"))
    assert answers["status"]["status"] == "COMPLETED"
    problems = [problem for name, body in answers.items() for problem in _numbers(body, name)]
    assert problems == [], problems
    assert isinstance(answers["status"]["execution_id"], str)
    assert all(isinstance(i, str) for i in answers["events/batch"]["event_ids"])
