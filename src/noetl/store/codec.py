"""How stored values are written as text: compact JSON and millisecond UTC timestamps.

The SQLite adapter stores events as rows in `COLUMNS` order; the memory adapter keeps the
same rows, so both give callers back exactly what a round trip through a database would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from noetl.engine.events import Event
from noetl.errors import StoreError

# One stored event: the values of `noetl.engine.events.COLUMNS`, in that order.
EventRow = tuple[
    int, int, int | None, int | None, int | None, str, str | None, str | None, str | None,
    str | None, str | None, str | None, str | None, str | None, str,
]  # fmt: skip


def dump_json(value: Any) -> str | None:
    """Compact JSON text (non-ASCII kept as is); None stays None (SQL NULL).

    orjson first (events are written by the ten thousand); the stdlib for what it refuses
    (integers beyond 64 bits), which raises the usual TypeError/ValueError for non-JSON values."""
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def load_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def utc_ms(moment: datetime) -> datetime:
    """`moment` in UTC, cut to milliseconds (a naive datetime is taken as UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]
_second: tuple[tuple[int, ...], str] = ((), "")  # the last second formatted, and its text


def dump_time(moment: datetime) -> str:
    """ISO-8601 UTC text with milliseconds, e.g. `2026-01-02T03:04:05.678Z` (sorts as text)."""
    global _second
    if moment.tzinfo is UTC and moment.year >= 1000:  # events' own clocks (the hot path)
        # Events come in bursts within one second: its text is formatted once (isoformat was
        # ~10% of the CPU time of building an event row).
        key = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
        cached = _second
        if cached[0] != key:
            cached = _second = (key, moment.strftime("%Y-%m-%dT%H:%M:%S"))
        return cached[1] + _MILLIS[moment.microsecond // 1000]
    return utc_ms(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def event_row(event: Event) -> EventRow:
    try:
        context, meta, result = dump_json(event.context), dump_json(event.meta), dump_json(event.result)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"event {event.event_id} ({event.event_type}) holds a value that is not JSON: {exc}"
        ) from exc
    return (
        event.event_id,
        event.execution_id,
        event.parent_event_id,
        event.parent_execution_id,
        event.catalog_id,
        event.event_type,
        event.node_id,
        event.node_name,
        event.node_type,
        event.status,
        context,
        meta,
        result,
        event.worker_id,
        dump_time(event.created_at),
    )


def row_event(
    row: tuple[Any, ...],
    *,
    load: Callable[[Any], Any] = load_json,
    when: Callable[[Any], datetime] = load_time,
) -> Event:
    """An event from a stored row in `COLUMNS` order; `load` and `when` decode the JSON and time
    columns (text here; a driver that returns native values passes its own)."""
    (
        event_id, execution_id, parent_event_id, parent_execution_id, catalog_id, event_type,
        node_id, node_name, node_type, status, context, meta, result, worker_id, created_at,
    ) = row  # fmt: skip
    return Event(
        event_id=event_id,
        execution_id=execution_id,
        event_type=event_type,
        node_name=node_name,
        node_id=node_id,
        node_type=node_type,
        status=status,
        context=load(context),
        meta=load(meta),
        result=load(result),
        parent_event_id=parent_event_id,
        parent_execution_id=parent_execution_id,
        catalog_id=catalog_id,
        worker_id=worker_id,
        created_at=when(created_at),
    )
