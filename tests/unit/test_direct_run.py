"""Commands run straight from their notification (noetl.bus.ports): which notifications carry
the command, when a worker may run one without claiming it first, and how the server keeps such
commands away from polling workers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

import pytest
from tests.support.playbooks import fanout_with_failure, with_header

from noetl.bus.ports import DIRECT_RUN_WINDOW
from noetl.engine.events import utcnow
from noetl.errors import BusError
from noetl.ids import default_ids
from noetl.runtime.control import BUS_HOLD_SECONDS, ControlPlane, ExecuteRequest
from noetl.store import open_store
from noetl.store.ports import WorkerRecord
from noetl.worker.command import command_from_body
from noetl.worker.executor import Executor
from noetl.worker.remote import _direct_command

PLAYBOOK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: direct, path: tests/direct}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: end
  - step: end
    tool: {kind: python, code: "result = 2"}
"""


class Notes:
    """A notifier recording what the control plane publishes (optionally failing)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail

    def __call__(self, subject: str, payload: dict[str, Any]) -> concurrent.futures.Future[None]:
        self.sent.append(payload)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self.fail:
            done.set_exception(BusError("NATS is down"))
        else:
            done.set_result(None)
        return done


def worker(store: Any, name: str, *, bus: bool, pools: str = "shared") -> None:
    labels = {"pools": pools, **({"bus": "nats"} if bus else {})}
    store.upsert_worker(WorkerRecord(name, "worker_pool", "ready", utcnow(), {"labels": labels}))


@pytest.fixture
def store() -> Any:
    handle = open_store("memory://")
    yield handle
    handle.close()


def start(control: ControlPlane) -> int:
    control.register(PLAYBOOK)
    return control.execute(ExecuteRequest(path="tests/direct")).execution_id


def report(control: ControlPlane, body: dict[str, Any], worker_id: str) -> list[str]:
    """Run a command from its notification body and post claim + outcome; the refused ids."""
    command = command_from_body(body)
    executor = Executor(ids=default_ids, worker_id=worker_id)
    events = [
        executor.events.claimed(command),
        executor.events.started(command),
        *asyncio.run(executor.execute(command)),
    ]
    return control.ingest_report(events).rejected


def test_notifications_carry_the_command_only_when_every_worker_listens(store: Any) -> None:
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    worker(store, "bus-1", bus=True)
    start(control)
    first = notes.sent[-1]
    assert (
        first["command"]["node_name"] == "start"
        and first["command"]["meta"]["command_id"] == first["command_id"]
    )
    assert abs(first["issued_at"] - time.time()) < 5 and "again" not in first
    assert control.pending() == []  # held for the bus: a worker may be running it unclaimed

    # A polling-only worker joins the pool: notifications go back to naming the command only,
    # and nothing is held from polling.
    worker(store, "poll-1", bus=False)
    control.offers.forget_worker_view()
    start(control)
    plain = notes.sent[-1]
    assert "command" not in plain
    assert [p["event_id"] for p in control.pending()] == [plain["event_id"]]


def test_a_held_command_is_offered_to_polling_after_the_window(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    worker(store, "bus-1", bus=True)
    start(control)
    assert control.pending() == []
    later = time.monotonic() + BUS_HOLD_SECONDS + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert [p["step"] for p in control.pending()] == ["start"]
    # Re-notified commands are marked and carry no body: their worker claims them first.
    much_later = later + control.republish_after
    monkeypatch.setattr(time, "monotonic", lambda: much_later)
    control.reap()
    again = notes.sent[-1]
    assert again["again"] is True and "command" not in again


def test_a_failed_notification_offers_the_command_to_polling_at_once(store: Any) -> None:
    control = ControlPlane(store, notify=Notes(fail=True))
    worker(store, "bus-1", bus=True)
    execution_id = start(control)
    assert [p["step"] for p in control.pending()] == ["start"]
    command = next(iter(control.engine(execution_id).state.commands.values()))
    assert command.handed_over  # the body was sent before the publish failed
    control.reap()
    assert not command.handed_over  # taken back: a failing run will not wait for it


def test_an_in_process_worker_turns_bodies_off(store: Any) -> None:
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    control.direct_run = False
    worker(store, "bus-1", bus=True)
    start(control)
    assert "command" not in notes.sent[-1] and len(control.pending()) == 1


def test_the_first_posted_claim_wins(store: Any) -> None:
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    worker(store, "bus-1", bus=True)
    execution_id = start(control)
    body = notes.sent[-1]["command"]
    assert report(control, body, "w-fast") == []
    assert report(control, body, "w-late") == [body["meta"]["command_id"]]  # a duplicate run: refused
    assert report(control, notes.sent[-1]["command"], "w-late") == []
    log = control.store.read(execution_id)
    assert [e.worker_id for e in log if e.event_type == "command.claimed"] == ["w-fast", "w-late"]
    assert sum(1 for e in log if e.event_type == "command.completed") == 2
    assert control.status(execution_id)["status"] == "COMPLETED"


class Delivered:
    def __init__(self, payload: dict[str, Any], count: int = 1) -> None:
        self.payload = payload
        self.subject = "noetl.commands.shared.1"
        self.delivery_count = count


def test_which_notifications_a_worker_runs_without_claiming() -> None:
    body = {"event_id": 1, "meta": {"command_id": "1:start:1"}}
    fresh = {"command": body, "issued_at": time.time()}
    assert _direct_command(Delivered(fresh)) == body
    assert _direct_command(Delivered(fresh, count=2)) is None  # a redelivery: claim first
    assert _direct_command(Delivered({**fresh, "again": True})) is None  # re-notified
    assert _direct_command(Delivered({**fresh, "issued_at": time.time() - DIRECT_RUN_WINDOW - 1})) is None
    assert _direct_command(Delivered({"issued_at": time.time()})) is None  # no body
    assert _direct_command(Delivered({"command": body})) is None  # no issue time


FANOUT_WITH_FAILURE = with_header(
    "direct_fail", "tests/direct_fail", fanout_with_failure("result = {'good': True}")
)


def _start_fanout(control: ControlPlane, notes: Notes) -> tuple[int, dict[str, Any]]:
    control.register(FANOUT_WITH_FAILURE)
    execution_id = control.execute(ExecuteRequest(path="tests/direct_fail")).execution_id
    assert report(control, notes.sent[-1]["command"], "w1") == []  # start (noop)
    bodies = {
        p["step"]: p["command"] for p in notes.sent if p.get("command") and p["step"] in ("good", "bad")
    }
    assert set(bodies) == {"good", "bad"}
    return execution_id, bodies


def test_a_failing_run_waits_for_a_command_a_worker_runs_unclaimed(store: Any) -> None:
    """`bad` fails while `good` runs on a worker that has not reported its claim yet: the run
    waits for `good`'s report and records it, as it would for a claimed command."""
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    worker(store, "bus-1", bus=True)
    execution_id, bodies = _start_fanout(control, notes)
    assert report(control, bodies["bad"], "w2") == []
    assert control.status(execution_id)["status"] == "RUNNING"  # waiting for good
    assert report(control, bodies["good"], "w1") == []  # accepted although the run is failing
    final = control.status(execution_id)
    assert final["status"] == "FAILED"
    assert final["steps"]["good"]["status"] == "COMPLETED" and final["steps"]["bad"]["status"] == "FAILED"
    assert final["steps"]["join"]["status"] not in ("COMPLETED", "RUNNING")


