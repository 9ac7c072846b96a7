"""Request and response bodies of the control-plane API, as pydantic models: FastAPI validates
requests with them and documents both in the OpenAPI document; the hot routes (`noetl.api.hot`)
validate with the same models (`parse`).

Requests accept what upstream clients send (ids as numbers or strings, `payload`/`workload`,
`event_type`/`name`, `kind`/`component_type`); unknown fields are ignored. Answers carry every id
as a string. Shapes follow docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.config import JsonDict

from noetl.api.types import (
    Id,
    IdText,
    Int,
    JsonObject,
    JsonValue,
    Name,
    OptionalId,
    OptionalIdText,
    Text,
    error,
)
from noetl.errors import ValidationFailed

MAX_BATCH_EVENTS = 10_000
MAX_CLAIM = 1000
MAX_EXECUTE_BATCH = 1000
RUNTIME_KINDS = ("worker_pool", "server_api", "broker")
RuntimeKind = Literal["worker_pool", "server_api", "broker"]
Version = Annotated[Int, Field(ge=1, le=2**31 - 1)]


class Request(BaseModel):
    """A request body: unknown fields are ignored (clients of other versions send more); values
    are taken as JSON gives them (no "5" for 5, no 1 for true)."""

    model_config = ConfigDict(extra="ignore", strict=True)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """`data` as `model`, or ValidationFailed with the message the API's 422 answers carry."""
    from noetl.api.errors import describe

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc.errors())) from exc


# ------------------------------------------------------------------------------ health


class Health(Answer):
    status: Literal["ok"]


class ApiHealth(Answer):
    status: Literal["ok", "unhealthy"]
    database: Literal["connected", "disconnected"]
    nats: str
    uptime_seconds: float
    version: str
    error: str | None = None


# ------------------------------------------------------------------------------ catalog


class RegisterBody(Request):
    content: Name = Field(description="YAML text, or base64 of it.")
    resource_type: Text | None = Field(default=None, description="Kind when the YAML names none (Playbook).")


class Registered(Answer):
    status: Literal["success"]
    message: str
    path: str
    version: int
    catalog_id: IdText
    kind: str


class CatalogListBody(Request):
    resource_type: Text | None = Field(default=None, description="Only entries of this kind (lower-case).")
    path: Text | None = Field(default=None, description="Only versions of this path.")


class CatalogEntryOut(Answer):
    catalog_id: IdText
    path: str
    kind: str
    version: int
    content: str
    created_at: str | None
    meta: dict[str, Any] | None


class CatalogEntries(Answer):
    entries: list[CatalogEntryOut]


class ResourceBody(Request):
    catalog_id: OptionalId = None
    path: Text | None = None
    version: Version | Text | None = Field(
        default=None, description="'latest' (default) or a version number."
    )


# ------------------------------------------------------------------------------ execute


class Dedup(Request):
    key: Text
    window_secs: Int = Field(default=300, ge=0, le=10**9)


class ExecuteBody(Request):
    path: Text | None = Field(default=None, description="Catalog path (its latest version, or `version`).")
    catalog_id: OptionalId = None
    version: Version | None = None
    payload: JsonObject | None = Field(default=None, description="Workload overrides.")
    workload: JsonObject | None = Field(default=None, description="Alias of payload.")
    parent_execution_id: OptionalId = None
    execution_pool: Text | None = None
    trace: JsonObject | None = None
    metadata: JsonObject | None = None
    dedup: Dedup | None = None


class Started(Answer):
    execution_id: IdText
    status: Literal["started", "duplicate"]
    commands_generated: int


class ExecuteBatchBody(Request):
    executions: list[ExecuteBody] = Field(
        json_schema_extra={"minItems": 1, "maxItems": MAX_EXECUTE_BATCH},
        description=f"1 to {MAX_EXECUTE_BATCH} execute requests; each starts or fails on its own.",
    )


class BatchItem(Answer):
    index: int
    status: Literal["started", "duplicate", "error"]
    execution_id: IdText | None = None
    commands_generated: int
    error: str | None = None


class BatchStarted(Answer):
    count: int
    started: int
    duplicates: int
    failed: int
    results: list[BatchItem]


# ------------------------------------------------------------------------------ events


_NAMED: JsonDict = {"type": "string", "minLength": 1}


