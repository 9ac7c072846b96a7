"""Golden event logs: what is recorded, where, and how an `Engine` replays it.

Each recorded execution has a label (the case name, `nested.child-0`, ...) and two files in
`logs/`: `<label>.jsonl`, its events one JSON object a line in the order the runtime committed
them (a worker event, then the engine events it triggered), and `<label>.state.json`, how to
build its engine (playbook, execution id, parent, stamp) and its final state (status, error,
each step's status and result, ctx). `record.py` writes them; `test_replay.py` replays them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from noetl.dsl import load_playbook
from noetl.engine.events import Event
from noetl.engine.machine import Engine

HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "playbooks"
LOGS = HERE / "logs"

TRIGGERS = ("command.completed", "command.failed")
# Iterator metadata and lineage a nested run's engine stamps on every event (SYSTEM.md §3, seed 000).
STAMP_KEYS = ("parent_execution_id", "iterator_index", "iterator_count", "iterator_item", "trace")
# What `Engine.start` adds to the meta of `playbook_started` by itself.
START_META = ("emitted_at", "emitter", "emitted_by")
FIXED_CLOCK = datetime(2024, 1, 1, tzinfo=UTC)


def labels() -> list[str]:
    return sorted(path.name.removesuffix(".jsonl") for path in LOGS.glob("*.jsonl"))


def load_log(label: str) -> list[dict[str, Any]]:
    lines = (LOGS / f"{label}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def load_record(label: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((LOGS / f"{label}.state.json").read_text(encoding="utf-8"))
    return record


def as_json(event: Event) -> dict[str, Any]:
    """An event as it is stored: the JSON round trip of `Event.to_dict()`."""
    data: dict[str, Any] = json.loads(json.dumps(event.to_dict(), default=str))
    return data


def is_engine_event(event: dict[str, Any]) -> bool:
    return (event.get("meta") or {}).get("emitted_by") == "engine"


def ids_from(values: list[int]) -> Callable[[], int]:
    """Hands out `values` in order, then ids no recorded event has (so an extra event shows up)."""
    pending: Iterator[int] = iter(values)
    spare = iter(range(1, 1_000_000))

    def next_id() -> int:
        return next(pending, None) or next(spare)

    return next_id


def engine_for(record: dict[str, Any], ids: Callable[[], int]) -> Engine:
    """A fresh engine for the recorded execution, with a fixed clock."""
    playbook = load_playbook(PLAYBOOKS / record["playbook"])

    def opt_int(key: str) -> int | None:
        value = record.get(key)
        return None if value is None else int(value)

    return Engine(
        playbook,
        int(record["execution_id"]),
        ids=ids,
        clock=lambda: FIXED_CLOCK,
        catalog_id=opt_int("catalog_id"),
        parent_execution_id=opt_int("parent_execution_id"),
        stamp=record.get("stamp") or None,
    )


def state_of(engine: Engine) -> dict[str, Any]:
    """The final state the golden files record, from an engine."""
    state = engine.state
    return json.loads(
        json.dumps(
            {
                "status": state.status,
                "error": state.error if state.status != "COMPLETED" else None,
                "steps": {
                    name: {"status": step.status.upper(), "result": engine.step_data(name)}
                    for name, step in state.steps.items()
                },
                "ctx": state.ctx,
            },
            default=str,
        )
    )


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what differs from run to run: its id and timestamps."""
    out = {k: v for k, v in event.items() if k not in ("event_id", "created_at")}
    out["meta"] = {k: v for k, v in (event.get("meta") or {}).items() if k != "emitted_at"}
    return out
