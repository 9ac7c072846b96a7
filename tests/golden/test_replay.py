"""Replay the golden event logs through `Engine` (pure: no store, no worker, no runtime).

For every recorded execution (see `golden.py`; re-record with `python -m tests.golden.record`):

(a) folding the whole log gives the recorded final state: status, error, each step's status and
    result, ctx;
(b) the engine takes the recorded decisions: `start` emits the recorded opening events, and for
    each trigger (`command.completed` / `command.failed`), folding the log before it and then
    `engine.react(trigger)` emits exactly the recorded engine events that follow it (every field
    but ids and timestamps; ids come from the recording, so command ids must match too). Worker
    events are fed as recorded. Every engine event of the log is accounted for by one of these
    decisions.
"""

from __future__ import annotations

from typing import Any

import pytest

from noetl.engine.events import Event
from tests.golden.golden import (
    START_META,
    TRIGGERS,
    as_json,
    comparable,
    engine_for,
    ids_from,
    is_engine_event,
    labels,
    load_log,
    load_record,
    state_of,
)

LABELS = labels()
CASES = {label.split(".")[0] for label in LABELS}


def test_the_golden_set_covers_the_representative_cases() -> None:
    assert CASES == {
        "chain",
        "routing",
        "fan_in",
        "parallel_loop",
        "loop_continue",
        "pipeline",
        "failing_step",
        "nested",
        "pagination",
    }
    assert {"nested.child-0", "nested.child-1"} <= set(LABELS)


def _events(log: list[dict[str, Any]]) -> list[Event]:
    return [Event.from_dict(e) for e in log]


def _following_engine_events(log: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """The engine events recorded right after position `start - 1`, up to the next worker event."""
    out: list[dict[str, Any]] = []
    for event in log[start:]:
        if not is_engine_event(event):
            break
        out.append(event)
    return out


@pytest.mark.parametrize("label", LABELS)
def test_folding_the_log_gives_the_recorded_state(label: str) -> None:
    record, log = load_record(label), load_log(label)
    engine = engine_for(record, ids_from([]))
    engine.fold(_events(log))
    expected = {k: record[k] for k in ("status", "error", "steps", "ctx")}
    assert state_of(engine) == expected
    assert expected["status"] in ("COMPLETED", "FAILED")


@pytest.mark.parametrize("label", LABELS)
def test_the_engine_takes_the_recorded_decisions(label: str) -> None:
    record, log = load_record(label), load_log(label)
    explained: set[int] = set()

    # The opening: playbook_started and the first commands, from `start`.
    opening = _following_engine_events(log, 0)
    started = log[0]
    assert started["event_type"] == "playbook_started" and opening
    engine = engine_for(record, ids_from([e["event_id"] for e in opening]))
    meta = {k: v for k, v in (started.get("meta") or {}).items() if k not in START_META}
    emitted = engine.start(started["context"]["workload"], meta=meta)
    assert [comparable(as_json(e)) for e in emitted] == [comparable(e) for e in opening]
    explained.update(range(len(opening)))

    # Each trigger: fold what came before it, react, compare with what followed it.
    triggers = [i for i, e in enumerate(log) if e["event_type"] in TRIGGERS]
    assert triggers, "a log without a completed or failed command"
    for i in triggers:
        expected = _following_engine_events(log, i + 1)
        engine = engine_for(record, ids_from([e["event_id"] for e in expected]))
        engine.fold(_events(log[:i]))
        emitted = engine.react(Event.from_dict(log[i]))
        got = [comparable(as_json(e)) for e in emitted]
        want = [comparable(e) for e in expected]
        assert got == want, (
            f"{label}: the decision on event {i} ({log[i]['event_type']} {log[i]['node_name']})"
        )
        explained.update(range(i + 1, i + 1 + len(expected)))

    unexplained = [
        (i, e["event_type"], e["node_name"])
        for i, e in enumerate(log)
        if is_engine_event(e) and i not in explained
    ]
    assert unexplained == [], "engine events no decision emitted"
    assert log[-1]["event_type"] in ("playbook.completed", "playbook.failed")


def test_a_changed_decision_is_caught() -> None:
    """The comparison is not vacuous: a recorded decision altered by hand no longer matches."""
    record, log = load_record("chain"), load_log("chain")
    i = next(
        i for i, e in enumerate(log) if e["event_type"] == "command.completed" and e["node_name"] == "start"
    )
    expected = _following_engine_events(log, i + 1)
    assert [e["event_type"] for e in expected][-1] == "command.issued"
    engine = engine_for(record, ids_from([e["event_id"] for e in expected]))
    engine.fold(_events(log[:i]))
    got = [comparable(as_json(e)) for e in engine.react(Event.from_dict(log[i]))]
    assert got == [comparable(e) for e in expected]
    tampered = [dict(e) for e in expected]
    tampered[-1] = {**tampered[-1], "node_name": "describe"}  # issue the wrong step
    assert got != [comparable(e) for e in tampered]