class EventItem(Request):
    """One worker event (upstream `POST /api/events` shape): `event_type` or its alias `name`."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["event_type"], "properties": {"event_type": _NAMED}},
                {"required": ["name"], "properties": {"name": _NAMED}},
            ]
        }
    )

    execution_id: OptionalId = Field(default=None, description="Required unless the batch names it.")
    event_type: Text | None = None
    name: Text | None = Field(default=None, description="Alias of event_type.")
    step: Text | None = None
    payload: JsonValue = Field(default=None, description="Stored as result.context when an object.")
    context: JsonValue = Field(default=None, description="Alias of payload.")
    meta: JsonObject | None = None
    worker_id: Text | None = None
    event_id: OptionalId = Field(
        default=None, description="Client-minted id; the server mints one if absent."
    )
    status: Text | None = None
    created_at: Text | None = None
    parent_event_id: OptionalId = None
    node_type: Text | None = None
    actionable: bool | None = None
    informative: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> EventItem:
        if not (self.event_type or self.name):
            raise error("'event_type' (or 'name') is required")
        return self


class EventBody(EventItem):
    execution_id: Id


class EventBatch(Request):
    execution_id: OptionalId = None
    worker_id: Text | None = None
    events: list[EventItem] = Field(default_factory=list, json_schema_extra={"maxItems": MAX_BATCH_EVENTS})


class EventAck(Answer):
    status: Literal["ok"]
    event_id: IdText
    commands_generated: int


class EventBatchAck(Answer):
    status: Literal["ok"]
    event_ids: list[IdText]
    commands_generated: int
    rejected: list[str] | None = Field(default=None, description="Commands whose events were refused.")


class EventOut(Answer):
    event_id: IdText
    execution_id: IdText
    parent_event_id: OptionalIdText
    parent_execution_id: OptionalIdText
    catalog_id: OptionalIdText
    event_type: str
    node_id: str | None
    node_name: str | None
    node_type: str | None
    status: str | None
    context: dict[str, Any] | None
    meta: dict[str, Any] | None
    result: dict[str, Any] | None
    worker_id: str | None
    created_at: str


class Events(Answer):
    events: list[EventOut]


# ------------------------------------------------------------------------------ commands


class PendingCommand(Answer):
    execution_id: IdText
    event_id: IdText
    command_id: str | None
    step: str | None
    server_url: str


class PendingCommands(Answer):
    commands: list[PendingCommand]


class CommandOut(Answer):
    event_id: IdText
    execution_id: IdText
    node_id: str | None
    node_name: str | None
    action: str | None
    context: dict[str, Any]
    meta: dict[str, Any]
    status: Literal["ok"] | None = Field(default=None, description="'ok' in a claim's answer.")


class Claimed(Answer):
    commands: list[CommandOut]


class ClaimBody(Request):
    worker_id: Name


class ClaimManyBody(Request):
    worker_id: Name
    limit: Int = Field(default=10, ge=1, le=MAX_CLAIM)
    pools: list[Text] | None = None
    event_ids: list[Id] | None = Field(default=None, json_schema_extra={"maxItems": MAX_CLAIM})


# ------------------------------------------------------------------------------ executions


class ExecutionOut(Answer):
    execution_id: IdText
    catalog_id: OptionalIdText
    path: str | None
    status: str
    started_at: str | None
    completed_at: str | None
    parent_execution_id: OptionalIdText


class ExecutionDetail(ExecutionOut):
    error: str | None
    workload: Any
    events: list[EventOut]


class Progress(Answer):
    total_steps: int
    completed_steps: int
    running_steps: int
    failed_steps: int


class StepOutcome(Answer):
    status: str
    result: Any


class ExecutionStatus(Answer):
    execution_id: IdText
    status: str
    completed: bool
    failed: bool
    current_step: str | None
    error: str | None
    progress: Progress
    is_cancelled: bool
    result: Any = Field(default=None, description="The run's result once it has ended.")
    steps: dict[str, StepOutcome] | None = Field(
        default=None, description="Each step's outcome once it has ended."
    )


class CancelBody(Request):
    reason: Text | None = None
    cascade: bool = True


class Cancelled(Answer):
    execution_id: IdText
    status: Literal["cancelled"]
    message: str


# ------------------------------------------------------------------------------ workers


class RuntimeBody(Request):
    name: Name
    kind: RuntimeKind | None = None
    component_type: RuntimeKind | None = Field(default=None, description="Alias of kind.")

    @property
    def runtime_kind(self) -> str:
        return self.kind or self.component_type or "worker_pool"


class RegisterRuntime(RuntimeBody):
    uri: Text | None = None
    status: Text | None = None
    labels: JsonObject | None = None
    capabilities: JsonValue = None
    capacity: JsonValue = None
    runtime: JsonValue = Field(default=None, description="An object (upstream) or a plain string.")
    hostname: Text | None = None


class Heartbeat(RuntimeBody):
    command_ids: list[Text] | None = Field(default=None, description="The commands the worker is running.")


class RuntimeOut(Answer):
    runtime_id: OptionalIdText
    node_id: OptionalIdText = Field(description="The worker's snowflake node.")
    name: str
    kind: str
    component_type: str
    uri: str | None
    status: str
    labels: dict[str, Any] | None
    capabilities: Any
    capacity: Any
    runtime: Any
    hostname: str | None
    heartbeat: str | None
    created_at: str | None
    updated_at: str | None


class HeartbeatAck(Answer):
    status: Literal["ok"]
    message: str
    stop: list[str] | None = Field(default=None, description="Commands to stop (their run ended).")


class Message(Answer):
    status: Literal["ok"]
    message: str


# ------------------------------------------------------------------------------ credentials


class CredentialBody(Request):
    name: Name
    type: Name
    data: JsonObject
    description: Text | None = None
    tags: list[Text] | None = None


class CredentialOut(Answer):
    id: str
    name: str
    type: str
    description: str | None
    tags: list[str]
    created_at: str | None
    updated_at: str | None
    data: dict[str, Any] | None = Field(
        default=None, description="Only for a worker holding a command using it."
    )


class Credentials(Answer):
    items: list[CredentialOut]
    filter: dict[str, str] | None = None


class Deleted(Answer):
    message: str
    id: str


# ------------------------------------------------------------------------------ tokens


class TokenBody(Request):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,100}$")] = Field(
        description="1-100 letters, digits, '-', '_', '.' or '@'."
    )
    scope: Literal["admin", "worker", "read"]


class TokenOut(Answer):
    name: str
    scope: str
    created_at: str | None
    revoked_at: str | None
    active: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once.")


class TokenRevoked(Answer):
    status: Literal["ok"]
    name: str
    message: str
