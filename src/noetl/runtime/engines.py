"""The engines of the executions one process orchestrates, and the locks that serialise them.

Each execution's `Engine` is kept in memory and rebuilt from the event log when missing (after a
restart, after eviction, or when another process on a shared store wrote to the execution).
Work on one execution is serialised by a lock in this process plus the store's cross-process
execution lock; under it a cached engine that missed another process's writes folds just those
events (the store reads them by write sequence), so two servers sharing an execution do not
rebuild it from the whole log at each turn.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.loops import DEFAULT_LOOP_WINDOW
from noetl.engine.machine import Engine
from noetl.errors import PlaybookError, ValidationFailed
from noetl.ids import observe
from noetl.store.ports import CatalogEntry, Store

# Ended executions whose engines stay in memory (status queries, late reports); older ones are
# rebuilt from the log when asked for, so a long-lived process does not grow without bound.
MAX_ENDED_ENGINES = 1000
_STAMPED_META = ("trace", "parent_execution_id")


class EngineCache:
    def __init__(
        self,
        store: Store,
        *,
        ids: Callable[[], int],
        max_attempts: int = 3,
        loop_window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        self.store = store
        self.ids = ids
        self.max_attempts = max_attempts
        self.loop_window = loop_window
        self.max_ended = MAX_ENDED_ENGINES
        self._engines: dict[int, Engine] = {}
        # The ids of the events reported for each cached engine's open commands, so a repeated
        # post is recognised without asking the store. A command's ids go when it ends (a repeat
        # for an ended command is checked against the store), so this stays as small as the
        # commands in flight, whatever the length of the run.
        self._reported: dict[int, dict[str, set[int]]] = {}
        self._ended: OrderedDict[int, None] = OrderedDict()  # ended executions, oldest first
        self._locks: dict[int, threading.RLock] = {}
        self._depth: dict[int, int] = {}
        self._guard = threading.Lock()
        self._playbooks: dict[int, Playbook] = {}

    # ------------------------------------------------------------------ locks

    def lock(self, execution_id: int) -> AbstractContextManager[Any]:
        """Serialise work on one execution (re-entrant in this thread). On a store other processes
        share, the outermost holder also takes the store's cross-process lock and drops a cached
        engine that missed writes."""
        lock = self._locks.get(execution_id)
        if lock is None:
            with self._guard:
                lock = self._locks.setdefault(execution_id, threading.RLock())
        if not self.store.shared:
            return lock  # one process owns the store: the lock in this process is all it takes
        return self._shared(execution_id, lock)

    @contextmanager
    def _shared(self, execution_id: int, lock: threading.RLock) -> Iterator[None]:
        with lock:
            depth = self._depth.get(execution_id, 0)
            self._depth[execution_id] = depth + 1
            try:
                if depth:
                    yield
                    return
                with self.store.execution_lock(execution_id):
                    if execution_id in self._engines and self.store.is_stale(execution_id):
                        self._catch_up(execution_id)
                    yield
            finally:
                self._depth[execution_id] -= 1

    def _catch_up(self, execution_id: int) -> None:
        """Fold into the cached engine what other processes wrote since this one last saw the
        execution (one indexed read of just those events); rebuild when the store cannot tell."""
        unseen = self.store.unseen(execution_id)
        engine = self._engines[execution_id]
        if unseen is None:
            self._forget(execution_id)
            return
        reported = self._reported.setdefault(execution_id, {})
        for event in unseen:
            engine.apply(event)
        if unseen:
            observe(self.ids, max(event.event_id for event in unseen))
        commands = engine.state.commands
        for event in unseen:
            command_id = event.command_id
            if command_id is not None and command_id in commands:
                reported.setdefault(command_id, set()).add(event.event_id)
        for command_id in [c for c in reported if c not in commands]:
            del reported[command_id]

    # ------------------------------------------------------------------ engines

    def add(self, engine: Engine) -> None:
        self._engines[engine.execution_id] = engine
        self._reported[engine.execution_id] = {}

    def cached(self, execution_id: int) -> Engine | None:
        """The engine if it is in memory (no store access)."""
        return self._engines.get(execution_id)

    def get(self, execution_id: int) -> Engine | None:
        """The execution's engine, rebuilt from the log when it is not in memory; None when the
        execution is unknown (or its playbook is not in the catalog)."""
        engine = self._engines.get(execution_id)
        if engine is not None:
            return engine
        with self.lock(execution_id):
            engine = self._engines.get(execution_id)
            return engine if engine is not None else self._rebuild(execution_id)

    def reported(self, execution_id: int) -> dict[str, set[int]]:
        """command id -> ids of the events reported for it, for the open commands of a cached
        engine."""
        return self._reported.setdefault(execution_id, {})

    def new_engine(
        self,
        playbook: Playbook,
        execution_id: int,
        *,
        catalog_id: int | None,
        parent_execution_id: int | None,
        stamp: dict[str, object],
    ) -> Engine:
        return Engine(
            playbook,
            execution_id,
            ids=self.ids,
            catalog_id=catalog_id,
            parent_execution_id=parent_execution_id,
            stamp=stamp,
            max_attempts=self.max_attempts,
            loop_window=self.loop_window,
        )

    def _rebuild(self, execution_id: int) -> Engine | None:
        log_events = self.store.read(execution_id)
        if not log_events or log_events[0].event_type != ev.PLAYBOOK_STARTED:
            return None
        started = log_events[0]
        entry = self.store.resource_by_id(started.catalog_id) if started.catalog_id is not None else None
        if entry is None:
            return None
        meta = started.meta or {}
        stamp = {k: v for k, v in meta.items() if k.startswith("iterator_") or k in _STAMPED_META}
        engine = self.new_engine(
            self.playbook(entry),
            execution_id,
            catalog_id=entry.catalog_id,
            parent_execution_id=started.parent_execution_id,
            stamp=stamp,
        )
        engine.fold(log_events)
        observe(self.ids, max(event.event_id for event in log_events))
        self.store.mark_current(execution_id)
        self._engines[execution_id] = engine
        reported: dict[str, set[int]] = {}
        for event in log_events:
            command_id = event.command_id
            if command_id is not None and command_id in engine.state.commands:
                reported.setdefault(command_id, set()).add(event.event_id)
        self._reported[execution_id] = reported
        return engine

    def retire(self, execution_id: int) -> None:
        """An execution ended: keep its engine among the last `max_ended`, evict older ones (only
        when nobody works on them; they are rebuilt from the log if needed)."""
        with self._guard:
            self._ended[execution_id] = None
            self._ended.move_to_end(execution_id)
            while len(self._ended) > self.max_ended:
                old, _ = self._ended.popitem(last=False)
                lock = self._locks.get(old)
                if lock is None or not lock.acquire(blocking=False):
                    continue  # in use right now: it stays cached
                try:
                    self._forget(old)
                    self._locks.pop(old, None)
                    self._depth.pop(old, None)
                finally:
                    lock.release()

    def forget(self, execution_id: int) -> None:
        """Drop a cached engine (its in-memory state is not what the log says)."""
        self._forget(execution_id)

    def _forget(self, execution_id: int) -> None:
        self._engines.pop(execution_id, None)
        self._reported.pop(execution_id, None)

    def __contains__(self, execution_id: int) -> bool:
        return execution_id in self._engines

    # ------------------------------------------------------------------ playbooks

    def playbook(self, entry: CatalogEntry) -> Playbook:
        """The parsed playbook of a catalog entry (parsed once per entry)."""
        playbook = self._playbooks.get(entry.catalog_id)
        if playbook is None:
            try:
                playbook = parse_playbook(entry.content, source=f"catalog:{entry.path}@{entry.version}")
            except PlaybookError as exc:
                raise ValidationFailed(str(exc)) from exc
            self._playbooks[entry.catalog_id] = playbook
        return playbook
