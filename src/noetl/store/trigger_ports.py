"""The store port of triggers (schedules and message subscriptions): what several servers on one
store need to start each run exactly once.

A schedule's `next_run_at` is its cursor: the earliest tick not yet handled. A tick is claimed by
inserting its row (unique per schedule and tick time) with the execution id it will run as; a
`pending` tick whose run is not recorded yet is started by whoever holds the schedule's trigger
lock, so a server that dies between the claim and the start loses nothing (the next holder starts
it with the claimed id), and a tick is never started twice. Message claims work the same way,
keyed by (subscription, message key) inside a time window.

The specs (`spec`) are kept as JSON: `noetl.triggers` gives them their meaning.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# Tick statuses.
PENDING = "pending"  # claimed; its run is not known to be started yet
STARTED = "started"  # its run is recorded (a playbook_started with this execution id)
SKIPPED = "skipped"  # not run: max_active was reached and the schedule skips
FAILED = "failed"  # could not be started (e.g. the playbook is not in the catalog)
TICK_STATUSES = (PENDING, STARTED, SKIPPED, FAILED)


@dataclass(frozen=True)
class ScheduleRecord:
    schedule_id: int
    name: str
    path: str  # catalog path of the playbook (its latest version runs)
    spec: dict[str, Any]  # cron/every, timezone, payload, catchup, max_active, overlap, pool
    enabled: bool = True
    source: str = "api"  # api | playbook (declared in the playbook's `schedules:`)
    next_run_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TickRecord:
    schedule_id: int
    tick_at: datetime
    execution_id: int | None
    status: str = PENDING
    error: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class SubscriptionRecord:
    subscription_id: int
    name: str
    path: str
    spec: dict[str, Any] = field(default_factory=dict)  # subject, stream, durable, workload, dedup
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None


class TriggerStore(Protocol):
    # -- schedules ---------------------------------------------------------------------------

    def put_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert or replace by `schedule_id` (created_at is kept); Conflict when the name
        belongs to another schedule."""
        ...

    def get_schedule(self, schedule_id: int) -> ScheduleRecord | None: ...

    def schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    def delete_schedule(self, schedule_id: int) -> bool:
        """Delete a schedule and its ticks."""
        ...

    def due_schedules(self, now: datetime) -> list[int]:
        """Enabled schedules whose cursor is at or before `now`, or that have pending ticks."""
        ...

    def set_next_run(self, schedule_id: int, next_run_at: datetime | None) -> None: ...

    def claim_tick(self, tick: TickRecord) -> TickRecord:
        """Insert the tick unless (schedule_id, tick_at) is stored; the stored row either way."""
        ...

    def update_tick(
        self, schedule_id: int, tick_at: datetime, status: str, error: str | None = None
    ) -> None: ...

    def pending_ticks(self, schedule_id: int) -> list[TickRecord]:
        """The schedule's pending ticks, oldest first."""
        ...

    def ticks(self, schedule_id: int, *, limit: int = 50) -> list[TickRecord]:
        """The schedule's latest ticks, newest first."""
        ...

    def active_runs(self, schedule_id: int) -> int:
        """How many started runs of the schedule are still RUNNING."""
        ...

    # -- subscriptions -----------------------------------------------------------------------

    def put_subscription(self, record: SubscriptionRecord) -> SubscriptionRecord:
        """Insert or replace by `subscription_id`; Conflict when the name is another's."""
        ...

    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None: ...

    def subscriptions(self) -> list[SubscriptionRecord]: ...

    def delete_subscription(self, subscription_id: int) -> bool: ...

    def claim_message(self, subscription_id: int, key: str, window_secs: float, execution_id: int) -> int:
        """The execution id that holds the message key: `execution_id` when this call claimed
        it (no claim, or the previous one is older than the window), else the holder's."""
        ...

    # -- coordination ------------------------------------------------------------------------

    def trigger_lock(self, key: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        """Mutual exclusion among every process on the store, for `key` (a schedule or a
        message). Yields whether it is held: with `wait=False`, False when another holds it.
        A process that dies releases its locks."""
        ...
