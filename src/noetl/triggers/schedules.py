"""Schedules as the API and the catalog change them: create, update, pause, resume, delete, run
now, and the schedules a playbook declares.

A playbook declares schedules in a top-level `schedules:` list (each entry a schedule spec plus an
optional `name` and `enabled`); registering a version of the playbook creates or updates them and
deletes the declared schedules that the new version no longer lists. A declared schedule is named
`<playbook path>:<name>` (`<playbook path>:<position>` without a name) and runs the latest version
of the playbook. The declaration wins: registering again resets what the API changed in them.

The cursor (`next_run_at`) is set to the first tick after now when a schedule is created, when its
timing changes and when it is resumed (ticks that fell while it was paused are not caught up);
other changes keep it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from noetl.dsl.yaml_lines import load_yaml
from noetl.errors import Conflict, NotFound, ValidationFailed
from noetl.runtime.control import ControlPlane
from noetl.store.ports import CatalogEntry
from noetl.store.trigger_ports import PENDING, ScheduleRecord, TickRecord
from noetl.triggers.scheduler import Scheduler, lock_key
from noetl.triggers.specs import ScheduleSpec, schedule_spec

DECLARED = "playbook"


class Schedules:
    def __init__(self, control: ControlPlane, scheduler: Scheduler | None = None) -> None:
        self.control = control
        self.store = control.store
        self.scheduler = scheduler or Scheduler(control)

    def get(self, schedule_id: int) -> ScheduleRecord:
        record = self.store.get_schedule(schedule_id)
        if record is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return record

    def create(
        self, name: str, path: str, spec: ScheduleSpec, *, enabled: bool = True, source: str = "api"
    ) -> ScheduleRecord:
        if any(s.name == name for s in self.store.schedules()):
            raise Conflict(f"a schedule named {name!r} exists already")
        record = ScheduleRecord(
            schedule_id=self.control.ids(),
            name=name,
            path=path,
            spec=spec.to_json(),
            enabled=enabled,
            source=source,
            next_run_at=spec.timing.next_after(self.scheduler.clock()),
        )
        return self.store.put_schedule(record)

    def update(self, schedule_id: int, changes: Mapping[str, Any]) -> ScheduleRecord:
        """Apply `changes` (name, path, enabled, and any spec field) to a schedule."""
        with self.store.trigger_lock(lock_key(schedule_id)):
            record = self.get(schedule_id)
            spec_changes = {k: v for k, v in changes.items() if k not in ("name", "path", "enabled")}
            merged = {**record.spec, **spec_changes}
            if "cron" in spec_changes and spec_changes["cron"] is not None:
                merged.pop("every", None)
            if "every" in spec_changes and spec_changes["every"] is not None:
                merged.pop("cron", None)
            spec = schedule_spec({k: v for k, v in merged.items() if v is not None})
            name = changes.get("name") or record.name
            if name != record.name and any(s.name == name for s in self.store.schedules()):
                raise Conflict(f"a schedule named {name!r} exists already")
            enabled = bool(changes["enabled"]) if changes.get("enabled") is not None else record.enabled
            cursor = record.next_run_at
            old_timing = schedule_spec(record.spec).timing
            if spec.timing != old_timing or (enabled and not record.enabled) or cursor is None:
                cursor = spec.timing.next_after(self.scheduler.clock())
            updated = replace(
                record,
                name=name,
                path=changes.get("path") or record.path,
                spec=spec.to_json(),
                enabled=enabled,
                next_run_at=cursor,
            )
            return self.store.put_schedule(updated)

    def delete(self, schedule_id: int) -> None:
        with self.store.trigger_lock(lock_key(schedule_id)):
            if not self.store.delete_schedule(schedule_id):
                raise NotFound(f"schedule {schedule_id} not found")

    def trigger(self, schedule_id: int) -> TickRecord:
        """Run the schedule now (paused or not, `max_active` aside): a tick at this moment."""
        with self.store.trigger_lock(lock_key(schedule_id)):
            record = self.get(schedule_id)
            spec = schedule_spec(record.spec)
            tick = self.store.claim_tick(
                TickRecord(schedule_id, self.scheduler.clock(), self.control.ids(), PENDING)
            )
            if tick.status == PENDING and not self.scheduler.start(record, spec, tick, trigger="manual"):
                failed = next(
                    (t for t in self.store.ticks(schedule_id, limit=5) if t.tick_at == tick.tick_at), tick
                )
                raise NotFound(failed.error or f"schedule {record.name}: the run could not start")
            return next(
                (t for t in self.store.ticks(schedule_id, limit=5) if t.tick_at == tick.tick_at), tick
            )

    # ------------------------------------------------------------------ declared in playbooks

    def declared(self, text: str) -> Callable[[CatalogEntry], None]:
        """Check the `schedules:` a playbook declares (ValidationFailed before anything is
        stored) and return what to do once its version is registered."""
        doc = load_yaml(text)
        raw = doc.get("schedules") if isinstance(doc, dict) else None
        entries = declared_entries(raw)

        def apply(entry: CatalogEntry) -> None:
            self.sync_declared(entry.path, entries)

        return apply

    def sync_declared(self, path: str, entries: list[tuple[str, bool, ScheduleSpec]]) -> None:
        existing = {s.name: s for s in self.store.schedules() if s.source == DECLARED and s.path == path}
        wanted = {f"{path}:{name}": (enabled, spec) for name, enabled, spec in entries}
        for name, (enabled, spec) in wanted.items():
            old = existing.get(name)
            if old is None:
                self.create(name, path, spec, enabled=enabled, source=DECLARED)
            else:
                self.update(old.schedule_id, {**spec.to_json(), "enabled": enabled})
        for name, old in existing.items():
            if name not in wanted:
                self.store.delete_schedule(old.schedule_id)


def declared_entries(raw: Any) -> list[tuple[str, bool, ScheduleSpec]]:
    """(name, enabled, spec) of each entry of a playbook's `schedules:` list."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValidationFailed("schedules: expected a list of schedules (each with 'cron' or 'every')")
    found: list[tuple[str, bool, ScheduleSpec]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValidationFailed(f"schedules[{index}]: expected a mapping with 'cron' or 'every'")
        fields = {k: v for k, v in item.items() if k not in ("name", "enabled")}
        try:
            spec = schedule_spec(fields)
        except ValidationFailed as exc:
            raise ValidationFailed(f"schedules[{index}]: {exc}") from exc
        name = str(item.get("name") or index + 1)
        if any(name == other for other, _, _ in found):
            raise ValidationFailed(f"schedules[{index}]: the name {name!r} is used twice")
        found.append((name, item.get("enabled", True) is not False, spec))
    return found
