"""The scheduler loop every server runs: it starts the runs of due schedule ticks, each exactly
once among all servers on the store.

A pass takes the due schedules (cursor reached, or ticks pending) and, for each one whose trigger
lock it gets without waiting (another server is handling the others), in this order:

1. claims the ticks to run (the catch-up policy picks them) as `pending` rows, each with the
   execution id its run will have; a tick row is unique per schedule and tick time;
2. moves the cursor past now;
3. starts the pending ticks oldest first: a tick whose run is already recorded (its server died
   after starting it) is only marked `started`; `max_active` skips or holds (`queue`) the rest.

A server that dies anywhere in between leaves the lock (PostgreSQL drops it with the connection)
and rows that say what is left to do: the next holder starts the pending ticks under their
claimed ids, so no tick is lost and none runs twice. A server that starts resumes from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from noetl.errors import NoetlError, NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.codec import utc_ms
from noetl.store.trigger_ports import FAILED, SKIPPED, STARTED, ScheduleRecord, TickRecord
from noetl.triggers.launch import launch, recorded
from noetl.triggers.specs import ScheduleSpec, schedule_spec
from noetl.triggers.timing import due_ticks

log = logging.getLogger(__name__)

DEFAULT_GRACE = 5.0  # seconds a tick may be late and still count as on time (catch-up)
DEFAULT_INTERVAL = 0.25  # seconds between passes


def utc_now() -> datetime:
    return utc_ms(datetime.now(UTC))


def lock_key(schedule_id: int) -> str:
    return f"schedule:{schedule_id}"


def run_metadata(record: ScheduleRecord, tick_at: datetime, trigger: str = "schedule") -> dict[str, str]:
    """What a scheduled run records on its `playbook_started` meta."""
    return {
        "trigger": trigger,
        "schedule_id": str(record.schedule_id),
        "schedule": record.name,
        "tick_at": tick_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class Scheduler:
    def __init__(
        self,
        control: ControlPlane,
        *,
        grace: float = DEFAULT_GRACE,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.control = control
        self.store = control.store
        self.grace = grace
        self.interval = interval
        self.clock = clock

    async def run(self) -> None:
        """Passes until cancelled; a failing pass is logged and the next one goes on."""
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("scheduler pass failed")
            await asyncio.sleep(self.interval)

    def run_once(self) -> int:
        """One pass; returns how many runs it started."""
        now = self.clock()
        started = 0
        for schedule_id in self.store.due_schedules(now):
            with self.store.trigger_lock(lock_key(schedule_id), wait=False) as held:
                if not held:
                    continue  # another server is on it
                try:
                    started += self.fire(schedule_id, now)
                except NoetlError as exc:
                    log.warning("schedule %s: %s", schedule_id, exc)
        return started

    def fire(self, schedule_id: int, now: datetime) -> int:
        """Claim the due ticks of one schedule, move its cursor, start its pending ticks (the
        caller holds the schedule's trigger lock)."""
        record = self.store.get_schedule(schedule_id)
        if record is None or not record.enabled:
            return 0
        spec = schedule_spec(record.spec)
        cursor = record.next_run_at
        if cursor is None or cursor <= now:
            if cursor is not None:
                for tick_at in due_ticks(spec.timing, cursor, now, spec.catchup, self.grace):
                    self.store.claim_tick(TickRecord(schedule_id, tick_at, self.control.ids()))
            self.store.set_next_run(schedule_id, spec.timing.next_after(now))
        return self.start_pending(record, spec)

    def start_pending(self, record: ScheduleRecord, spec: ScheduleSpec) -> int:
        started = 0
        for tick in self.store.pending_ticks(record.schedule_id):
            at, execution_id = tick.tick_at, tick.execution_id
            if execution_id is None:
                self.store.update_tick(record.schedule_id, at, FAILED, "claimed without an execution id")
                continue
            if recorded(self.control, execution_id):  # started before its server died
                self.store.update_tick(record.schedule_id, at, STARTED)
                continue
            if spec.max_active is not None and self.store.active_runs(record.schedule_id) >= spec.max_active:
                if spec.overlap == "queue":
                    break  # held until a run ends
                why = f"max_active: {spec.max_active} run(s) of the schedule still running"
                self.store.update_tick(record.schedule_id, at, SKIPPED, why)
                continue
            started += self.start(record, spec, tick)
        return started

    def start(
        self, record: ScheduleRecord, spec: ScheduleSpec, tick: TickRecord, trigger: str = "schedule"
    ) -> int:
        """Start one claimed tick's run; 1 when it started, 0 when it cannot (marked failed)."""
        assert tick.execution_id is not None
        try:
            launch(
                self.control,
                record.path,
                spec.payload,
                execution_id=tick.execution_id,
                metadata=run_metadata(record, tick.tick_at, trigger),
                execution_pool=spec.execution_pool,
            )
        except (NotFound, ValidationFailed) as exc:
            log.warning(
                "schedule %s (%s): tick %s not run: %s", record.name, record.schedule_id, tick.tick_at, exc
            )
            self.store.update_tick(record.schedule_id, tick.tick_at, FAILED, str(exc))
            return 0
        self.store.update_tick(record.schedule_id, tick.tick_at, STARTED)
        return 1
