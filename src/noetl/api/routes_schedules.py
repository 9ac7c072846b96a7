"""`/api/schedules`: cron and interval schedules (`noetl.triggers`).

    POST   /api/schedules                 create           GET /api/schedules           list
    GET    /api/schedules/{id}            one              PATCH /api/schedules/{id}    change
    DELETE /api/schedules/{id}            delete           POST /api/schedules/{id}/trigger  run now
    GET    /api/schedules/{id}/ticks      latest ticks (when, which execution, started/skipped/failed)

Every id in an answer is a string; times are ISO 8601 UTC (`...Z`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from noetl.api.common import iso, parse_id
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import ScheduleRecord, TickRecord
from noetl.triggers.schedules import Schedules
from noetl.triggers.specs import schedule_spec

Interval = Annotated[
    str | float | None, Field(description="An interval: seconds, or '30s', '5m', '1h30m', '1d'")
]


class ScheduleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(None, description="5 fields, or 6 with seconds first, or @daily etc.")
    every: Interval = None
    timezone: str | None = Field(None, description="IANA time zone of the cron expression (default UTC)")
    payload: dict[str, Any] | None = Field(None, description="The workload of each run")
    catchup: Literal["skip", "one", "all"] | None = Field(
        None, description="Ticks missed while no server ran"
    )
    max_active: int | None = Field(None, ge=1, description="Runs of this schedule allowed at once")
    overlap: Literal["skip", "queue"] | None = Field(None, description="A tick at max_active: skip or queue")
    execution_pool: str | None = None
    enabled: bool | None = None


class ScheduleCreate(ScheduleFields):
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, description="Catalog path of the playbook (its latest version runs)")


class ScheduleUpdate(ScheduleFields):
    name: str | None = Field(None, min_length=1, max_length=200)
    path: str | None = Field(None, min_length=1)


class Tick(BaseModel):
    schedule_id: str
    tick_at: str
    execution_id: str | None
    status: str
    error: str | None = None


class Schedule(BaseModel):
    schedule_id: str
    name: str
    path: str
    cron: str | None
    every: float | None
    timezone: str
    payload: dict[str, Any]
    catchup: str
    max_active: int | None
    overlap: str
    execution_pool: str | None
    enabled: bool
    source: str
    next_run_at: str | None
    last_tick: Tick | None
    created_at: str | None
    updated_at: str | None


class ScheduleList(BaseModel):
    items: list[Schedule]


class TickList(BaseModel):
    items: list[Tick]


class Deleted(BaseModel):
    schedule_id: str
    deleted: bool


def tick_json(tick: TickRecord) -> Tick:
    return Tick(
        schedule_id=str(tick.schedule_id),
        tick_at=iso(tick.tick_at) or "",
        execution_id=str(tick.execution_id) if tick.execution_id is not None else None,
        status=tick.status,
        error=tick.error,
    )


def schedule_json(record: ScheduleRecord, last: TickRecord | None) -> Schedule:
    spec = schedule_spec(record.spec)
    return Schedule(
        schedule_id=str(record.schedule_id),
        name=record.name,
        path=record.path,
        cron=spec.timing.cron,
        every=spec.timing.every,
        timezone=spec.timing.timezone,
        payload=spec.payload,
        catchup=spec.catchup,
        max_active=spec.max_active,
        overlap=spec.overlap,
        execution_pool=spec.execution_pool,
        enabled=record.enabled,
        source=record.source,
        next_run_at=iso(record.next_run_at) if record.enabled else None,
        last_tick=tick_json(last) if last is not None else None,
        created_at=iso(record.created_at),
        updated_at=iso(record.updated_at),
    )


def router(control: ControlPlane, schedules: Schedules | None = None) -> APIRouter:
    api = APIRouter(prefix="/api/schedules", tags=["schedules"])
    service = schedules or Schedules(control)
    store = control.store

    def view(record: ScheduleRecord) -> Schedule:
        last = store.ticks(record.schedule_id, limit=1)
        return schedule_json(record, last[0] if last else None)

    @api.post("", response_model=Schedule)
    def create(body: ScheduleCreate) -> Schedule:
        """Create a schedule of a catalog playbook."""
        fields = body.model_dump(exclude={"name", "path", "enabled"}, exclude_none=True)
        spec = schedule_spec(fields)
        return view(service.create(body.name, body.path, spec, enabled=body.enabled is not False))

    @api.get("", response_model=ScheduleList)
    def list_schedules() -> ScheduleList:
        """Every schedule, by name, with its next run and its latest tick."""
        return ScheduleList(items=[view(record) for record in store.schedules()])

    @api.get("/{schedule_id}", response_model=Schedule)
    def get(schedule_id: str) -> Schedule:
        return view(service.get(parse_id(schedule_id, "schedule_id")))

    @api.patch("/{schedule_id}", response_model=Schedule)
    def update(schedule_id: str, body: ScheduleUpdate) -> Schedule:
        """Change fields (`null` clears max_active, execution_pool); `enabled` pauses or resumes."""
        return view(service.update(parse_id(schedule_id, "schedule_id"), body.model_dump(exclude_unset=True)))

    @api.delete("/{schedule_id}", response_model=Deleted)
    def delete(schedule_id: str) -> Deleted:
        service.delete(parse_id(schedule_id, "schedule_id"))
        return Deleted(schedule_id=schedule_id, deleted=True)

    @api.post("/{schedule_id}/trigger", response_model=Tick)
    def trigger(schedule_id: str) -> Tick:
        """Run the schedule now; the answer names the execution."""
        return tick_json(service.trigger(parse_id(schedule_id, "schedule_id")))

    @api.get("/{schedule_id}/ticks", response_model=TickList)
    def ticks(schedule_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> TickList:
        """The latest ticks, newest first."""
        record = service.get(parse_id(schedule_id, "schedule_id"))
        return TickList(items=[tick_json(t) for t in store.ticks(record.schedule_id, limit=limit)])

    return api
