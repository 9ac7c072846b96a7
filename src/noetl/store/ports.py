"""Storage ports. Every adapter (memory, sqlite, postgres) implements `Store` and passes the
shared contract suite in `tests/contract/`.

The ports are synchronous: the local runtime calls them from its event loop (SQLite calls are
short) and the server calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from noetl.engine.events import Event
from noetl.status import CANCELLED as CANCELLED  # re-exported: adapters and tests import them here
from noetl.status import COMPLETED as COMPLETED
from noetl.status import FAILED as FAILED
from noetl.status import RUNNING as RUNNING
from noetl.store.trigger_ports import TriggerStore


@dataclass(frozen=True)
class CatalogEntry:
    catalog_id: int
    path: str
    version: int
    kind: str  # lower-case, e.g. "playbook"
    content: str  # the YAML text
    created_at: datetime
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionSummary:
    execution_id: int
    path: str | None
    catalog_id: int | None
    status: str  # RUNNING | COMPLETED | FAILED | CANCELLED
    started_at: datetime
    completed_at: datetime | None = None
    parent_execution_id: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class StoredCredential:
    name: str
    type: str
    data: dict[str, Any]  # decrypted
    description: str | None = None
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class WorkerRecord:
    """A registered worker (or server) and when it was last heard from."""

    name: str
    kind: str  # worker_pool | server_api | broker
    status: str
    heartbeat: datetime
    info: dict[str, Any] = field(default_factory=dict)  # labels, capacity, runtime, hostname, uri
    created_at: datetime | None = None


@dataclass(frozen=True)
class TokenRecord:
    """An API token: only its hash is stored."""

    name: str
    scope: str  # admin | worker | read
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None = None


class EventLog(Protocol):
    def append(self, events: Sequence[Event], *, strict: bool = False) -> None:
        """Write events atomically and durably. An event whose `event_id` is already stored is
        ignored (ingestion is idempotent); with `strict`, it is a Conflict and nothing is written
        (the orchestrator appends only events it knows are new, so a stored id is someone
        else's)."""
        ...

    def write_behind(self, schedule: Callable[[Callable[[], None]], None]) -> AbstractContextManager[None]:
        """Within the block, `append` may keep its events and return before they are written,
        having `schedule(callback)` write them soon (a single-process runtime's option: its event
        loop runs the callback). Every other call writes them first, so reads see them; a failed
        write fails every later call. Stores that do not defer write at once."""
        ...

    def read(self, execution_id: int, *, after_event_id: int | None = None) -> list[Event]:
        """The events of one execution, oldest first (by event_id)."""
        ...

    def get_event(self, event_id: int) -> Event | None: ...

    def known_event_ids(self, event_ids: Sequence[int]) -> set[int]:
        """Which of these event ids are already stored (one query for a whole batch)."""
        ...

    def execution(self, execution_id: int) -> ExecutionSummary | None: ...

    def executions(
        self,
        *,
        status: str | None = None,
        parent_execution_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
        path: str | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
    ) -> list[ExecutionSummary]:
        """Newest first (by `started_at`, then `execution_id`). `path` keeps one playbook's runs;
        `started_after` / `started_before` bound `started_at` (inclusive / exclusive)."""
        ...


class Catalog(Protocol):
    def register(self, content: str, *, path: str, kind: str = "playbook") -> CatalogEntry:
        """Store a new version of `path` (versions count up from 1 per path)."""
        ...

    def resource(self, path: str, version: int | None = None) -> CatalogEntry | None:
        """A version of `path` (the latest when `version` is None)."""
        ...

    def resource_by_id(self, catalog_id: int) -> CatalogEntry | None: ...

    def entries(self, kind: str | None = None) -> list[CatalogEntry]:
        """All versions, newest first."""
        ...


class CredentialStore(Protocol):
    def put_credential(self, credential: StoredCredential) -> None:
        """Insert or replace by name; data is encrypted at rest by the adapter."""
        ...

    def get_credential(self, name: str) -> StoredCredential | None: ...

    def list_credentials(self) -> list[StoredCredential]: ...

    def delete_credential(self, name: str) -> bool: ...


class TokenStore(Protocol):
    def put_token(self, record: TokenRecord) -> None:
        """Store a new token; Conflict when its name is taken by a token not revoked."""
        ...

    def token_by_hash(self, token_hash: str) -> TokenRecord | None: ...

    def tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones too, oldest first."""
        ...

    def revoke_token(self, name: str) -> bool:
        """Revoke the live token called `name`; False when there is none."""
        ...


class WorkerRegistry(Protocol):
    """Who is alive: workers register and heartbeat here. Shared by every server on the store, so
    a claim's lease (the claiming worker's liveness) is the same wherever it is checked."""

    def upsert_worker(self, record: WorkerRecord) -> WorkerRecord: ...

    def touch_worker(self, name: str, kind: str = "worker_pool") -> bool:
        """Record a heartbeat now; False when the worker is not registered."""
        ...

    def remove_worker(self, name: str, kind: str = "worker_pool") -> bool: ...

    def workers(self, kind: str | None = None) -> list[WorkerRecord]: ...


class Coordination(Protocol):
    """What several server processes sharing one store need to agree on. A store that one
    process owns (memory, SQLite) implements it trivially: a no-op lock, in-process dedup,
    always the leader, never stale."""

    @property
    def shared(self) -> bool:
        """Whether other processes may write to this store (then engines are checked for
        staleness and pending commands against the log)."""
        ...

    def execution_lock(self, execution_id: int) -> AbstractContextManager[None]:
        """Serialise orchestration of one execution across processes (held while its events are
        decided and written)."""
        ...

    def claim_dedup(self, scope: int, key: str, window_secs: int, execution_id: int) -> int | None:
        """Race-safe execute dedup: the first claim of (scope, key) inside the window wins and
        gets None; later claims get the winner's execution id."""
        ...

    def try_leadership(self, role: str) -> bool:
        """Whether this process holds `role` (e.g. reaping claims of departed servers) among all
        processes on the store; a role passes on only when its holder exits."""
        ...

    def is_stale(self, execution_id: int) -> bool:
        """Whether another process wrote to the execution since this process last wrote or read
        it (its cached state must be rebuilt from the log)."""
        ...

    def unseen(self, execution_id: int) -> list[Event] | None:
        """The events other processes wrote to the execution since this process last wrote or
        read it, in write order (cached state folds them to catch up); the execution is current
        afterwards. None when this process has not seen the execution (rebuild from the log)."""
        ...

    def mark_current(self, execution_id: int) -> None:
        """The execution's log was just read in full: cached state built from it is current."""
        ...

    def lease_node(self, owner: str, ttl_seconds: float) -> int:
        """A snowflake node number (0..1023) for `owner`, unique among the live leases on the
        store; asking again renews the owner's lease. StoreError when all are taken."""
        ...

    def release_node(self, owner: str) -> None: ...


class Store(
    EventLog, Catalog, CredentialStore, TokenStore, WorkerRegistry, Coordination, TriggerStore, Protocol
):
    url: str

    def close(self) -> None: ...
