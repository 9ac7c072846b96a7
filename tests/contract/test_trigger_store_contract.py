"""The trigger part of the Store contract (`noetl.store.trigger_ports`): schedules, ticks claimed
once per (schedule, tick time), message claims inside a window, trigger locks. Every adapter."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from noetl.engine.events import PLAYBOOK_COMPLETED, PLAYBOOK_STARTED, Event
from noetl.errors import Conflict
from noetl.ids import Snowflake
from noetl.store.ports import Store
from noetl.store.trigger_ports import (
    PENDING,
    SKIPPED,
    STARTED,
    ScheduleRecord,
    SubscriptionRecord,
    TickRecord,
)

ids = Snowflake(node=11)
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    adapter: Store
    if request.param == "memory":
        from noetl.store.memory import MemoryStore

        adapter = MemoryStore()
    elif request.param == "sqlite":
        from noetl.store.sqlite import SQLiteStore

        adapter = SQLiteStore(tmp_path / "triggers.db")
    else:
        import psycopg

        from noetl.store.postgres import PostgresStore

        dsn = request.getfixturevalue("pg_dsn")
        schema = f"noetl_trig_{uuid.uuid4().hex[:8]}"
        adapter = PostgresStore(dsn, schema=schema)
        try:
            yield adapter
        finally:
            adapter.close()
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        return
    yield adapter
    adapter.close()


def schedule(name: str = "nightly", **fields: object) -> ScheduleRecord:
    base: dict[str, object] = {
        "schedule_id": ids(),
        "name": name,
        "path": "tests/triggered",
        "spec": {"every": 1.0, "timezone": "UTC", "payload": {"n": 1}},
        "next_run_at": T0,
    }
    base.update(fields)
    return ScheduleRecord(**base)  # type: ignore[arg-type]


def test_schedules_are_stored_updated_listed_and_deleted(store: Store) -> None:
    first = store.put_schedule(schedule("b-first"))
    second = store.put_schedule(schedule("a-second", enabled=False))
    assert first.created_at is not None and first.spec["payload"] == {"n": 1}
    assert [s.name for s in store.schedules()] == ["a-second", "b-first"]
    changed = store.put_schedule(
        ScheduleRecord(**{**first.__dict__, "spec": {"cron": "* * * * *"}, "next_run_at": None})
    )
    assert changed.created_at == first.created_at
    got = store.get_schedule(first.schedule_id)
    assert got is not None and got.spec == {"cron": "* * * * *"} and got.next_run_at is None
    with pytest.raises(Conflict):
        store.put_schedule(schedule("a-second"))
    assert store.delete_schedule(second.schedule_id)
    assert not store.delete_schedule(second.schedule_id)
    assert store.get_schedule(second.schedule_id) is None


def test_a_tick_is_claimed_once_and_due_schedules_follow_the_cursor(store: Store) -> None:
    record = store.put_schedule(schedule())
    sid = record.schedule_id
    assert store.due_schedules(T0 - timedelta(seconds=1)) == []
    assert store.due_schedules(T0) == [sid]
    won = store.claim_tick(TickRecord(sid, T0, 111))
    lost = store.claim_tick(TickRecord(sid, T0, 222))
    assert won.execution_id == 111 and lost.execution_id == 111 and lost.status == PENDING
    store.set_next_run(sid, T0 + timedelta(seconds=1))
    # a pending tick keeps the schedule due even when its cursor is in the future
    assert store.due_schedules(T0) == [sid]
    assert [t.tick_at for t in store.pending_ticks(sid)] == [T0]
    store.update_tick(sid, T0, STARTED)
    assert store.due_schedules(T0) == []
    store.claim_tick(TickRecord(sid, T0 + timedelta(seconds=1), None, SKIPPED))
    assert [(t.tick_at, t.status) for t in store.ticks(sid)] == [
        (T0 + timedelta(seconds=1), SKIPPED),
        (T0, STARTED),
    ]
    paused = store.put_schedule(ScheduleRecord(**{**record.__dict__, "enabled": False}))
    assert not paused.enabled
    store.claim_tick(TickRecord(sid, T0 + timedelta(seconds=2), 333))
    assert store.due_schedules(T0 + timedelta(days=1)) == []  # disabled: never due


def test_active_runs_count_started_ticks_whose_run_is_running(store: Store) -> None:
    sid = store.put_schedule(schedule()).schedule_id
    running, done = ids(), ids()
    for execution_id in (running, done):
        store.append([Event(event_id=ids(), execution_id=execution_id, event_type=PLAYBOOK_STARTED)])
    store.append(
        [Event(event_id=ids(), execution_id=done, event_type=PLAYBOOK_COMPLETED, status="COMPLETED")]
    )
    store.claim_tick(TickRecord(sid, T0, running, STARTED))
    store.claim_tick(TickRecord(sid, T0 + timedelta(seconds=1), done, STARTED))
    store.claim_tick(TickRecord(sid, T0 + timedelta(seconds=2), ids(), PENDING))
    assert store.active_runs(sid) == 1


def test_subscriptions_and_message_claims_inside_the_window(store: Store) -> None:
    sub = store.put_subscription(SubscriptionRecord(ids(), "orders", "tests/x", {"subject": "a.b"}))
    assert [s.name for s in store.subscriptions()] == ["orders"]
    with pytest.raises(Conflict):
        store.put_subscription(SubscriptionRecord(ids(), "orders", "tests/x", {}))
    sid = sub.subscription_id
    assert store.claim_message(sid, "m-1", 60, 1) == 1
    assert store.claim_message(sid, "m-1", 60, 2) == 1
    assert store.claim_message(sid + 1, "m-1", 60, 3) == 3  # another subscription's key
    time.sleep(1.1)
    assert store.claim_message(sid, "m-1", 1, 4) == 4  # the old claim is outside the window
    assert store.delete_subscription(sid)
    assert store.get_subscription(sid) is None


def test_trigger_locks_exclude_each_other(store: Store) -> None:
    with store.trigger_lock("schedule:1") as held:
        assert held
        seen: list[bool] = []

        def other() -> None:
            with store.trigger_lock("schedule:1", wait=False) as got:
                seen.append(got)
            with store.trigger_lock("schedule:2", wait=False) as got:
                seen.append(got)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert seen == [False, True]
    with store.trigger_lock("schedule:1", wait=False) as again:
        assert again
