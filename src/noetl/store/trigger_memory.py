"""The trigger port (`noetl.store.trigger_ports`) on dicts, for `MemoryStore`, and the lock table
of single-process stores (memory, SQLite): one process owns the store, so its trigger locks are
locks in this process."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from noetl.engine.events import utcnow
from noetl.errors import Conflict
from noetl.status import RUNNING
from noetl.store.codec import utc_ms
from noetl.store.ports import ExecutionSummary
from noetl.store.trigger_ports import PENDING, STARTED, ScheduleRecord, SubscriptionRecord, TickRecord


class LocalLocks:
    """Named locks of one process (`trigger_lock` of a store nobody else writes to)."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str, *, wait: bool = True) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        held = lock.acquire(blocking=wait)
        try:
            yield held
        finally:
            if held:
                lock.release()


@dataclasses.dataclass
class TriggerData:
    schedules: dict[int, ScheduleRecord] = dataclasses.field(default_factory=dict)
    ticks: dict[tuple[int, datetime], TickRecord] = dataclasses.field(default_factory=dict)
    subscriptions: dict[int, SubscriptionRecord] = dataclasses.field(default_factory=dict)
    messages: dict[tuple[int, str], tuple[int, float]] = dataclasses.field(default_factory=dict)
    guard: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    locks: LocalLocks = dataclasses.field(default_factory=LocalLocks)


class MemoryTriggers:
    """Mixed into `MemoryStore` (which sets `_trigger_data` and answers `execution`)."""

    _trigger_data: TriggerData

    def execution(self, execution_id: int) -> ExecutionSummary | None:  # pragma: no cover - the store's
        raise NotImplementedError

    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        data = self._trigger_data
        now = utc_ms(utcnow())
        with data.guard:
            if any(
                s.name == record.name and s.schedule_id != record.schedule_id for s in data.schedules.values()
            ):
                raise Conflict(f"a schedule named {record.name!r} exists already")
            old = data.schedules.get(record.schedule_id)
            stored = dataclasses.replace(
                record,
                next_run_at=utc_ms(record.next_run_at) if record.next_run_at else None,
                created_at=old.created_at if old else now,
                updated_at=now,
            )
            data.schedules[record.schedule_id] = stored
            return stored

    def get_schedule(self, schedule_id: int) -> ScheduleRecord | None:
        with self._trigger_data.guard:
            return self._trigger_data.schedules.get(schedule_id)

    def schedules(self) -> list[ScheduleRecord]:
        with self._trigger_data.guard:
            return sorted(self._trigger_data.schedules.values(), key=lambda s: s.name)

    def delete_schedule(self, schedule_id: int) -> bool:
        data = self._trigger_data
        with data.guard:
            data.ticks = {k: t for k, t in data.ticks.items() if k[0] != schedule_id}
            return data.schedules.pop(schedule_id, None) is not None

    def due_schedules(self, now: datetime) -> list[int]:
        data = self._trigger_data
        with data.guard:
            pending = {t.schedule_id for t in data.ticks.values() if t.status == PENDING}
            return [
                s.schedule_id
                for s in data.schedules.values()
                if s.enabled
                and ((s.next_run_at is not None and s.next_run_at <= now) or s.schedule_id in pending)
            ]

    def set_next_run(self, schedule_id: int, next_run_at: datetime | None) -> None:
        data = self._trigger_data
        with data.guard:
            old = data.schedules.get(schedule_id)
            if old is not None:
                moment = utc_ms(next_run_at) if next_run_at else None
                data.schedules[schedule_id] = dataclasses.replace(old, next_run_at=moment)

    def claim_tick(self, tick: TickRecord) -> TickRecord:
        data = self._trigger_data
        key = (tick.schedule_id, utc_ms(tick.tick_at))
        with data.guard:
            found = data.ticks.get(key)
            if found is None:
                found = dataclasses.replace(tick, tick_at=key[1], created_at=utc_ms(utcnow()))
                data.ticks[key] = found
            return found

    def update_tick(self, schedule_id: int, tick_at: datetime, status: str, error: str | None = None) -> None:
        data = self._trigger_data
        key = (schedule_id, utc_ms(tick_at))
        with data.guard:
            old = data.ticks.get(key)
            if old is not None:
                data.ticks[key] = dataclasses.replace(old, status=status, error=error)

    def pending_ticks(self, schedule_id: int) -> list[TickRecord]:
        with self._trigger_data.guard:
            found = [
                t
                for t in self._trigger_data.ticks.values()
                if t.schedule_id == schedule_id and t.status == PENDING
            ]
        return sorted(found, key=lambda t: t.tick_at)

    def ticks(self, schedule_id: int, *, limit: int = 50) -> list[TickRecord]:
        with self._trigger_data.guard:
            found = [t for t in self._trigger_data.ticks.values() if t.schedule_id == schedule_id]
        return sorted(found, key=lambda t: t.tick_at, reverse=True)[:limit]

    def active_runs(self, schedule_id: int) -> int:
        with self._trigger_data.guard:
            started = [
                t.execution_id
                for t in self._trigger_data.ticks.values()
                if t.schedule_id == schedule_id and t.status == STARTED and t.execution_id is not None
            ]
        count = 0
        for execution_id in started:
            summary = self.execution(execution_id)
            count += summary is not None and summary.status == RUNNING
        return count

    # -- subscriptions -----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> SubscriptionRecord:
        data = self._trigger_data
        now = utc_ms(utcnow())
        with data.guard:
            taken = any(
                s.name == record.name and s.subscription_id != record.subscription_id
                for s in data.subscriptions.values()
            )
            if taken:
                raise Conflict(f"a subscription named {record.name!r} exists already")
            old = data.subscriptions.get(record.subscription_id)
            stored = dataclasses.replace(record, created_at=old.created_at if old else now, updated_at=now)
            data.subscriptions[record.subscription_id] = stored
            return stored

    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None:
        with self._trigger_data.guard:
            return self._trigger_data.subscriptions.get(subscription_id)

    def subscriptions(self) -> list[SubscriptionRecord]:
        with self._trigger_data.guard:
            return sorted(self._trigger_data.subscriptions.values(), key=lambda s: s.name)

    def delete_subscription(self, subscription_id: int) -> bool:
        with self._trigger_data.guard:
            return self._trigger_data.subscriptions.pop(subscription_id, None) is not None

    def claim_message(self, subscription_id: int, key: str, window_secs: float, execution_id: int) -> int:
        data = self._trigger_data
        now = time.time()
        with data.guard:
            held = data.messages.get((subscription_id, key))
            if held is not None and now - held[1] <= window_secs:
                return held[0]
            data.messages[(subscription_id, key)] = (execution_id, now)
            if len(data.messages) > 100_000:  # forget claims whose window is long over
                data.messages = {k: v for k, v in data.messages.items() if now - v[1] <= 86_400}
            return execution_id

    # -- coordination ------------------------------------------------------------------------

    def trigger_lock(self, key: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        return self._trigger_data.locks.hold(key, wait=wait)
