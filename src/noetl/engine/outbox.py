"""The events one engine decision emits: built with the execution's ids and stamp, folded into
the state as they are made (so later parts of the same decision see them), and handed back to
the caller to persist."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from noetl.engine.events import Event
from noetl.engine.state import ExecutionState


class Outbox:
    def __init__(
        self,
        state: ExecutionState,
        *,
        ids: Callable[[], int],
        clock: Callable[[], datetime],
        apply: Callable[[Event], None],
        stamp: dict[str, Any],
    ) -> None:
        self.state = state
        self.ids = ids
        self.clock = clock
        self.apply = apply
        # Metadata stamped on every event of this execution (iterator metadata, trace).
        self.stamp = stamp
        self._out: list[Event] = []

    def emit(
        self,
        event_type: str,
        *,
        node_name: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        status: str | None = None,
        context: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        event_id: int | None = None,
    ) -> Event:
        full_meta = {"emitted_by": "engine", **(meta or {})}
        if self.stamp:
            full_meta.update(self.stamp)
        event = Event(
            event_id=event_id if event_id is not None else self.ids(),
            execution_id=self.state.execution_id,
            event_type=event_type,
            node_name=node_name,
            node_id=node_id if node_id is not None else node_name,
            node_type=node_type,
            status=status,
            context=context,
            meta=full_meta,
            result=result,
            parent_execution_id=self.state.parent_execution_id,
            catalog_id=self.state.catalog_id,
            created_at=self.clock(),
        )
        self.apply(event)
        self._out.append(event)
        return event

    def clear(self) -> None:
        """Start a new decision: forget events not flushed."""
        self._out = []

    def flush(self) -> list[Event]:
        """The events emitted since the last `clear` or `flush`."""
        out, self._out = self._out, []
        return out
