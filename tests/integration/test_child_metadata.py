"""Iterator metadata on nested executions in every mode (SYSTEM.md §3, seed 000).

A parent loops over three items and starts a child per item twice: from a `kind: playbook` step
(run natively by the orchestrator) and from a pipeline task of kind `playbook` (run by whatever
worker runs the pipeline). Every child's `playbook_started` meta names its iterator index, count
and item, the parent execution, step and command; every event of the child carries the iterator
metadata and the parent execution id. Run locally, on `noetl server start --with-worker`, and on
a server with two remote workers over NATS (chaos marker: `make chaos`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.support.cluster import Cluster, get_json, post_json, wait_terminal

from noetl.dsl import load_playbook
from noetl.runtime.local import LocalRuntime
from noetl.store.sqlite import SQLiteStore

ITEMS = ["red", "green", "blue"]

PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: meta_parent
  path: tests/meta/parent
workload:
  colours: ["red", "green", "blue"]
workflow:
  - step: start
    next:
      - step: native
  - step: native
    loop:
      in: "{{ workload.colours }}"
      iterator: colour
      spec:
        mode: parallel
    tool:
      kind: playbook
      path: tests/meta/child
      args:
        colour: "{{ colour }}"
    next:
      - step: piped
  - step: piped
    loop:
      in: "{{ workload.colours }}"
      iterator: colour
    tool:
      - name: run_child
        kind: playbook
        path: tests/meta/child
        args:
          colour: "{{ colour }}"
      - name: after
        kind: python
        args:
          got: "{{ run_child }}"
        code: |
          result = got
"""

CHILD = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: meta_child
  path: tests/meta/child
workload:
  colour: none
workflow:
  - step: start
    tool:
      kind: python
      args:
        colour: "{{ workload.colour }}"
      code: |
        result = {"echo": colour}
"""


def check_children(
    parent_id: int, parent_log: list[dict[str, Any]], children: dict[int, list[dict[str, Any]]]
) -> None:
    """Six children (3 native + 3 from the pipeline), each with the full metadata."""
    issued = {
        e["meta"]["command_id"]: e
        for e in parent_log
        if e["event_type"] == "command.issued" and e["node_name"] in ("native", "piped")
    }
    seen: dict[str, list[int]] = {"native": [], "piped": []}
    assert len(children) == 6, sorted(children)
    for log in children.values():
        started = log[0]
        assert started["event_type"] == "playbook_started"
        meta = started["meta"]
        step = meta["parent_step"]
        assert step in seen, meta
        index = meta["iterator_index"]
        assert meta["iterator_count"] == len(ITEMS)
        assert meta["iterator_item"] == ITEMS[index]
        assert str(meta["parent_execution_id"]) == str(parent_id)
        assert str(started["parent_execution_id"]) == str(parent_id)
        command = issued[meta["parent_command_id"]]
        assert command["node_name"] == step and command["meta"]["iteration_index"] == index
        assert started["context"]["workload"]["colour"] == ITEMS[index]
        seen[step].append(index)
        for event in log:  # every event of the child carries the iterator metadata
            assert event["meta"]["iterator_index"] == index, event
            assert event["meta"]["iterator_count"] == len(ITEMS), event
            assert event["meta"]["iterator_item"] == ITEMS[index], event
            assert str(event["parent_execution_id"]) == str(parent_id), event
        assert log[-1]["event_type"] == "playbook.completed", [
            (e["event_id"], e["event_type"], e.get("worker_id"), e["meta"].get("command_id")) for e in log
        ]
    assert sorted(seen["native"]) == [0, 1, 2]
    assert sorted(seen["piped"]) == [0, 1, 2]


def check_results(steps: dict[str, Any]) -> None:
    assert steps["native"]["results"] == [{"echo": c} for c in ITEMS]
    # Pipeline iterations: each task's result by label, and their keys at the top level.
    assert steps["piped"]["results"] == [
        {"run_child": {"echo": c}, "after": {"echo": c}, "echo": c} for c in ITEMS
    ]


# ---------------------------------------------------------------------------------- local


def test_local_children_carry_iterator_metadata(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text(PARENT)
    (tmp_path / "child.yaml").write_text(CHILD)
    store = SQLiteStore(tmp_path / "noetl.db")
    playbook = load_playbook(tmp_path / "parent.yaml")

    async def main() -> Any:
        async with LocalRuntime(store, concurrency=2) as runtime:
            return await runtime.run(playbook)

    try:
        outcome = asyncio.run(main())
        assert outcome.status == "COMPLETED", outcome.error
        check_results({name: step.result for name, step in outcome.steps.items()})
        parent_log = [e.to_dict() for e in store.read(outcome.execution_id)]
        children = {
            s.execution_id: [e.to_dict() for e in store.read(s.execution_id)]
            for s in store.executions(parent_execution_id=outcome.execution_id, limit=100)
        }
        check_children(outcome.execution_id, parent_log, children)
    finally:
        store.close()


# ---------------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def store_url(pg_dsn: str) -> Iterator[str]:
    schema = f"noetl_meta_{uuid.uuid4().hex[:8]}"
    yield f"{pg_dsn}?schema={schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_on_server(url: str) -> None:
    for text in (CHILD, PARENT):
        assert post_json(url, "/api/catalog/register", {"content": text})["status"] == "success"
    started = post_json(url, "/api/execute", {"path": "tests/meta/parent"})
    parent_id = int(started["execution_id"])
    status = wait_terminal(url, str(parent_id), 180)
    assert status["status"] == "COMPLETED", status
    check_results({name: step["result"] for name, step in status["steps"].items()})
    parent_log = get_json(url, f"/api/executions/{parent_id}/events")["events"]
    rows = get_json(url, "/api/executions", parent_execution_id=parent_id, limit=100)
    children = {
        int(row["execution_id"]): get_json(url, f"/api/executions/{row['execution_id']}/events")["events"]
        for row in rows
    }
    check_children(parent_id, parent_log, children)


@pytest.mark.postgres
def test_server_with_worker_children_carry_iterator_metadata(tmp_path: Path, store_url: str) -> None:
    with Cluster(tmp_path, store_url) as cluster:
        server = cluster.start_server("s1", extra_args=["--with-worker"])
        run_on_server(server.url)


@pytest.mark.chaos
@pytest.mark.nats
def test_distributed_children_carry_iterator_metadata(tmp_path: Path, store_url: str, nats_url: str) -> None:
    with Cluster(tmp_path, store_url, bus_url=nats_url) as cluster:
        server = cluster.start_server("s1")
        cluster.start_worker("meta-w1", server.url)
        cluster.start_worker("meta-w2", server.url)
        run_on_server(server.url)