def test_a_failing_run_stops_waiting_when_no_worker_took_the_command(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    worker(store, "bus-1", bus=True)
    execution_id, bodies = _start_fanout(control, notes)
    assert report(control, bodies["bad"], "w2") == []
    assert control.status(execution_id)["status"] == "RUNNING"
    later = time.monotonic() + BUS_HOLD_SECONDS + 0.1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    control.reap()  # good's notification went unanswered past the hold
    assert control.status(execution_id)["status"] == "FAILED"
    assert report(control, bodies["good"], "w1") == [bodies["good"]["meta"]["command_id"]]  # too late


def test_ended_executions_engines_are_evicted_beyond_the_cap(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived server keeps the engines of its last MAX_ENDED_ENGINES ended executions;
    older ones are rebuilt from the log when asked for."""
    notes = Notes()
    control = ControlPlane(store, notify=notes)
    engines = control.orchestrator.engines
    engines.max_ended = 2
    worker(store, "bus-1", bus=True)
    ended = []
    for _ in range(3):
        execution_id = start(control)
        for _step in range(2):
            assert report(control, notes.sent[-1]["command"], "w1") == []
        assert control.status(execution_id)["status"] == "COMPLETED"
        ended.append(execution_id)
    assert ended[0] not in engines
    assert ended[1] in engines and ended[2] in engines
    rebuilt = control.status(ended[0])  # from the log
    assert rebuilt["status"] == "COMPLETED" and rebuilt["steps"]["end"]["result"] == 2
