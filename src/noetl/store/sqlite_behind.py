"""Deferred appends for the SQLite store: `append` keeps the batch and the caller's event loop
writes it a moment later, in one transaction with whatever else was appended meanwhile.

Why: in `noetl run` a step's commit sat between its outcome and the launch of the next step.
Deferred, the next step is on its way to its tool process first, and the commit runs while the
tool process works. (A writer thread was tried: the GIL hand-overs cost more than they saved.)

What stays true:
- Every other operation of the store (reads, other writes, close) first writes what was appended
  before it, so a caller reads its own appends.
- The log stays a prefix of what was appended: when a write fails, nothing after it is written
  and every later call of the store raises that failure.
- A process killed meanwhile loses only the batches not yet written, as if it had been killed a
  moment earlier (a run is at-least-once either way).

Only the local runtime defers (`SQLiteStore.write_behind`); a server's store writes at once,
because its callers (a worker's report, a claim) are answered after the write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from noetl.engine.events import Event
from noetl.errors import NoetlError, StoreError
from noetl.store.codec import EventRow

log = logging.getLogger(__name__)

Schedule = Callable[[Callable[[], None]], None]
"""Runs a callback soon, on the caller's event loop (after what it has already scheduled)."""


@dataclass(frozen=True)
class Batch:
    """One `append` call: its events, their rows, and whether a stored id is a conflict."""

    events: Sequence[Event]
    rows: list[EventRow]
    strict: bool


class DeferredAppends:
    """The batches not yet written. `write(batches)` writes batches in one transaction (or none
    of them, raising)."""

    def __init__(self, write: Callable[[list[Batch]], None], schedule: Schedule) -> None:
        self._write = write
        self._schedule = schedule
        self._pending: list[Batch] = []
        self._scheduled = False
        self._error: NoetlError | None = None
        self._guard = threading.Lock()  # a store may be read from another thread meanwhile

    def put(self, batch: Batch) -> None:
        with self._guard:
            self._check()
            self._pending.append(batch)
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule(self._due)

    def flush(self) -> None:
        """Write every batch kept so far; raise the failure of one that could not be written."""
        with self._guard:
            batches, self._pending = self._pending, []
            if batches:
                failure = _write_all(self._write, batches)
                if failure is not None:
                    self._error = failure
            self._check()

    def _due(self) -> None:
        with self._guard:
            self._scheduled = False
        try:
            self.flush()
        except NoetlError as exc:  # kept: the next call of the store raises it
            log.error("writing events failed: %s", exc)

    def _check(self) -> None:
        if self._error is not None:
            raise StoreError(
                f"an earlier write of events failed, nothing after it was written: {self._error}"
            )


def _write_all(write: Callable[[list[Batch]], None], batches: list[Batch]) -> NoetlError | None:
    """Write the batches together; when that fails, one by one up to the one that fails (the
    rest are dropped: nothing is written after a gap)."""
    try:
        write(batches)
        return None
    except Exception as exc:
        if len(batches) == 1:
            return _failure(exc)
    for batch in batches:
        try:
            write([batch])
        except Exception as exc:
            return _failure(exc)
    return None


def _failure(exc: Exception) -> NoetlError:
    return exc if isinstance(exc, NoetlError) else StoreError(f"writing events: {exc!r}")
