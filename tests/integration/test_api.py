"""The control-plane HTTP API (docs/api.md).

Route tests run the app in-process (`TestClient`) over a memory store and drive commands the way a
remote worker does: claim, then post `command.started`, `call.done` and `command.completed` events.
One end-to-end test starts the real `noetl server start --with-worker` and runs playbooks over HTTP.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.support.auth import AUTH, TEST_TOKEN

from noetl.api.app import create_app
from noetl.api.server import build_app, open_bus, public_url
from noetl.errors import NoetlError
from noetl.ids import Snowflake
from noetl.runtime.control import ControlPlane
from noetl.store import open_store

ROOT = Path(__file__).resolve().parents[2]
HELLO_EXAMPLE = ROOT / "examples" / "hello.yaml"
HELLO_WORLD = ROOT.parent / "shared" / "conformance" / "playbooks" / "hello_world" / "hello_world.yaml"

TWO_STEPS = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: two_steps
  path: tests/api/two_steps
workload:
  who: world
workflow:
  - step: start
    tool:
      kind: python
      input: {who: "{{ workload.who }}"}
      code: |
        result = {"hello": who}
    next: end
  - step: end
    tool:
      kind: python
      code: |
        result = {"done": True}
"""

LOOP_START = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: loop_start
  path: tests/api/loop_start
workload:
  items: [1, 2, 3]
workflow:
  - step: start
    loop:
      in: "{{ workload.items }}"
      iterator: n
      spec: {mode: parallel}
    tool:
      kind: python
      code: |
        result = n
"""

CHILD = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: child
  path: tests/api/child
workload:
  n: 0
workflow:
  - step: start
    tool:
      kind: python
      input: {n: "{{ workload.n }}"}
      code: |
        result = {"sq": n * n}
"""

PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: parent
  path: tests/api/parent
workload:
  items: [1, 2, 3]
workflow:
  - step: start
    loop:
      in: "{{ workload.items }}"
      iterator: n
      spec: {mode: parallel}
    tool: {kind: playbook, path: tests/api/child, input: {n: "{{ n }}"}}
    next:
      arcs:
        - step: piped
          when: "{{ event.name == 'loop.done' }}"
  - step: piped
    tool:
      - name: a
        kind: playbook
        path: tests/api/child
        input: {n: 10}
      - name: b
        kind: python
        input: {x: "{{ a }}"}
        code: |
          result = {"got": x}
    next: end
  - step: end
    tool:
      kind: python
      input: {s: "{{ start.results }}", p: "{{ piped }}"}
      code: |
        result = {"s": s, "p": p}
"""

DATASET = """\
apiVersion: noetl.io/v2
kind: Dataset
metadata:
  name: numbers
  path: tests/api/numbers
"""


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def control() -> ControlPlane:
    return ControlPlane(open_store("memory://"))


@pytest.fixture
def client(control: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(control, admin_token=TEST_TOKEN), headers=AUTH) as test_client:
        yield test_client


def worker_ids(control: ControlPlane) -> Snowflake:
    """The id generator of a worker: another snowflake node than the server's (the server refuses
    client event ids in its own id space)."""
    return Snowflake((getattr(control.ids, "node", 0) + 1) % 1024)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "status"}, body
    assert body["status"] == status
    message = body["error"]
    assert isinstance(message, str)
    return message


def register(client: TestClient, content: str = TWO_STEPS) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.post("/api/catalog/register", json={"content": content}))
    return result


def execute(client: TestClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.post("/api/execute", json=body or {"path": "tests/api/two_steps"}))
    return result


def pending(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = ok(client.get("/api/commands/pending", params=params))["commands"]
    return rows


def claim(client: TestClient, event_id: int | str, worker_id: str = "w1") -> httpx.Response:
    return client.post(f"/api/commands/{event_id}/claim", json={"worker_id": worker_id})


def finish(client: TestClient, command: dict[str, Any], data: Any, worker_id: str = "w1") -> None:
    """Report a claimed command's run as a worker does, one `POST /api/events` per event."""
    command_id = command["command_id"]
    for event_type, payload in (
        ("command.started", {"command_id": command_id}),
        (
            "call.done",
            {
                "command_id": command_id,
                "call_index": 0,
                "result": {"status": "success", "context": {"data": data}},
            },
        ),
        ("command.completed", {"command_id": command_id, "status": "success"}),
    ):
        body = {
            "execution_id": str(command["execution_id"]),
            "step": command["step"],
            "event_type": event_type,
            "payload": payload,
            "worker_id": worker_id,
        }
        assert ok(client.post("/api/events", json=body))["status"] == "ok"


def work(client: TestClient, worker_id: str = "w1") -> list[str]:
    """Run every pending command until none is left; returns the steps run, in order."""
    steps: list[str] = []
    for _ in range(100):
        commands = pending(client)
        if not commands:
            return steps
        for command in commands:
            ok(claim(client, command["event_id"], worker_id))
            finish(client, command, {"step": command["step"]}, worker_id)
            steps.append(command["step"])
    raise AssertionError("commands never ran out")


