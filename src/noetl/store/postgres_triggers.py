"""The trigger port (`noetl.store.trigger_ports`) on PostgreSQL, mixed into `PostgresStore`.

Tables come from migration 5 (`postgres_sql.MIGRATIONS`). A tick or a message is claimed with
`INSERT ... ON CONFLICT DO NOTHING` on its unique key, so two servers never both claim it; a
trigger lock is a session advisory lock held on a pooled connection, released by PostgreSQL when
the process holding it dies (its connection closes).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from noetl.engine.events import utcnow
from noetl.store.postgres_rows import utc
from noetl.store.trigger_ports import PENDING, STARTED, ScheduleRecord, SubscriptionRecord, TickRecord

Connection = psycopg.Connection[TupleRow]

_SCHEDULE_COLUMNS = "schedule_id, name, path, spec, enabled, source, next_run_at, created_at, updated_at"
_TICK_COLUMNS = "schedule_id, tick_at, execution_id, status, error, created_at"
_SUBSCRIPTION_COLUMNS = "subscription_id, name, path, spec, enabled, created_at, updated_at"


class PostgresTriggers:
    """Mixed into `PostgresStore`, which provides the schema name, the pool and the transactions."""

    schema: str
    _pool: ConnectionPool[Connection]

    def _errors(self, action: str) -> AbstractContextManager[None]:  # pragma: no cover - the store's
        raise NotImplementedError

    def _reading(self, action: str) -> AbstractContextManager[Connection]:  # pragma: no cover
        raise NotImplementedError

    def _writing(self, action: str) -> AbstractContextManager[Connection]:  # pragma: no cover
        raise NotImplementedError

    @property
    def _t(self) -> str:
        return f'"{self.schema}"'

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        now = utcnow()
        with self._writing(f"put schedule {record.name!r}") as conn:
            row = conn.execute(
                f"INSERT INTO {self._t}.schedule ({_SCHEDULE_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (schedule_id) DO UPDATE SET name = excluded.name, path = excluded.path,"
                " spec = excluded.spec, enabled = excluded.enabled, source = excluded.source,"
                " next_run_at = excluded.next_run_at, updated_at = excluded.updated_at"
                f" RETURNING {_SCHEDULE_COLUMNS}",
                (
                    record.schedule_id,
                    record.name,
                    record.path,
                    Jsonb(record.spec),
                    record.enabled,
                    record.source,
                    record.next_run_at,
                    now,
                    now,
                ),
            ).fetchone()
        assert row is not None
        return _schedule(row)

    def get_schedule(self, schedule_id: int) -> ScheduleRecord | None:
        with self._reading("get schedule") as conn:
            row = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM {self._t}.schedule WHERE schedule_id = %s", (schedule_id,)
            ).fetchone()
        return None if row is None else _schedule(row)

    def schedules(self) -> list[ScheduleRecord]:
        with self._reading("list schedules") as conn:
            rows = conn.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM {self._t}.schedule ORDER BY name"
            ).fetchall()
        return [_schedule(row) for row in rows]

    def delete_schedule(self, schedule_id: int) -> bool:
        with self._writing("delete schedule") as conn:
            conn.execute(f"DELETE FROM {self._t}.schedule_tick WHERE schedule_id = %s", (schedule_id,))
            cursor = conn.execute(f"DELETE FROM {self._t}.schedule WHERE schedule_id = %s", (schedule_id,))
            return cursor.rowcount > 0

    def due_schedules(self, now: datetime) -> list[int]:
        with self._reading("find due schedules") as conn:
            rows = conn.execute(
                f"SELECT schedule_id FROM {self._t}.schedule s WHERE enabled AND (next_run_at <= %s"
                f" OR EXISTS (SELECT 1 FROM {self._t}.schedule_tick t WHERE t.schedule_id = s.schedule_id"
                " AND t.status = 'pending'))",
                (now,),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def set_next_run(self, schedule_id: int, next_run_at: datetime | None) -> None:
        with self._writing("advance schedule") as conn:
            conn.execute(
                f"UPDATE {self._t}.schedule SET next_run_at = %s WHERE schedule_id = %s",
                (next_run_at, schedule_id),
            )

    def claim_tick(self, tick: TickRecord) -> TickRecord:
        with self._writing("claim a schedule tick") as conn:
            conn.execute(
                f"INSERT INTO {self._t}.schedule_tick (schedule_id, tick_at, execution_id, status, error)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (schedule_id, tick_at) DO NOTHING",
                (tick.schedule_id, tick.tick_at, tick.execution_id, tick.status, tick.error),
            )
            row = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM {self._t}.schedule_tick WHERE schedule_id = %s AND tick_at = %s",
                (tick.schedule_id, tick.tick_at),
            ).fetchone()
        assert row is not None
        return _tick(row)

    def update_tick(self, schedule_id: int, tick_at: datetime, status: str, error: str | None = None) -> None:
        with self._writing("update a schedule tick") as conn:
            conn.execute(
                f"UPDATE {self._t}.schedule_tick SET status = %s, error = %s"
                " WHERE schedule_id = %s AND tick_at = %s",
                (status, error, schedule_id, tick_at),
            )

    def pending_ticks(self, schedule_id: int) -> list[TickRecord]:
        with self._reading("list pending ticks") as conn:
            rows = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM {self._t}.schedule_tick WHERE schedule_id = %s AND status = %s"
                " ORDER BY tick_at",
                (schedule_id, PENDING),
            ).fetchall()
        return [_tick(row) for row in rows]

    def ticks(self, schedule_id: int, *, limit: int = 50) -> list[TickRecord]:
        with self._reading("list ticks") as conn:
            rows = conn.execute(
                f"SELECT {_TICK_COLUMNS} FROM {self._t}.schedule_tick WHERE schedule_id = %s"
                " ORDER BY tick_at DESC LIMIT %s",
                (schedule_id, limit),
            ).fetchall()
        return [_tick(row) for row in rows]

    def active_runs(self, schedule_id: int) -> int:
        with self._reading("count active runs") as conn:
            row = conn.execute(
                f"SELECT COUNT(*) FROM {self._t}.schedule_tick t JOIN {self._t}.execution e"
                " ON e.execution_id = t.execution_id"
                " WHERE t.schedule_id = %s AND t.status = %s AND e.status = 'RUNNING'",
                (schedule_id, STARTED),
            ).fetchone()
        return int(row[0]) if row else 0

    # -- subscriptions -----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> SubscriptionRecord:
        now = utcnow()
        with self._writing(f"put subscription {record.name!r}") as conn:
            row = conn.execute(
                f"INSERT INTO {self._t}.subscription ({_SUBSCRIPTION_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (subscription_id) DO UPDATE SET name = excluded.name, path = excluded.path,"
                " spec = excluded.spec, enabled = excluded.enabled, updated_at = excluded.updated_at"
                f" RETURNING {_SUBSCRIPTION_COLUMNS}",
                (
                    record.subscription_id,
                    record.name,
                    record.path,
                    Jsonb(record.spec),
                    record.enabled,
                    now,
                    now,
                ),
            ).fetchone()
        assert row is not None
        return _subscription(row)

    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None:
        with self._reading("get subscription") as conn:
            row = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM {self._t}.subscription WHERE subscription_id = %s",
                (subscription_id,),
            ).fetchone()
        return None if row is None else _subscription(row)

    def subscriptions(self) -> list[SubscriptionRecord]:
        with self._reading("list subscriptions") as conn:
            rows = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM {self._t}.subscription ORDER BY name"
            ).fetchall()
        return [_subscription(row) for row in rows]

    def delete_subscription(self, subscription_id: int) -> bool:
        with self._writing("delete subscription") as conn:
            conn.execute(
                f"DELETE FROM {self._t}.subscription_message WHERE subscription_id = %s", (subscription_id,)
            )
            cursor = conn.execute(
                f"DELETE FROM {self._t}.subscription WHERE subscription_id = %s", (subscription_id,)
            )
            return cursor.rowcount > 0

    def claim_message(self, subscription_id: int, key: str, window_secs: float, execution_id: int) -> int:
        table = f"{self._t}.subscription_message"
        with self._writing("claim a message") as conn:
            conn.execute(
                f"DELETE FROM {table} WHERE subscription_id = %s AND message_key = %s"
                " AND seen_at < now() - make_interval(secs => %s)",
                (subscription_id, key, window_secs),
            )
            conn.execute(
                f"INSERT INTO {table} (subscription_id, message_key, execution_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (subscription_id, message_key) DO NOTHING",
                (subscription_id, key, execution_id),
            )
            row = conn.execute(
                f"SELECT execution_id FROM {table} WHERE subscription_id = %s AND message_key = %s",
                (subscription_id, key),
            ).fetchone()
        assert row is not None
        return int(row[0])

    # -- coordination ------------------------------------------------------------------------

    @contextmanager
    def trigger_lock(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        lock = (
            zlib.crc32(f"{self.schema}.trigger".encode()) & 0x7FFFFFFF,
            zlib.crc32(key.encode()) & 0x7FFFFFFF,
        )
        with self._errors(f"lock trigger {key}"), self._pool.connection() as conn:
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", lock)
                held = True
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()
                held = bool(row and row[0])
            try:
                yield held
            finally:
                if held and not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", lock)


def _schedule(row: tuple[Any, ...]) -> ScheduleRecord:
    schedule_id, name, path, spec, enabled, source, next_run_at, created_at, updated_at = row
    return ScheduleRecord(
        schedule_id=int(schedule_id),
        name=name,
        path=path,
        spec=dict(spec or {}),
        enabled=bool(enabled),
        source=source,
        next_run_at=utc(next_run_at) if next_run_at else None,
        created_at=utc(created_at),
        updated_at=utc(updated_at),
    )


def _tick(row: tuple[Any, ...]) -> TickRecord:
    schedule_id, tick_at, execution_id, status, error, created_at = row
    return TickRecord(
        schedule_id=int(schedule_id),
        tick_at=utc(tick_at),
        execution_id=int(execution_id) if execution_id is not None else None,
        status=status,
        error=error,
        created_at=utc(created_at),
    )


def _subscription(row: tuple[Any, ...]) -> SubscriptionRecord:
    subscription_id, name, path, spec, enabled, created_at, updated_at = row
    return SubscriptionRecord(
        subscription_id=int(subscription_id),
        name=name,
        path=path,
        spec=dict(spec or {}),
        enabled=bool(enabled),
        created_at=utc(created_at),
        updated_at=utc(updated_at),
    )
