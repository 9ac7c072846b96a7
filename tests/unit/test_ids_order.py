"""Event ids order causes before effects across processes.

Each process makes snowflake ids with its own node bits, so two ids made in the same millisecond
order by node, not by time. A worker whose node is above the server's could report an event that
sorts after the server's reaction to it (a child's `command.completed` read after its
`playbook.completed`). `Snowflake.observe` keeps a generator's ids above the ids it has seen; the
server observes the reports it ingests, a worker the commands it reports on.
"""

from __future__ import annotations

import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from noetl import ids
from noetl.dsl import parse_playbook
from noetl.engine import events as ev
from noetl.ids import Snowflake
from noetl.runtime.orchestrator import Launch, Orchestrator
from noetl.store.memory import MemoryStore
from noetl.worker.command import Command, CommandEvents

NOW_MS = 1_800_000_000_000


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every id is made in the same millisecond (the case a fast reaction hits)."""
    clock = types.SimpleNamespace(time_ns=lambda: NOW_MS * 1_000_000)
    monkeypatch.setattr(ids, "time", clock)
    yield


def test_same_millisecond_orders_by_node_without_observe(frozen_clock: None) -> None:
    worker, server = Snowflake(1000), Snowflake(1)
    reported = worker()
    assert server() < reported  # the hazard observe removes


def test_observed_id_of_a_higher_node_orders_before_the_next_ids(frozen_clock: None) -> None:
    worker, server = Snowflake(1000), Snowflake(1)
    reported = worker()
    server.observe(reported)
    made = [server() for _ in range(5)]
    assert made[0] > reported
    assert made == sorted(made) and len(set(made)) == 5
    assert all(m & 0x3FF000 == 1 << 12 for m in made)  # still this generator's node bits


def test_observed_id_ahead_in_time_is_overtaken() -> None:
    server = Snowflake(2)
    ahead_ms = time.time_ns() // 1_000_000 + 1000  # a clock a second ahead of ours
    future = ((ahead_ms - ids.EPOCH_MS) << 22) | (3 << 12)
    server.observe(future)
    first, second = server(), server()
    assert future < first < second
    server.observe(5)  # an older id changes nothing
    assert server() > second


def test_worker_events_order_after_their_command(frozen_clock: None) -> None:
    server, worker = Snowflake(1000), Snowflake(1)
    issued = server()
    command = Command(
        execution_id=issued,
        event_id=issued,
        command_id=f"{issued}:a:{issued}",
        step="a",
        kind="noop",
        tool_config={},
    )
    events = CommandEvents(ids=worker, worker_id="w").completed(command, {"status": "success", "context": {}})
    assert all(event.event_id > issued for event in events)


PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: order, path: tests/order}
workflow:
  - step: start
    tool: {kind: noop}
"""


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def committed(self, engine: Any, events: Any) -> None:
        self.events.extend(events)


def test_the_servers_reaction_orders_after_the_report(frozen_clock: None) -> None:
    store = MemoryStore()
    recorder = Recorder()
    orchestrator = Orchestrator(store, ids=Snowflake(1), dispatch=recorder)
    started = orchestrator.start(Launch(parse_playbook(PLAYBOOK), catalog_id=None, workload={}))
    issued = [e for e in recorder.events if e.event_type == ev.COMMAND_ISSUED]
    assert len(issued) == 1
    command = Command.from_event(issued[0])
    worker = CommandEvents(ids=Snowflake(1000), worker_id="w")
    report = [worker.claimed(command), worker.started(command)]
    report += worker.completed(command, {"status": "success", "context": {"data": 1}})
    assert orchestrator.ingest(report).rejected == []
    log = store.read(started.execution_id)
    assert log[-1].event_type == ev.PLAYBOOK_COMPLETED, [e.event_type for e in log]
    assert [e.event_id for e in log] == sorted(e.event_id for e in log)
    assert log[-1].event_id > max(e.event_id for e in report)
