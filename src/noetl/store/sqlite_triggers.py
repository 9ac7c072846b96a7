"""The trigger port (`noetl.store.trigger_ports`) on SQLite: its tables (part of the SQLite schema)
and the methods `SQLiteStore` mixes in. Trigger locks are locks in this process (one server owns
an embedded store)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from noetl.engine.events import utcnow
from noetl.store.codec import dump_json, dump_time, load_json, load_time
from noetl.store.trigger_memory import LocalLocks
from noetl.store.trigger_ports import PENDING, STARTED, ScheduleRecord, SubscriptionRecord, TickRecord

TRIGGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedule (
    schedule_id INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    source      TEXT NOT NULL,
    next_run_at TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_tick (
    schedule_id  INTEGER NOT NULL,
    tick_at      TEXT NOT NULL,
    execution_id INTEGER,
    status       TEXT NOT NULL,
    error        TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (schedule_id, tick_at)
);
CREATE INDEX IF NOT EXISTS idx_schedule_tick_pending ON schedule_tick (schedule_id, tick_at)
    WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS subscription (
    subscription_id INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    path            TEXT NOT NULL,
    spec            TEXT NOT NULL,
    enabled         INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subscription_message (
    subscription_id INTEGER NOT NULL,
    message_key     TEXT NOT NULL,
    execution_id    INTEGER NOT NULL,
    seen_at         REAL NOT NULL,
    PRIMARY KEY (subscription_id, message_key)
)
"""

_SCHEDULE_COLUMNS = "schedule_id, name, path, spec, enabled, source, next_run_at, created_at, updated_at"
_TICK_COLUMNS = "schedule_id, tick_at, execution_id, status, error, created_at"
_SUBSCRIPTION_COLUMNS = "subscription_id, name, path, spec, enabled, created_at, updated_at"