def status_of(client: TestClient, execution_id: str | int) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.get(f"/api/executions/{execution_id}/status"))
    return result


# ---------------------------------------------------------------------------------- health, docs, errors


def test_health_routes(client: TestClient) -> None:
    assert ok(client.get("/health")) == {"status": "ok"}
    body = ok(client.get("/api/health"))
    assert body["status"] == "ok"
    assert body["database"] == "connected"
    assert body["nats"] == "not_configured"
    assert isinstance(body["uptime_seconds"], (int, float))
    assert body["version"]


def test_openapi_docs_list_every_route(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = ok(client.get("/openapi.json"))["paths"]
    expected = {
        "/health": {"get"},
        "/api/health": {"get"},
        "/api/catalog/register": {"post"},
        "/api/catalog/list": {"post"},
        "/api/catalog/resource": {"post"},
        "/api/execute": {"post"},
        "/api/execute/batch": {"post"},
        "/api/events": {"post"},
        "/api/events/batch": {"post"},
        "/api/commands/pending": {"get"},
        "/api/commands/{event_id}": {"get"},
        "/api/commands/{event_id}/claim": {"post"},
        "/api/executions": {"get"},
        "/api/executions/{execution_id}": {"get"},
        "/api/executions/{execution_id}/status": {"get"},
        "/api/executions/{execution_id}/events": {"get"},
        "/api/executions/{execution_id}/cancel": {"post"},
        "/api/worker/pool/register": {"post"},
        "/api/worker/pool/heartbeat": {"post"},
        "/api/worker/pool/deregister": {"post", "delete"},
        "/api/worker/pools": {"get"},
        "/api/credentials": {"get", "post"},
        "/api/credentials/{name}": {"get", "delete"},
        "/api/tokens": {"get", "post"},
        "/api/tokens/{name}": {"delete"},
        "/api/runs": {"get"},
        "/api/runs/{execution_id}": {"get"},
        "/api/runs/{execution_id}/logs": {"get"},
        "/api/runs/{execution_id}/steps/{step}/iterations": {"get"},
        "/api/activity": {"get"},
        "/api/schedules": {"get", "post"},
        "/api/schedules/{schedule_id}": {"get", "patch", "delete"},
        "/api/schedules/{schedule_id}/trigger": {"post"},
        "/api/schedules/{schedule_id}/ticks": {"get"},
        "/api/subscriptions": {"get", "post"},
        "/api/subscriptions/{subscription_id}": {"get", "patch", "delete"},
        "/api/subscriptions/{subscription_id}/events": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    # Bodies are typed (a model each, never "any JSON"), answers too, and errors are documented.
    for path, operations in paths.items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body:
                schema = body["schema"]
                refs = [schema.get("$ref")] + [s.get("$ref") for s in schema.get("anyOf", [])]
                assert any(refs), (method, path, schema)
            answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert answer, (method, path)
            if path.startswith("/api/") and path != "/api/health":
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
                assert operation["security"] == [{"bearer": []}]


def test_error_bodies(client: TestClient) -> None:
    bad_json = client.post("/api/execute", content=b"{not json", headers={"content-type": "application/json"})
    assert error(bad_json, 400).startswith("Invalid JSON body")
    error(client.post("/api/execute", json=[1, 2]), 422)
    error(client.get("/api/commands/not-a-number"), 422)
    error(client.get("/api/no/such/route"), 404)
    # a JSON body sent with another content type (curl -d) is still read as JSON
    form = client.post(
        "/api/execute",
        content=b'{"path": "nowhere"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert error(form, 404) == "Playbook not found: nowhere"


# ---------------------------------------------------------------------------------- catalog


def test_register_counts_versions_per_path(client: TestClient) -> None:
    first = register(client)
    assert first["status"] == "success"
    assert (first["path"], first["version"], first["kind"]) == ("tests/api/two_steps", 1, "playbook")
    assert isinstance(first["catalog_id"], str) and first["catalog_id"].isdigit()
    assert first["message"] == "Resource 'tests/api/two_steps' version '1' registered."
    second = register(client)
    assert second["version"] == 2
    assert second["catalog_id"] != first["catalog_id"]


def test_register_accepts_base64_content(client: TestClient) -> None:
    encoded = base64.b64encode(TWO_STEPS.encode()).decode()
    assert register(client, encoded)["path"] == "tests/api/two_steps"
    wrapped = base64.encodebytes(TWO_STEPS.encode()).decode()  # `base64 file.yaml` wraps lines
    assert "\n" in wrapped.strip()
    assert register(client, wrapped)["version"] == 2
    entry = ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps"}))
    assert entry["content"] == TWO_STEPS  # stored as YAML text, not base64


def test_register_rejects_bad_documents(client: TestClient) -> None:
    assert "content" in error(client.post("/api/catalog/register", json={}), 422)
    assert "YAML" in error(client.post("/api/catalog/register", json={"content": "a: [1"}), 422)
    assert "metadata" in error(client.post("/api/catalog/register", json={"content": "kind: Playbook"}), 422)


def test_catalog_list_filters_by_kind_newest_first(client: TestClient) -> None:
    register(client)
    register(client, DATASET)
    register(client)
    entries = ok(client.post("/api/catalog/list", json={}))["entries"]
    assert [(e["path"], e["version"]) for e in entries] == [
        ("tests/api/two_steps", 2),
        ("tests/api/numbers", 1),
        ("tests/api/two_steps", 1),
    ]
    stamps = [e["created_at"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)
    assert all(s.endswith("Z") and "T" in s for s in stamps)
    entry = entries[0]
    assert set(entry) >= {"catalog_id", "path", "kind", "version", "content", "created_at", "meta"}
    playbooks = ok(client.post("/api/catalog/list", json={"resource_type": "playbook"}))["entries"]
    assert [e["version"] for e in playbooks] == [2, 1]
    datasets = ok(client.post("/api/catalog/list", json={"resource_type": "dataset"}))["entries"]
    assert [e["path"] for e in datasets] == ["tests/api/numbers"]
    assert ok(client.post("/api/catalog/list"))["entries"]  # the body is optional


def test_catalog_resource_lookups(client: TestClient) -> None:
    first = register(client)
    second = register(client)
    latest = ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps"}))
    assert latest["version"] == 2 and latest["catalog_id"] == second["catalog_id"]
    assert (
        ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": "latest"}))[
            "version"
        ]
        == 2
    )
    assert (
        ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": "1"}))[
            "version"
        ]
        == 1
    )
    assert (
        ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": 1}))[
            "version"
        ]
        == 1
    )
    by_id = ok(client.post("/api/catalog/resource", json={"catalog_id": first["catalog_id"]}))
    assert (by_id["path"], by_id["version"]) == ("tests/api/two_steps", 1)
    error(client.post("/api/catalog/resource", json={"path": "tests/api/missing"}), 404)
    error(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": "7"}), 404)
    error(client.post("/api/catalog/resource", json={"catalog_id": "123"}), 404)
    error(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": "x"}), 422)
    error(client.post("/api/catalog/resource", json={}), 422)


# ---------------------------------------------------------------------------------- execute


def test_execute_validates_and_resolves(client: TestClient) -> None:
    message = error(client.post("/api/execute", json={"payload": {}}), 422)
    assert message == "Either 'path' or 'catalog_id' must be provided"
    assert error(client.post("/api/execute", json={"path": "tests/api/missing"}), 404) == (
        "Playbook not found: tests/api/missing"
    )
    error(client.post("/api/execute", json={"path": "x", "payload": [1]}), 422)
    error(client.post("/api/execute", json={"path": "x", "dedup": {"key": "k", "window_secs": -1}}), 422)


def test_execute_starts_with_payload_or_workload_alias(client: TestClient) -> None:
    entry = register(client)
    started = execute(client, {"path": "tests/api/two_steps", "workload": {"who": "alias"}})
    assert started["status"] == "started"
    assert isinstance(started["execution_id"], str)
    assert started["commands_generated"] == 1
    detail = ok(client.get(f"/api/executions/{started['execution_id']}"))
    assert detail["workload"] == {"who": "alias"}
    by_id = execute(client, {"catalog_id": entry["catalog_id"], "payload": {"who": "payload"}})
    assert ok(client.get(f"/api/executions/{by_id['execution_id']}"))["workload"] == {"who": "payload"}
    command = ok(client.get(f"/api/commands/{pending(client)[0]['event_id']}"))
    assert command["context"]["tool_config"]["input"] == {"who": "alias"}


def test_execute_loop_start_counts_every_command(client: TestClient) -> None:
    register(client, LOOP_START)
    started = execute(client, {"path": "tests/api/loop_start"})
    assert started["commands_generated"] == 3
    assert len(pending(client)) == 3


def test_execute_batch_limits(client: TestClient) -> None:
    error(client.post("/api/execute/batch", json={"executions": []}), 422)
    error(client.post("/api/execute/batch", json={}), 422)
    too_many = [{"path": "tests/api/two_steps"}] * 1001
    message = error(client.post("/api/execute/batch", json={"executions": too_many}), 422)
    assert message == "execute batch size 1001 exceeds the 1000 cap"


def test_execute_batch_contains_partial_failure(client: TestClient, control: ControlPlane) -> None:
    register(client)
    items = [
        {"path": "tests/api/two_steps", "payload": {"who": "a"}},
        {"payload": {}},
        {"path": "tests/api/missing"},
        {"path": "tests/api/two_steps", "workload": {"who": "b"}},
    ]
    body = ok(client.post("/api/execute/batch", json={"executions": items}))
    assert (body["count"], body["started"], body["duplicates"], body["failed"]) == (4, 2, 0, 2)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["status"] for r in results] == ["started", "error", "error", "started"]
    assert results[1]["error"] == "Either 'path' or 'catalog_id' must be provided"
    assert results[2]["error"] == "Playbook not found: tests/api/missing"
    assert all(r["commands_generated"] == 0 for r in results[1:3])
    for index in (0, 3):
        assert results[index]["commands_generated"] == 1
        assert status_of(client, results[index]["execution_id"])["status"] == "RUNNING"
    assert len(control.store.executions()) == 2


# ---------------------------------------------------------------------------------- dedup


def test_dedup_returns_the_first_execution(client: TestClient) -> None:
    register(client)
    request = {"path": "tests/api/two_steps", "dedup": {"key": "order-1"}}
    first = execute(client, request)
    second = execute(client, request)
    assert first["status"] == "started"
    assert second == {"execution_id": first["execution_id"], "status": "duplicate", "commands_generated": 0}
    explicit = {"path": "tests/api/two_steps", "dedup": {"key": "order-2", "window_secs": 60}}
    third = execute(client, explicit)
    assert third["status"] == "started" and third["execution_id"] != first["execution_id"]
    assert execute(client, explicit)["execution_id"] == third["execution_id"]
    assert len(ok(client.get("/api/executions"))) == 2


def test_dedup_key_is_not_spent_by_a_failed_request(client: TestClient) -> None:
    request = {"path": "tests/api/two_steps", "dedup": {"key": "early"}}
    error(client.post("/api/execute", json=request), 404)
    register(client)
    assert execute(client, request)["status"] == "started"


def test_dedup_is_race_safe(client: TestClient, control: ControlPlane) -> None:
    register(client)
    request = {"path": "tests/api/two_steps", "dedup": {"key": "race", "window_secs": 300}}
    threads = 8
    barrier = threading.Barrier(threads)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def post() -> None:
        barrier.wait()
        body = ok(client.post("/api/execute", json=request))
        with lock:
            answers.append(body)

    runners = [threading.Thread(target=post) for _ in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=30)
    assert len(answers) == threads
    assert sorted(a["status"] for a in answers).count("started") == 1
    assert len({a["execution_id"] for a in answers}) == 1
    assert len(control.store.executions()) == 1


# ---------------------------------------------------------------------------------- commands and events


def test_pending_and_get_command(client: TestClient) -> None:
    register(client)
    started = execute(client)
    commands = pending(client)
    assert len(commands) == 1
    command = commands[0]
    assert set(command) == {"execution_id", "event_id", "command_id", "step", "server_url"}
    assert str(command["execution_id"]) == started["execution_id"]
    assert command["step"] == "start"
    assert command["command_id"] == f"{started['execution_id']}:start:{command['event_id']}"
    assert pending(client, pool="shared") == commands
    assert pending(client, pool="elsewhere") == []
    execute(client)
    assert len(pending(client)) == 2
    assert len(pending(client, limit=1)) == 1
    fetched = ok(client.get(f"/api/commands/{command['event_id']}"))
    assert set(fetched) >= {"execution_id", "node_id", "node_name", "action", "context", "meta"}
    assert (fetched["node_name"], fetched["action"]) == ("start", "python")
    assert fetched["meta"]["command_id"] == command["command_id"]
    assert "tool_config" in fetched["context"]
    assert error(client.get("/api/commands/42"), 404) == "command.issued event not found: 42"


def test_claim_arbitration(client: TestClient) -> None:
    register(client)
    execute(client)
    command = pending(client)[0]
    claimed = ok(claim(client, command["event_id"], "w1"))
    assert claimed["status"] == "ok"
    assert claimed["event_id"] == command["event_id"]
    assert claimed["node_name"] == "start" and claimed["action"] == "python"
    assert pending(client) == []
    assert ok(claim(client, command["event_id"], "w1"))["status"] == "ok"  # same worker: idempotent
    assert "w1" in error(claim(client, command["event_id"], "w2"), 409)
    error(claim(client, 12345, "w1"), 404)
    error(client.post(f"/api/commands/{command['event_id']}/claim", json={}), 422)


def test_worker_protocol_runs_a_playbook(client: TestClient) -> None:
    register(client)
    started = execute(client, {"path": "tests/api/two_steps"})
    assert work(client) == ["start", "end"]
    status = status_of(client, started["execution_id"])
    assert status["status"] == "COMPLETED"
    assert status["completed"] is True and status["failed"] is False and status["is_cancelled"] is False
    assert status["result"] == {"step": "end"}
    assert status["progress"]["completed_steps"] == 2
    assert set(status) >= {"execution_id", "current_step", "error", "progress"}
    events = ok(client.get(f"/api/executions/{started['execution_id']}/events"))["events"]
    types = [e["event_type"] for e in events]
    assert types[0] == "playbook_started" and types[-1] == "playbook.completed"
    assert types.count("command.claimed") == 2 and types.count("call.done") == 2
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids)


def test_event_ingest_is_idempotent(client: TestClient, control: ControlPlane) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    ok(claim(client, command["event_id"]))
    event_id = worker_ids(control)()  # a worker mints ids on its own snowflake node
    body = {
        "execution_id": started["execution_id"],
        "step": "start",
        "name": "command.started",
        "context": {"command_id": command["command_id"]},
        "event_id": str(event_id),
        "worker_id": "w1",
    }
    first = ok(client.post("/api/events", json=body))
    second = ok(client.post("/api/events", json=body))
    assert first == second == {"status": "ok", "event_id": str(event_id), "commands_generated": 0}
    stored = [e for e in control.store.read(int(started["execution_id"])) if e.event_id == event_id]
    assert len(stored) == 1
    assert stored[0].status == "RUNNING"
    assert (stored[0].meta or {})["worker_id"] == "w1"
    assert stored[0].result == {"status": "RUNNING", "context": {"command_id": command["command_id"]}}


def test_event_ingest_errors(client: TestClient) -> None:
    register(client)
    started = execute(client)
    assert (
        error(client.post("/api/events", json={"execution_id": "x", "event_type": "a"}), 422)
        == "Invalid execution_id"
    )
    error(client.post("/api/events", json={"execution_id": started["execution_id"], "step": "start"}), 422)
    error(client.post("/api/events", json={"execution_id": "123", "event_type": "command.started"}), 404)


def test_event_batch_inherits_the_envelope(client: TestClient, control: ControlPlane) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    ok(claim(client, command["event_id"], "batch-worker"))
    cid = command["command_id"]
    body = {
        "execution_id": started["execution_id"],
        "worker_id": "batch-worker",
        "events": [
            {"step": "start", "event_type": "command.started", "payload": {"command_id": cid}},
            {
                "step": "start",
                "name": "call.done",
                "context": {
                    "command_id": cid,
                    "call_index": 0,
                    "result": {"status": "success", "context": {"data": 1}},
                },
            },
            {
                "step": "start",
                "event_type": "command.completed",
                "payload": {"command_id": cid, "status": "success"},
            },
        ],
    }
    answer = ok(client.post("/api/events/batch", json=body))
    assert answer["status"] == "ok" and answer["commands_generated"] == 0
    assert len(answer["event_ids"]) == 3
    by_id = {e.event_id: e for e in control.store.read(int(started["execution_id"]))}
    for event_id in answer["event_ids"]:
        assert isinstance(event_id, str)
        event = by_id[int(event_id)]
        assert event.worker_id == "batch-worker"
        assert event.execution_id == int(started["execution_id"])
    assert [c["step"] for c in pending(client)] == ["end"]  # command.completed moved the run on
    assert (
        ok(client.post("/api/events/batch", json={"execution_id": started["execution_id"], "events": []}))[
            "event_ids"
        ]
        == []
    )


def test_worker_batches_answer_errors_like_the_app(client: TestClient, control: ControlPlane) -> None:
    """The hot routes (noetl.api.hot) answer the same {error, status} bodies as every route."""
    for path in ("/api/events/batch", "/api/commands/claim"):
        bad = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("Invalid JSON body")
        assert error(client.post(path, json=[1, 2]), 422) == "the request body must be a JSON object"
    assert error(client.post("/api/events/batch", json={"events": {}}), 422) == "'events' must be an array"
    assert (
        error(client.post("/api/events/batch", json={"events": [1]}), 422)
        == "events[0] must be a JSON object"
    )
    unknown = {"execution_id": "123", "events": [{"step": "s", "event_type": "command.started"}]}
    assert error(client.post("/api/events/batch", json=unknown), 404) == "execution 123 not found"
    assert "worker_id" in error(client.post("/api/commands/claim", json={}), 422)
    assert error(client.post("/api/commands/claim", json={"worker_id": "w", "limit": 0}), 422) == (
        "'limit' must be an integer from 1 to 1000"
    )
    assert error(client.post("/api/commands/claim", json={"worker_id": "w", "limit": 1001}), 422) == (
        "'limit' must be an integer from 1 to 1000"
    )
    small = create_app(control, admin_token=TEST_TOKEN, max_batch_body_bytes=64, max_body_bytes=64)
    with TestClient(small, headers=AUTH) as capped:
        for path in ("/api/events/batch", "/api/execute"):
            answer = error(capped.post(path, json={"events": [], "pad": "x" * 100}), 413)
            assert answer.startswith("request body larger than")


def _direct_report(client: TestClient, command: dict[str, Any], worker_id: str) -> dict[str, Any]:
    """What a worker that ran a command from its notification posts: its claim, then the outcome."""
    cid = command["command_id"]
    events = [
        {"step": command["step"], "event_type": "command.claimed", "payload": {"command_id": cid}},
        {"step": command["step"], "event_type": "command.started", "payload": {"command_id": cid}},
        {
            "step": command["step"],
            "event_type": "command.completed",
            "payload": {"command_id": cid, "status": "success"},
        },
    ]
    body = {"execution_id": str(command["execution_id"]), "worker_id": worker_id, "events": events}
    return ok(client.post("/api/events/batch", json=body))


def test_a_posted_claim_is_the_claim(client: TestClient, control: ControlPlane) -> None:
    """A worker that ran a command straight from its notification posts command.claimed with
    the outcome: accepted when the command was free, refused (and named) when another worker
    holds it, the run ended, or it was cancelled; a refused command's other events are dropped."""
    register(client, TWO_STEPS)
    started = execute(client, {"path": "tests/api/two_steps"})
    execution_id = int(started["execution_id"])
    first = pending(client)[0]
    answer = _direct_report(client, first, "fast-worker")
    assert "rejected" not in answer and len(answer["event_ids"]) == 3
    types = [
        (e.event_type, e.worker_id)
        for e in control.store.read(execution_id)
        if e.command_id == first["command_id"]
    ]
    assert ("command.claimed", "fast-worker") in types and ("command.completed", "fast-worker") in types
    second = pending(client)[0]
    assert second["step"] == "end"
    ok(claim(client, second["event_id"], "http-worker"))  # claimed over HTTP first
    refused = _direct_report(client, second, "fast-worker")
    assert refused["rejected"] == [second["command_id"]]
    log = control.store.read(execution_id)
    assert not [e for e in log if e.command_id == second["command_id"] and e.worker_id == "fast-worker"]
    assert status_of(client, execution_id)["status"] == "RUNNING"  # the late report changed nothing
    finish(client, second, {"step": "end"}, "http-worker")
    assert status_of(client, execution_id)["status"] == "COMPLETED"
    again = _direct_report(client, first, "other-worker")  # its run has ended
    assert again["rejected"] == [first["command_id"]]


def test_a_posted_claim_of_a_cancelled_run_is_refused(client: TestClient) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    ok(client.post(f"/api/executions/{started['execution_id']}/cancel", json={}))
    assert _direct_report(client, command, "fast-worker")["rejected"] == [command["command_id"]]
    assert status_of(client, started["execution_id"])["status"] == "CANCELLED"


# ---------------------------------------------------------------------------------- executions


def test_executions_list_get_and_filters(client: TestClient) -> None:
    register(client)
    first = execute(client)
    second = execute(client)
    rows = ok(client.get("/api/executions"))
    assert [str(r["execution_id"]) for r in rows] == [second["execution_id"], first["execution_id"]]
    row = rows[0]
    assert set(row) == {
        "execution_id",
        "catalog_id",
        "path",
        "status",
        "started_at",
        "completed_at",
        "parent_execution_id",
    }
    assert row["path"] == "tests/api/two_steps" and row["status"] == "RUNNING"
    assert row["started_at"].endswith("Z") and row["completed_at"] is None
    assert len(ok(client.get("/api/executions", params={"limit": 1}))) == 1
    assert len(ok(client.get("/api/executions", params={"limit": 1, "offset": 1}))) == 1
    work(client)
    completed = ok(client.get("/api/executions", params={"status": "COMPLETED"}))
    assert {str(r["execution_id"]) for r in completed} == {first["execution_id"], second["execution_id"]}
    assert all(r["completed_at"] for r in completed)
    assert ok(client.get("/api/executions", params={"status": "RUNNING"})) == []
    assert ok(client.get("/api/executions", params={"parent_execution_id": 1})) == []
    detail = ok(client.get(f"/api/executions/{first['execution_id']}"))
    assert detail["status"] == "COMPLETED" and detail["workload"] == {"who": "world"}
    assert detail["events"][0]["event_type"] == "playbook_started"
    assert detail["events"][0]["created_at"].endswith("Z")
    error(client.get("/api/executions/999"), 404)
    error(client.get("/api/executions/999/status"), 404)
    error(client.get("/api/executions/999/events"), 404)


def test_cancel(client: TestClient) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    answer = ok(client.post(f"/api/executions/{started['execution_id']}/cancel", json={"reason": "test"}))
    assert answer["status"] == "cancelled"
    assert str(answer["execution_id"]) == started["execution_id"]
    assert answer["message"]
    status = status_of(client, started["execution_id"])
    assert status["status"] == "CANCELLED" and status["is_cancelled"] is True
    assert "cancel" in error(claim(client, command["event_id"]), 409).lower()
    assert pending(client) == []
    message = error(client.post(f"/api/executions/{started['execution_id']}/cancel"), 422)
    assert message == "Cannot cancel execution in CANCELLED state"
    error(client.post("/api/executions/999/cancel"), 404)
    done = execute(client)
    work(client)
    error(client.post(f"/api/executions/{done['execution_id']}/cancel", json={}), 422)


# ---------------------------------------------------------------------------------- worker pools


def test_worker_pool_registration(client: TestClient) -> None:
    registration = {
        "name": "pool-a",
        "component_type": "worker_pool",
        "status": "ready",
        "labels": {"pool_name": "shared"},
        "capacity": 4,
        "runtime": {"kind": "python"},
        "hostname": "host-1",
    }
    row = ok(client.post("/api/worker/pool/register", json=registration))
    assert (row["name"], row["kind"], row["status"], row["capacity"]) == ("pool-a", "worker_pool", "ready", 4)
    assert row["labels"] == {"pool_name": "shared"} and row["hostname"] == "host-1"
    assert row["heartbeat"].endswith("Z") and row["runtime_id"]
    again = ok(client.post("/api/worker/pool/register", json={**registration, "capacity": 8}))
    assert again["runtime_id"] == row["runtime_id"] and again["capacity"] == 8  # upsert
    ok(client.post("/api/worker/pool/register", json={"name": "pool-b", "runtime": "python"}))
    assert [r["name"] for r in ok(client.get("/api/worker/pools"))] == ["pool-a", "pool-b"]
    beat = ok(client.post("/api/worker/pool/heartbeat", json={"name": "pool-a"}))
    assert beat["status"] == "ok" and beat["message"]
    error(client.post("/api/worker/pool/heartbeat", json={"name": "ghost"}), 404)
    error(client.post("/api/worker/pool/register", json={"name": "x", "kind": "toaster"}), 422)
    error(client.post("/api/worker/pool/register", json={"status": "ready"}), 422)
    assert ok(client.post("/api/worker/pool/deregister", json={"name": "pool-a"}))["status"] == "ok"
    deleted = client.request(
        "DELETE", "/api/worker/pool/deregister", json={"name": "pool-b", "component_type": "worker_pool"}
    )
    assert ok(deleted)["status"] == "ok"
    assert ok(client.get("/api/worker/pools")) == []
    error(client.post("/api/worker/pool/heartbeat", json={"name": "pool-a"}), 404)


def test_heartbeat_renews_and_deregister_releases_leases(client: TestClient, control: ControlPlane) -> None:
    register(client)
    started = execute(client)
    ok(client.post("/api/worker/pool/register", json={"name": "w-lease"}))
    command = pending(client)[0]
    ok(claim(client, command["event_id"], "w-lease"))
    assert control.reap()["reissued"] == 0  # the lease is fresh
    ok(client.post("/api/worker/pool/heartbeat", json={"name": "w-lease"}))
    assert control.reap()["reissued"] == 0
    ok(client.post("/api/worker/pool/deregister", json={"name": "w-lease"}))
    assert control.reap()["reissued"] == 1  # released: issued again at once
    again = pending(client)
    assert [c["step"] for c in again] == ["start"] and again[0]["event_id"] != command["event_id"]
    assert "w-lease" not in str(ok(claim(client, again[0]["event_id"], "w-other")))
    finish(client, again[0], {"ok": True}, "w-other")
    work(client)
    assert status_of(client, started["execution_id"])["status"] == "COMPLETED"


# ---------------------------------------------------------------------------------- credentials


def test_credentials_crud_never_leaks_data(client: TestClient, control: ControlPlane) -> None:
    secret = {"host": "db.local", "password": "s3cr3t-value"}
    created = ok(
        client.post(
            "/api/credentials",
            json={
                "name": "pg_main",
                "type": "postgres",
                "data": secret,
                "description": "main db",
                "tags": ["prod"],
            },
        )
    )
    assert "data" not in created and "s3cr3t-value" not in str(created)
    assert (created["id"], created["name"], created["type"]) == ("pg_main", "pg_main", "postgres")
    assert created["description"] == "main db" and created["tags"] == ["prod"]
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
    listing = client.get("/api/credentials")
    assert "s3cr3t-value" not in listing.text
    assert [c["name"] for c in listing.json()["items"]] == ["pg_main"]
    assert ok(client.get("/api/credentials", params={"type": "http"}))["items"] == []
    plain = client.get("/api/credentials/pg_main")
    assert "s3cr3t-value" not in plain.text and "data" not in plain.json()
    # No route gives secret data to the admin token (only to a worker holding a command).
    refused = client.get("/api/credentials/pg_main", params={"include_data": "true"})
    assert refused.status_code == 403 and "s3cr3t-value" not in refused.text
    stored = control.store.get_credential("pg_main")
    assert stored is not None and stored.data == secret
    updated = ok(
        client.post(
            "/api/credentials", json={"name": "pg_main", "type": "postgres", "data": {"password": "new"}}
        )
    )
    assert "data" not in updated
    stored = control.store.get_credential("pg_main")
    assert stored is not None and stored.data == {"password": "new"}
    assert ok(client.delete("/api/credentials/pg_main")) == {
        "message": "Credential deleted successfully",
        "id": "pg_main",
    }
    error(client.get("/api/credentials/pg_main"), 404)
    error(client.delete("/api/credentials/pg_main"), 404)
    error(client.post("/api/credentials", json={"name": "x", "type": "t", "data": "not-an-object"}), 422)
    error(client.post("/api/credentials", json={"type": "t", "data": {}}), 422)


# ---------------------------------------------------------------------------------- in-process worker


def _wait_finished(client: TestClient, execution_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = status_of(client, execution_id)
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish: {status}")


def test_in_process_worker_runs_nested_playbooks(control: ControlPlane) -> None:
    """Loop iterations start children through the control plane; a pipeline's `kind: playbook`
    task waits for its child without holding one of the (two) worker slots."""
    app = build_app(
        control, admin_token=TEST_TOKEN, with_worker=True, workers=2, nats_status="not_configured"
    )
    with TestClient(app, headers=AUTH) as client:
        register(client, CHILD)
        register(client, PARENT)
        started = execute(client, {"path": "tests/api/parent"})
        status = _wait_finished(client, started["execution_id"])
        assert status["status"] == "COMPLETED", status
        # `piped` is a pipeline: its tasks' results by label, their keys also at the top level.
        piped = {"a": {"sq": 100}, "b": {"got": {"sq": 100}}, "sq": 100, "got": {"sq": 100}}
        assert status["result"] == {"s": [{"sq": 1}, {"sq": 4}, {"sq": 9}], "p": piped}
        children = ok(client.get("/api/executions", params={"parent_execution_id": started["execution_id"]}))
        assert len(children) == 4 and all(c["status"] == "COMPLETED" for c in children)
        assert pending(client) == []


def test_server_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOETL_PUBLIC_SERVER_URL", raising=False)
    assert public_url("0.0.0.0", 8082) == "http://localhost:8082"
    assert public_url("10.0.0.5", 9000) == "http://10.0.0.5:9000"
    monkeypatch.setenv("NOETL_PUBLIC_SERVER_URL", "https://noetl.example.com/")
    assert public_url("0.0.0.0", 8082) == "https://noetl.example.com"
    assert open_bus(None) == (None, "not_configured")
    assert open_bus("inproc://") == (None, "not_configured")
    assert open_bus("nats://127.0.0.1:1") == (None, "disconnected")  # warns; workers poll instead
    with pytest.raises(NoetlError):
        open_bus("kafka://broker")


# ---------------------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(
    http: httpx.Client, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not become healthy:\n{log.read_text()}")


def _run_to_end(http: httpx.Client, path: str, timeout: float = 30) -> dict[str, Any]:
    started = http.post("/api/execute", json={"path": path})
    assert started.status_code == 200, started.text
    execution_id = started.json()["execution_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status: dict[str, Any] = http.get(f"/api/executions/{execution_id}/status").json()
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish within {timeout}s: {status}")


def _start_server(tmp_path: Path, port: int, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"server-{port}-{len(list(tmp_path.glob('server-*.log')))}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_") or k == "NOETL_API_TOKEN"}
    command = [
        sys.executable,
        "-m",
        "noetl",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        f"sqlite:///{tmp_path}/s.db",
        *extra,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    return process, log


def _stop_server(process: subprocess.Popen[bytes], log: Path) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.returncode == 0, log.read_text()


def test_server_with_in_process_worker_runs_playbooks(tmp_path: Path) -> None:
    if not HELLO_WORLD.exists():
        pytest.skip(f"{HELLO_WORLD} is missing")
    port = _free_port()
    process, log = _start_server(tmp_path, port, "--with-worker")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as http:
            _wait_healthy(http, process, log)
            assert http.get("/api/health").json()["database"] == "connected"
            for file in (HELLO_EXAMPLE, HELLO_WORLD):
                answer = http.post("/api/catalog/register", json={"content": file.read_text()})
                assert answer.status_code == 200, answer.text
            hello = _run_to_end(http, "examples/hello")
            assert hello["status"] == "COMPLETED", hello
            assert hello["result"] == {"greeting": "Hello, world!", "sum_of_squares": 14}
            world = _run_to_end(http, "fixtures/playbooks/hello_world")
            assert world["status"] == "COMPLETED", world
            assert world["result"] == {"status": "complete"}
            rows = http.get("/api/executions", params={"status": "COMPLETED"}).json()
            assert {r["path"] for r in rows} == {"examples/hello", "fixtures/playbooks/hello_world"}
            assert http.get("/api/commands/pending").json() == {"commands": []}
    finally:
        _stop_server(process, log)
    assert (tmp_path / "s.db").exists()


def test_server_restart_resumes_running_executions(tmp_path: Path) -> None:
    """Commands issued before a restart are offered again by the next server process."""
    port = _free_port()
    first, log = _start_server(tmp_path, port)  # no worker: the command stays unclaimed
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as http:
            _wait_healthy(http, first, log)
            assert http.post("/api/catalog/register", json={"content": TWO_STEPS}).status_code == 200
            started = http.post("/api/execute", json={"path": "tests/api/two_steps"}).json()
            assert len(http.get("/api/commands/pending").json()["commands"]) == 1
    finally:
        _stop_server(first, log)
    second, log = _start_server(tmp_path, port, "--with-worker")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=10) as http:
            _wait_healthy(http, second, log)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                status = http.get(f"/api/executions/{started['execution_id']}/status").json()
                if status["status"] != "RUNNING":
                    break
                time.sleep(0.1)
            assert status["status"] == "COMPLETED", status
            assert status["result"] == {"done": True}
    finally:
        _stop_server(second, log)
