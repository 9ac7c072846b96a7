"""Deferred appends of the SQLite store (`SQLiteStore.write_behind`, used by the local runtime):
nothing is written until the scheduled callback or another call of the store, a failed write
keeps the log a prefix and fails every later call, and the other stores write at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from noetl.engine.events import PLAYBOOK_STARTED, STEP_ENTER, Event
from noetl.errors import StoreError
from noetl.ids import Snowflake
from noetl.store.memory import MemoryStore
from noetl.store.sqlite import SQLiteStore

ids = Snowflake(node=11)


def event(execution_id: int, event_type: str = STEP_ENTER, **fields: object) -> Event:
    fields.setdefault("event_id", ids.next())
    return Event(execution_id=execution_id, event_type=event_type, **fields)  # type: ignore[arg-type]


def on_disk(path: Path) -> int:
    """Events another connection sees in the file."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM event").fetchone()[0])


class Later:
    """A schedule that keeps the callbacks until the test runs them."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def run(self) -> None:
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def test_appends_wait_for_the_scheduled_write_in_one_callback(tmp_path: Path) -> None:
    path, later = tmp_path / "d.db", Later()
    store = SQLiteStore(path)
    execution = ids.next()
    with store.write_behind(later):
        store.append([event(execution)])
        store.append([event(execution), event(execution)])
        assert on_disk(path) == 0
        assert len(later.callbacks) == 1  # one write for everything appended meanwhile
        later.run()
        assert on_disk(path) == 3
        store.append([event(execution)])
        assert len(later.callbacks) == 1
    assert on_disk(path) == 4  # the block's end writes what is left
    store.close()


def test_every_other_call_writes_the_deferred_appends_first(tmp_path: Path) -> None:
    path, later = tmp_path / "d.db", Later()
    store = SQLiteStore(path)
    execution = ids.next()
    with store.write_behind(later):
        first = event(execution, PLAYBOOK_STARTED, node_name="p", context={"path": "p"})
        store.append([first, event(execution)])
        assert store.known_event_ids([first.event_id]) == {first.event_id}
        assert on_disk(path) == 2
        assert store.execution(execution) is not None  # the projection followed
        store.append([event(execution)])
        assert store.workers() == []  # a call that is not about events writes them too
        assert on_disk(path) == 3
        later.run()  # nothing left: a no-op
        assert on_disk(path) == 3
    store.close()


def test_a_failed_write_keeps_the_log_a_prefix_and_fails_later_calls(tmp_path: Path) -> None:
    path, later = tmp_path / "d.db", Later()
    store = SQLiteStore(path)
    execution = ids.next()
    taken = event(execution)
    store.append([taken])
    with pytest.raises(StoreError, match="an earlier write of events failed"):
        with store.write_behind(later):
            store.append([event(execution)])
            store.append([event(execution, event_id=taken.event_id)], strict=True)  # a conflict
            store.append([event(execution)])
            later.run()  # logs the failure instead of raising into the event loop
            assert on_disk(path) == 2  # the batch before the conflict, nothing after it
            with pytest.raises(StoreError, match="an earlier write of events failed"):
                store.read(execution)
            with pytest.raises(StoreError, match="an earlier write of events failed"):
                store.append([event(execution)])
    assert on_disk(path) == 2
    store.close()


def test_close_writes_what_is_deferred(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    store = SQLiteStore(path)
    block = store.write_behind(Later())
    block.__enter__()
    store.append([event(ids.next())])
    store.close()
    assert on_disk(path) == 1


def test_a_store_that_does_not_defer_writes_at_once() -> None:
    store, later = MemoryStore(), Later()
    execution = ids.next()
    with store.write_behind(later):
        store.append([event(execution)])
        assert later.callbacks == []
        assert len(store.read(execution)) == 1
