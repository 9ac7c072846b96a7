"""The scheduler (`noetl.triggers.scheduler`) on a fake clock over an in-memory control plane: which
ticks run, once each, what a run records, max_active, recovery of ticks claimed by a dead server,
and the schedules a playbook declares."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from noetl.engine.events import PLAYBOOK_STARTED
from noetl.errors import ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.status import RUNNING
from noetl.store import open_store
from noetl.store.trigger_ports import PENDING, SKIPPED, STARTED, TickRecord
from noetl.triggers.scheduler import Scheduler
from noetl.triggers.schedules import Schedules
from noetl.triggers.specs import schedule_spec

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: ticked, path: tests/ticked}
workload: {n: 0}
workflow:
  - step: start
    tool: {kind: python, input: {n: "{{ workload.n }}"}, code: "result = {'n': n}"}
"""
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 - timedelta(milliseconds=500))


@pytest.fixture
def control() -> ControlPlane:
    plane = ControlPlane(open_store("memory://"))
    plane.register(PLAYBOOK)
    return plane


def make(control: ControlPlane, clock: Clock, **spec: object) -> tuple[Scheduler, Schedules, int]:
    scheduler = Scheduler(control, grace=2.0, clock=clock)
    schedules = Schedules(control, scheduler)
    record = schedules.create("every-second", "tests/ticked", schedule_spec({"every": "1s", **spec}))
    return scheduler, schedules, record.schedule_id


def runs(control: ControlPlane, schedule_id: int) -> list[dict[str, object]]:
    found = []
    for summary in control.store.executions(limit=10_000):
        started = control.store.read(summary.execution_id)[0]
        meta = started.meta or {}
        if started.event_type == PLAYBOOK_STARTED and meta.get("schedule_id") == str(schedule_id):
            found.append({"execution_id": summary.execution_id, **meta, "workload": started.context})
    return sorted(found, key=lambda r: str(r["tick_at"]))


def test_each_tick_runs_once_and_records_its_schedule_and_time(control: ControlPlane, clock: Clock) -> None:
    scheduler, _, sid = make(control, clock, payload={"n": 7})
    assert scheduler.run_once() == 0  # nothing due yet
    for _ in range(3):
        clock.advance(1.0)
        assert scheduler.run_once() == 1
        assert scheduler.run_once() == 0  # the same tick never twice
    found = runs(control, sid)
    assert [r["tick_at"] for r in found] == [
        "2026-01-05T12:00:00.000Z",
        "2026-01-05T12:00:01.000Z",
        "2026-01-05T12:00:02.000Z",
    ]
    assert all(r["trigger"] == "schedule" and r["schedule"] == "every-second" for r in found)
    ticks = control.store.ticks(sid)
    assert {t.status for t in ticks} == {STARTED}
    assert {t.execution_id for t in ticks} == {r["execution_id"] for r in found}


@pytest.mark.parametrize(("catchup", "count"), [("skip", 3), ("one", 4), ("all", 11)])
def test_catch_up_after_ten_seconds_without_a_scheduler(
    control: ControlPlane, clock: Clock, catchup: str, count: int
) -> None:
    scheduler, _, sid = make(control, clock, catchup=catchup)
    clock.advance(10.5)  # ticks 12:00:00 .. 12:00:10 fell due while no server ran
    assert scheduler.run_once() == count
    assert len(runs(control, sid)) == count
    clock.advance(1.0)
    assert scheduler.run_once() == 1  # and on it goes, one tick a second


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_max_active_skips_or_queues_ticks(control: ControlPlane, clock: Clock, overlap: str) -> None:
    scheduler, _, sid = make(control, clock, max_active=1, overlap=overlap)
    clock.advance(1.0)
    assert scheduler.run_once() == 1  # no worker: the run stays RUNNING
    clock.advance(1.0)
    assert scheduler.run_once() == 0
    second = control.store.ticks(sid)[0]
    assert second.status == (SKIPPED if overlap == "skip" else PENDING)
    first = runs(control, sid)[0]
    control.cancel(int(str(first["execution_id"])))
    assert scheduler.run_once() == (1 if overlap == "queue" else 0)
    statuses = [t.status for t in control.store.ticks(sid)]
    assert statuses == ([SKIPPED, STARTED] if overlap == "skip" else [STARTED, STARTED])


