"""Run history over a store: pages of runs (filtered by status, playbook and start time), one
run's view with its graph and children, its logs. The API (`/api/runs`) and the CLI's local mode
(`noetl runs --store`, `noetl logs --store`) both answer from here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.errors import NoetlError, NotFound
from noetl.observability.runview import MAX_ITERATIONS, RunFold, iso, millis
from noetl.status import TERMINAL
from noetl.store.ports import CatalogEntry, ExecutionSummary, Store

MAX_PAGE = 500
MAX_CHILDREN = 100
MAX_TIMELINE = 2000

PlaybookOf = Callable[[CatalogEntry], Playbook]


@dataclass(frozen=True)
class RunQuery:
    status: str | None = None
    playbook: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    parent_execution_id: int | None = None
    limit: int = 50
    offset: int = 0


def summary_json(summary: ExecutionSummary, *, now: datetime | None = None) -> dict[str, Any]:
    """A row of the run list; a running run's duration runs up to `now`."""
    end = summary.completed_at or (now if summary.status not in TERMINAL else None)
    return {
        "execution_id": str(summary.execution_id),
        "path": summary.path,
        "catalog_id": None if summary.catalog_id is None else str(summary.catalog_id),
        "status": summary.status,
        "started_at": iso(summary.started_at),
        "completed_at": iso(summary.completed_at),
        "duration_ms": millis(summary.started_at, end),
        "parent_execution_id": None
        if summary.parent_execution_id is None
        else str(summary.parent_execution_id),
        "error": summary.error,
    }


def list_runs(store: Store, query: RunQuery, *, now: datetime | None = None) -> dict[str, Any]:
    """One page of runs, newest first; `has_more` says whether another page follows."""
    limit = max(1, min(query.limit, MAX_PAGE))
    rows = store.executions(
        status=query.status.upper() if query.status else None,
        parent_execution_id=query.parent_execution_id,
        path=query.playbook or None,
        started_after=query.since,
        started_before=query.until,
        limit=limit + 1,
        offset=max(0, query.offset),
    )
    return {
        "runs": [summary_json(row, now=now) for row in rows[:limit]],
        "limit": limit,
        "offset": max(0, query.offset),
        "has_more": len(rows) > limit,
    }


def fold(store: Store, execution_id: int) -> RunFold:
    events = store.read(execution_id)
    if not events:
        raise NotFound(f"execution {execution_id} not found")
    return RunFold().add_all(events)


def playbook_of_run(store: Store, run: RunFold, parse: PlaybookOf | None = None) -> Playbook | None:
    """The playbook a run ran: its catalog entry, else the latest version of its path in the
    catalog; None when neither is known (a local run of a file) or it no longer parses."""
    started = run.started
    if started is None:
        return None
    entry = store.resource_by_id(started.catalog_id) if started.catalog_id is not None else None
    path = (started.context or {}).get("path")
    if entry is None and isinstance(path, str):
        entry = store.resource(path)
    if entry is None:
        return None
    try:
        return parse(entry) if parse is not None else parse_playbook(entry.content)
    except NoetlError:
        return None


def run_view(
    store: Store, execution_id: int, *, parse: PlaybookOf | None = None, iterations: int = MAX_ITERATIONS
) -> dict[str, Any]:
    """Everything the run page shows: header, steps (attempts, loops), graph, children, timeline."""
    events = store.read(execution_id)
    if not events:
        raise NotFound(f"execution {execution_id} not found")
    run = RunFold().add_all(events)
    view = run.view(playbook_of_run(store, run, parse), iterations=iterations)
    view["execution_id"] = str(execution_id)
    view["children"] = children(store, execution_id)
    view["timeline"] = [_timeline_row(e) for e in events[-MAX_TIMELINE:]]
    view["events_total"] = len(events)
    return view


def children(store: Store, execution_id: int, limit: int = MAX_CHILDREN) -> list[dict[str, Any]]:
    """The first `limit` child runs, with the loop iteration each was started for."""
    rows = store.executions(parent_execution_id=execution_id, limit=limit)
    found = []
    for row in rows:
        first = store.read(row.execution_id)[:1]
        meta = (first[0].meta or {}) if first and first[0].event_type == ev.PLAYBOOK_STARTED else {}
        found.append(
            {
                **summary_json(row),
                "iterator_index": meta.get("iterator_index"),
                "parent_step": meta.get("parent_step"),
            }
        )
    found.sort(key=lambda c: (c["iterator_index"] is None, c["iterator_index"] or 0, c["started_at"] or ""))
    return found


def iterations(
    store: Store, execution_id: int, step: str, *, offset: int = 0, limit: int = MAX_ITERATIONS
) -> dict[str, Any]:
    """A page of a loop step's iterations (their latest attempt each), in index order."""
    run = fold(store, execution_id)
    if step not in run.steps:
        raise NotFound(f"execution {execution_id} has no step '{step}'")
    latest = sorted((i, a) for i, a in run.steps[step].latest().items() if i is not None)
    page = latest[offset : offset + max(1, min(limit, MAX_PAGE))]
    return {
        "step": step,
        "total": len(latest),
        "offset": offset,
        "iterations": [a.to_json() for _, a in page],
    }


def logs(store: Store, execution_id: int, step: str | None = None) -> dict[str, Any]:
    run = fold(store, execution_id)
    if step is not None and step not in run.steps:
        raise NotFound(f"execution {execution_id} has no step '{step}'")
    return {"execution_id": str(execution_id), "status": run.status(), "attempts": run.logs(step)}


def _timeline_row(event: Any) -> dict[str, Any]:
    meta = event.meta or {}
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "node_name": event.node_name,
        "status": event.status,
        "worker_id": event.worker_id,
        "iteration": meta.get("iteration_index"),
        "created_at": iso(event.created_at),
    }


__all__ = [
    "MAX_PAGE",
    "RunQuery",
    "children",
    "iterations",
    "list_runs",
    "logs",
    "playbook_of_run",
    "run_view",
    "summary_json",
]