class SQLiteTriggers:
    """Mixed into `SQLiteStore`, which provides the transactions."""

    _trigger_locks: LocalLocks

    def _reading(self, action: str) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    def _writing(self, action: str) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover
        raise NotImplementedError

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        now = dump_time(utcnow())
        next_run = dump_time(record.next_run_at) if record.next_run_at else None
        with self._writing(f"put schedule {record.name!r}") as conn:
            conn.execute(
                f"INSERT INTO schedule ({_SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (schedule_id) DO UPDATE SET name = excluded.name, path = excluded.path,"
                " spec = excluded.spec, enabled = excluded.enabled, source = excluded.source,"
                " next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
                (
                    record.schedule_id,
                    record.name,
                    record.path,
                    dump_json(record.spec),
                    int(record.enabled),
                    record.source,
                    next_run,
                    now,
                    now,
                ),
            )
        stored = self.get_schedule(record.schedule_id)
        assert stored is not None
        return stored

    def get_schedule(self, schedule_id: int) -> ScheduleRecord | None:
        with self._reading("get schedule") as conn:
            row = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedule WHERE schedule_id = ?", (schedule_id,)
            ).fetchone()
        return None if row is None else _schedule(row)

    def schedules(self) -> list[ScheduleRecord]:
        with self._reading("list schedules") as conn:
            rows = conn.execute(f"SELECT {_SCHEDULE_COLUMNS} FROM schedule ORDER BY name").fetchall()
        return [_schedule(row) for row in rows]

    def delete_schedule(self, schedule_id: int) -> bool:
        with self._writing("delete schedule") as conn:
            conn.execute("DELETE FROM schedule_tick WHERE schedule_id = ?", (schedule_id,))
            return conn.execute("DELETE FROM schedule WHERE schedule_id = ?", (schedule_id,)).rowcount > 0

    def due_schedules(self, now: datetime) -> list[int]:
        with self._reading("find due schedules") as conn:
            rows = conn.execute(
                "SELECT schedule_id FROM schedule WHERE enabled = 1 AND (next_run_at <= ? OR EXISTS"
                " (SELECT 1 FROM schedule_tick t WHERE t.schedule_id = schedule.schedule_id"
                " AND t.status = 'pending'))",
                (dump_time(now),),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def set_next_run(self, schedule_id: int, next_run_at: datetime | None) -> None:
        moment = dump_time(next_run_at) if next_run_at else None
        with self._writing("advance schedule") as conn:
            conn.execute("UPDATE schedule SET next_run_at = ? WHERE schedule_id = ?", (moment, schedule_id))

    def claim_tick(self, tick: TickRecord) -> TickRecord:
        at = dump_time(tick.tick_at)
        with self._writing("claim a schedule tick") as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO schedule_tick ({_TICK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (tick.schedule_id, at, tick.execution_id, tick.status, tick.error, dump_time(utcnow())),
            )
            row = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM schedule_tick WHERE schedule_id = ? AND tick_at = ?",
                (tick.schedule_id, at),
            ).fetchone()
        return _tick(row)

    def update_tick(self, schedule_id: int, tick_at: datetime, status: str, error: str | None = None) -> None:
        with self._writing("update a schedule tick") as conn:
            conn.execute(
                "UPDATE schedule_tick SET status = ?, error = ? WHERE schedule_id = ? AND tick_at = ?",
                (status, error, schedule_id, dump_time(tick_at)),
            )

    def pending_ticks(self, schedule_id: int) -> list[TickRecord]:
        with self._reading("list pending ticks") as conn:
            rows = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM schedule_tick WHERE schedule_id = ? AND status = ?"
                " ORDER BY tick_at",
                (schedule_id, PENDING),
            ).fetchall()
        return [_tick(row) for row in rows]

    def ticks(self, schedule_id: int, *, limit: int = 50) -> list[TickRecord]:
        with self._reading("list ticks") as conn:
            rows = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM schedule_tick WHERE schedule_id = ? ORDER BY tick_at DESC LIMIT ?",
                (schedule_id, limit),
            ).fetchall()
        return [_tick(row) for row in rows]

    def active_runs(self, schedule_id: int) -> int:
        with self._reading("count active runs") as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM schedule_tick t JOIN execution e ON e.execution_id = t.execution_id"
                " WHERE t.schedule_id = ? AND t.status = ? AND e.status = 'RUNNING'",
                (schedule_id, STARTED),
            ).fetchone()
        return int(row[0])

    # -- subscriptions -----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> SubscriptionRecord:
        now = dump_time(utcnow())
        with self._writing(f"put subscription {record.name!r}") as conn:
            conn.execute(
                f"INSERT INTO subscription ({_SUBSCRIPTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (subscription_id) DO UPDATE SET name = excluded.name, path = excluded.path,"
                " spec = excluded.spec, enabled = excluded.enabled, updated_at = excluded.updated_at",
                (
                    record.subscription_id,
                    record.name,
                    record.path,
                    dump_json(record.spec),
                    int(record.enabled),
                    now,
                    now,
                ),
            )
        stored = self.get_subscription(record.subscription_id)
        assert stored is not None
        return stored

    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None:
        with self._reading("get subscription") as conn:
            row = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscription WHERE subscription_id = ?",
                (subscription_id,),
            ).fetchone()
        return None if row is None else _subscription(row)

    def subscriptions(self) -> list[SubscriptionRecord]:
        with self._reading("list subscriptions") as conn:
            rows = conn.execute(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscription ORDER BY name").fetchall()
        return [_subscription(row) for row in rows]

    def delete_subscription(self, subscription_id: int) -> bool:
        with self._writing("delete subscription") as conn:
            conn.execute("DELETE FROM subscription_message WHERE subscription_id = ?", (subscription_id,))
            cursor = conn.execute("DELETE FROM subscription WHERE subscription_id = ?", (subscription_id,))
            return cursor.rowcount > 0

    def claim_message(self, subscription_id: int, key: str, window_secs: float, execution_id: int) -> int:
        now = time.time()
        with self._writing("claim a message") as conn:
            conn.execute(
                "DELETE FROM subscription_message WHERE subscription_id = ? AND message_key = ? AND seen_at < ?",
                (subscription_id, key, now - window_secs),
            )
            conn.execute(
                "INSERT OR IGNORE INTO subscription_message (subscription_id, message_key, execution_id, seen_at)"
                " VALUES (?, ?, ?, ?)",
                (subscription_id, key, execution_id, now),
            )
            row = conn.execute(
                "SELECT execution_id FROM subscription_message WHERE subscription_id = ? AND message_key = ?",
                (subscription_id, key),
            ).fetchone()
        return int(row[0])

    # -- coordination ------------------------------------------------------------------------

    def trigger_lock(self, key: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        return self._trigger_locks.hold(key, wait=wait)


def _schedule(row: tuple[Any, ...]) -> ScheduleRecord:
    schedule_id, name, path, spec, enabled, source, next_run_at, created_at, updated_at = row
    return ScheduleRecord(
        schedule_id=schedule_id,
        name=name,
        path=path,
        spec=load_json(spec) or {},
        enabled=bool(enabled),
        source=source,
        next_run_at=load_time(next_run_at) if next_run_at else None,
        created_at=load_time(created_at),
        updated_at=load_time(updated_at),
    )


def _tick(row: tuple[Any, ...]) -> TickRecord:
    schedule_id, tick_at, execution_id, status, error, created_at = row
    return TickRecord(
        schedule_id=schedule_id,
        tick_at=load_time(tick_at),
        execution_id=execution_id,
        status=status,
        error=error,
        created_at=load_time(created_at),
    )


def _subscription(row: tuple[Any, ...]) -> SubscriptionRecord:
    subscription_id, name, path, spec, enabled, created_at, updated_at = row
    return SubscriptionRecord(
        subscription_id=subscription_id,
        name=name,
        path=path,
        spec=load_json(spec) or {},
        enabled=bool(enabled),
        created_at=load_time(created_at),
        updated_at=load_time(updated_at),
    )