def test_a_tick_claimed_by_a_server_that_died_starts_under_its_claimed_id(
    control: ControlPlane, clock: Clock
) -> None:
    scheduler, _, sid = make(control, clock)
    store = control.store
    # a server claimed 12:00:00 and died before starting it
    store.claim_tick(TickRecord(sid, T0, 4242, PENDING))
    # another claimed 12:00:01, started it, and died before marking it started
    second = store.claim_tick(TickRecord(sid, T0 + timedelta(seconds=1), 4343, PENDING))
    record = store.get_schedule(sid)
    assert record is not None
    scheduler.start(record, schedule_spec(record.spec), second)
    store.update_tick(sid, second.tick_at, PENDING)
    store.set_next_run(sid, T0 + timedelta(seconds=2))
    clock.advance(3.0)
    assert scheduler.run_once() == 2  # 12:00:00 (as 4242) and 12:00:02; 12:00:01 is not run again
    found = runs(control, sid)
    assert [(r["tick_at"], r["execution_id"]) for r in found][:2] == [
        ("2026-01-05T12:00:00.000Z", 4242),
        ("2026-01-05T12:00:01.000Z", 4343),
    ]
    assert len(found) == 3
    assert all(t.status == STARTED for t in store.ticks(sid))


def test_a_daily_0230_new_york_schedule_runs_once_across_the_spring_forward_day(
    control: ControlPlane,
) -> None:
    ny = ZoneInfo("America/New_York")
    clock = Clock(datetime(2025, 3, 8, 12, 0, tzinfo=ny).astimezone(UTC))
    scheduler = Scheduler(control, grace=600.0, clock=clock)
    spec = schedule_spec({"cron": "30 2 * * *", "timezone": "America/New_York"})
    sid = Schedules(control, scheduler).create("nightly", "tests/ticked", spec).schedule_id
    while clock.now < datetime(2025, 3, 10, 12, 0, tzinfo=ny):
        scheduler.run_once()
        clock.advance(600)  # a pass every ten minutes for two days
    days = [datetime.fromisoformat(str(r["tick_at"])).astimezone(ny).isoformat() for r in runs(control, sid)]
    assert days == ["2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]


def test_run_now_pause_and_resume(control: ControlPlane, clock: Clock) -> None:
    scheduler, schedules, sid = make(control, clock)
    schedules.update(sid, {"enabled": False})
    clock.advance(5.0)
    assert scheduler.run_once() == 0  # paused
    tick = schedules.trigger(sid)
    assert tick.status == STARTED and control.store.execution(tick.execution_id or 0) is not None
    assert runs(control, sid)[0]["trigger"] == "manual"
    schedules.update(sid, {"enabled": True})  # resumed: the paused ticks are not caught up
    assert scheduler.run_once() == 0
    clock.advance(1.0)
    assert scheduler.run_once() == 1
    assert control.store.execution(tick.execution_id or 0).status == RUNNING  # type: ignore[union-attr]


def test_declared_schedules_follow_the_registered_playbook(control: ControlPlane, clock: Clock) -> None:
    schedules = Schedules(control, Scheduler(control, clock=clock))
    control.register_hooks.append(schedules.declared)
    declared = (
        PLAYBOOK
        + "schedules:\n  - {name: nightly, cron: '0 3 * * *', timezone: Europe/Paris}\n  - every: 1m\n"
    )
    control.register(declared)
    found = {s.name: s for s in control.store.schedules()}
    assert set(found) == {"tests/ticked:nightly", "tests/ticked:2"}
    assert found["tests/ticked:nightly"].source == "playbook"
    nightly = found["tests/ticked:nightly"]
    control.register(
        PLAYBOOK + "schedules:\n  - {name: nightly, cron: '0 4 * * *', timezone: Europe/Paris}\n"
    )
    after = {s.name: s for s in control.store.schedules()}
    assert set(after) == {"tests/ticked:nightly"}
    assert after["tests/ticked:nightly"].schedule_id == nightly.schedule_id
    assert after["tests/ticked:nightly"].spec["cron"] == "0 4 * * *"
    versions = len(control.store.entries())
    with pytest.raises(ValidationFailed, match="schedules\\[0\\]"):
        control.register(PLAYBOOK + "schedules:\n  - {cron: 'not cron'}\n")
    assert len(control.store.entries()) == versions  # refused before anything was stored
