"""Re-record the golden event logs: `.venv/bin/python -m tests.golden.record [CASE ...]`.

Runs each case's playbook with `LocalRuntime` on a memory store, collects every event in the order
the runtime committed it (its `on_event` observer), and writes `logs/<label>.jsonl` and
`logs/<label>.state.json` for the run and for each nested execution it started. The final status
and step results come from the live run's outcome; the recorder refuses to write a case whose log,
folded by a fresh `Engine`, does not give that outcome back. Review the diff before committing:
a changed golden file is a changed engine decision.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from typing import Any

from noetl.dsl import load_playbook
from noetl.engine.events import Event
from noetl.runtime.local import LocalRuntime, RunOutcome
from noetl.store import open_store
from tests.golden.golden import (
    LOGS,
    PLAYBOOKS,
    STAMP_KEYS,
    as_json,
    engine_for,
    ids_from,
    state_of,
)

# case -> the workload override of its run
CASES: dict[str, dict[str, Any]] = {
    "chain": {},
    "routing": {},
    "fan_in": {},
    "parallel_loop": {},
    "loop_continue": {},
    "pipeline": {},
    "failing_step": {},
    "nested": {},
    "pagination": {},
}


def _run(case: str) -> tuple[RunOutcome, dict[int, list[dict[str, Any]]], Any]:
    playbook = load_playbook(PLAYBOOKS / f"{case}.yaml")
    store = open_store("memory://")
    logs: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def observe(event: Event) -> None:
        logs[event.execution_id].append(as_json(event))

    async def main() -> RunOutcome:
        async with LocalRuntime(store, concurrency=4, on_event=observe) as runtime:
            return await asyncio.wait_for(runtime.run(playbook, CASES[case]), 120)

    outcome = asyncio.run(main())
    return outcome, logs, store


def _record(execution_id: int, log: list[dict[str, Any]], playbook_file: str) -> dict[str, Any]:
    started = log[0]
    assert started["event_type"] == "playbook_started", started
    meta = started.get("meta") or {}
    return {
        "playbook": playbook_file,
        "execution_id": str(execution_id),
        "catalog_id": started.get("catalog_id"),
        "parent_execution_id": started.get("parent_execution_id"),
        "stamp": {k: meta[k] for k in STAMP_KEYS if k in meta},
    }


def _folded(record: dict[str, Any], log: list[dict[str, Any]]) -> dict[str, Any]:
    engine = engine_for(record, ids_from([]))
    engine.fold([Event.from_dict(e) for e in log])
    return state_of(engine)


def record(case: str) -> list[str]:
    """Run one case and write its golden files; the labels written."""
    outcome, logs, store = _run(case)
    root = outcome.execution_id
    for stale in LOGS.glob(f"{case}.child-*"):
        stale.unlink()
    written: list[str] = []
    children = sorted(
        (eid for eid in logs if eid != root),
        key=lambda eid: (logs[eid][0].get("meta") or {}).get("iterator_index", 0),
    )
    for index, execution_id in enumerate([root, *children]):
        log = logs[execution_id]
        stored = [e.event_id for e in store.read(execution_id)]
        assert sorted(e["event_id"] for e in log) == sorted(stored), f"{case}: observed != stored events"
        if execution_id == root:
            label, playbook_file = case, f"{case}.yaml"
        else:
            label, playbook_file = f"{case}.child-{index - 1}", _child_playbook(log)
        entry = _record(execution_id, log, playbook_file)
        folded = _folded(entry, log)
        if execution_id == root:
            live = {
                "status": outcome.status,
                "error": outcome.error,
                "steps": {n: {"status": s.status, "result": s.result} for n, s in outcome.steps.items()},
            }
            live = json.loads(json.dumps(live, default=str))
            assert {k: folded[k] for k in live} == live, f"{case}: the folded log disagrees with the run"
        else:
            summary = store.execution(execution_id)
            assert summary is not None and summary.status == folded["status"], (summary, folded["status"])
        (LOGS / f"{label}.jsonl").write_text(
            "".join(json.dumps(e, sort_keys=True) + "\n" for e in log), encoding="utf-8"
        )
        (LOGS / f"{label}.state.json").write_text(
            json.dumps({**entry, **folded}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        written.append(label)
    return written


def _child_playbook(log: list[dict[str, Any]]) -> str:
    """The file in `playbooks/` whose metadata.path the child ran."""
    path = (log[0].get("context") or {}).get("path")
    for file in sorted(PLAYBOOKS.glob("*.yaml")):
        if load_playbook(file).path == path:
            return file.name
    raise SystemExit(f"no playbook in {PLAYBOOKS} has metadata.path {path!r}")


def main(argv: list[str] | None = None) -> int:
    cases = (sys.argv[1:] if argv is None else argv) or list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    LOGS.mkdir(exist_ok=True)
    for case in cases:
        for label in record(case):
            events = sum(1 for _ in (LOGS / f"{label}.jsonl").open(encoding="utf-8"))
            print(f"recorded {label}: {events} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
