"""`MemoryStore`: the Store port on dicts and lists, for unit tests and throwaway runs.

Events are kept as encoded rows (the same text the SQLite adapter writes), so a caller gets
fresh objects back and sees the same JSON and timestamp round trip as with a database.
Credentials are kept decrypted: nothing here outlives the process.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime

from noetl.engine.events import Event, utcnow
from noetl.errors import Conflict
from noetl.ids import default_ids
from noetl.store import projection
from noetl.store.codec import EventRow, event_row, row_event, utc_ms
from noetl.store.ports import (
    RUNNING,
    CatalogEntry,
    ExecutionSummary,
    StoredCredential,
    TokenRecord,
    WorkerRecord,
)
from noetl.store.solo import SoloCoordination
from noetl.store.trigger_memory import MemoryTriggers, TriggerData


class MemoryStore(MemoryTriggers, SoloCoordination):
    def __init__(self, url: str = "memory://") -> None:
        super().__init__()
        self.url = url
        self._lock = threading.RLock()
        self._events: dict[int, EventRow] = {}
        self._by_execution: dict[int, list[int]] = {}  # sorted event ids
        self._executions: dict[int, ExecutionSummary] = {}
        self._catalog: dict[int, CatalogEntry] = {}
        self._credentials: dict[str, StoredCredential] = {}
        self._tokens: list[TokenRecord] = []
        self._workers: dict[tuple[str, str], WorkerRecord] = {}
        self._trigger_data = TriggerData()

    def close(self) -> None:
        """Nothing to release; the data stays readable until the object is dropped."""

    # -- event log -------------------------------------------------------------------------

    def write_behind(self, schedule: Callable[[Callable[[], None]], None]) -> AbstractContextManager[None]:
        """Appends are written at once (nothing is deferred)."""
        return nullcontext()

    def append(self, events: Sequence[Event], *, strict: bool = False) -> None:
        rows = [event_row(event) for event in events]  # encode first: a bad event stores nothing
        with self._lock:
            if strict:
                taken = [e.event_id for e in events if e.event_id in self._events]
                if taken:
                    raise Conflict(f"memory store: event id {taken[0]} is already stored")
            for event, row in zip(events, rows, strict=True):
                if event.event_id in self._events:
                    continue
                self._events[event.event_id] = row
                ids = self._by_execution.setdefault(event.execution_id, [])
                if not ids or ids[-1] < event.event_id:
                    ids.append(event.event_id)
                else:
                    bisect.insort(ids, event.event_id)
                self._project(event)

    def _project(self, event: Event) -> None:
        change = projection.change(event)
        current = self._executions.get(event.execution_id)
        if isinstance(change, projection.Start):
            if current is None:
                self._executions[change.execution_id] = ExecutionSummary(
                    execution_id=change.execution_id,
                    path=change.path,
                    catalog_id=change.catalog_id,
                    status=RUNNING,
                    started_at=change.started_at,
                    parent_execution_id=change.parent_execution_id,
                )
            else:
                self._executions[change.execution_id] = dataclasses.replace(
                    current,
                    path=change.path,
                    catalog_id=change.catalog_id,
                    parent_execution_id=change.parent_execution_id,
                    started_at=change.started_at,
                )
        elif isinstance(change, projection.Finish):
            if current is None:
                current = ExecutionSummary(
                    execution_id=change.execution_id,
                    path=None,
                    catalog_id=None,
                    status=change.status,
                    started_at=change.completed_at,
                )
            self._executions[change.execution_id] = dataclasses.replace(
                current, status=change.status, completed_at=change.completed_at, error=change.error
            )

    def read(self, execution_id: int, *, after_event_id: int | None = None) -> list[Event]:
        with self._lock:
            ids = self._by_execution.get(execution_id, [])
            start = 0 if after_event_id is None else bisect.bisect_right(ids, after_event_id)
            rows = [self._events[event_id] for event_id in ids[start:]]
        return [row_event(row) for row in rows]

    def known_event_ids(self, event_ids: Sequence[int]) -> set[int]:
        with self._lock:
            return {event_id for event_id in event_ids if event_id in self._events}

    def get_event(self, event_id: int) -> Event | None:
        with self._lock:
            row = self._events.get(event_id)
        return None if row is None else row_event(row)

    def execution(self, execution_id: int) -> ExecutionSummary | None:
        with self._lock:
            return self._executions.get(execution_id)

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
        with self._lock:
            found = [
                summary
                for summary in self._executions.values()
                if (status is None or summary.status == status)
                and (parent_execution_id is None or summary.parent_execution_id == parent_execution_id)
                and (path is None or summary.path == path)
                and (started_after is None or summary.started_at >= started_after)
                and (started_before is None or summary.started_at < started_before)
            ]
        found.sort(key=lambda s: (s.started_at, s.execution_id), reverse=True)
        return found[offset : offset + limit]

    # -- catalog ---------------------------------------------------------------------------

    def register(self, content: str, *, path: str, kind: str = "playbook") -> CatalogEntry:
        with self._lock:
            version = 1 + max((e.version for e in self._catalog.values() if e.path == path), default=0)
            entry = CatalogEntry(
                catalog_id=default_ids.next(),
                path=path,
                version=version,
                kind=kind.lower(),
                content=content,
                created_at=utc_ms(utcnow()),
            )
            self._catalog[entry.catalog_id] = entry
        return copy.deepcopy(entry)

    def resource(self, path: str, version: int | None = None) -> CatalogEntry | None:
        with self._lock:
            versions = [e for e in self._catalog.values() if e.path == path]
        if version is not None:
            versions = [e for e in versions if e.version == version]
        found = max(versions, key=lambda e: e.version, default=None)
        return copy.deepcopy(found)

    def resource_by_id(self, catalog_id: int) -> CatalogEntry | None:
        with self._lock:
            return copy.deepcopy(self._catalog.get(catalog_id))

    def entries(self, kind: str | None = None) -> list[CatalogEntry]:
        with self._lock:
            found = [e for e in self._catalog.values() if kind is None or e.kind == kind.lower()]
        found.sort(key=lambda e: (e.created_at, e.catalog_id), reverse=True)
        return copy.deepcopy(found)

    # -- credentials -----------------------------------------------------------------------

    def put_credential(self, credential: StoredCredential) -> None:
        now = utc_ms(utcnow())
        with self._lock:
            previous = self._credentials.get(credential.name)
            if previous is not None and previous.created_at is not None:
                created = previous.created_at
            else:
                created = utc_ms(credential.created_at) if credential.created_at else now
            self._credentials[credential.name] = dataclasses.replace(
                credential,
                data=copy.deepcopy(credential.data),
                tags=tuple(credential.tags),
                created_at=created,
                updated_at=now,
            )

    def get_credential(self, name: str) -> StoredCredential | None:
        with self._lock:
            return copy.deepcopy(self._credentials.get(name))

    def list_credentials(self) -> list[StoredCredential]:
        with self._lock:
            return [copy.deepcopy(self._credentials[name]) for name in sorted(self._credentials)]

    def delete_credential(self, name: str) -> bool:
        with self._lock:
            return self._credentials.pop(name, None) is not None

    # -- API tokens ------------------------------------------------------------------------

    def put_token(self, record: TokenRecord) -> None:
        with self._lock:
            if any(t.name == record.name and t.revoked_at is None for t in self._tokens):
                raise Conflict(f"a token named {record.name!r} exists already")
            self._tokens.append(replace(record, created_at=utc_ms(record.created_at)))

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return next((t for t in self._tokens if t.token_hash == token_hash), None)

    def tokens(self) -> list[TokenRecord]:
        with self._lock:
            return list(self._tokens)

    def revoke_token(self, name: str) -> bool:
        with self._lock:
            for index, token in enumerate(self._tokens):
                if token.name == name and token.revoked_at is None:
                    self._tokens[index] = replace(token, revoked_at=utc_ms(utcnow()))
                    return True
        return False

    # -- worker registry -------------------------------------------------------------------

    def upsert_worker(self, record: WorkerRecord) -> WorkerRecord:
        with self._lock:
            old = self._workers.get((record.kind, record.name))
            stored = replace(
                record,
                heartbeat=utc_ms(record.heartbeat),
                created_at=old.created_at if old else utc_ms(utcnow()),
            )
            self._workers[(record.kind, record.name)] = stored
            return stored

    def touch_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._lock:
            old = self._workers.get((kind, name))
            if old is None:
                return False
            self._workers[(kind, name)] = replace(old, heartbeat=utc_ms(utcnow()))
            return True

    def remove_worker(self, name: str, kind: str = "worker_pool") -> bool:
        with self._lock:
            return self._workers.pop((kind, name), None) is not None

    def workers(self, kind: str | None = None) -> list[WorkerRecord]:
        with self._lock:
            return sorted(
                (w for w in self._workers.values() if kind is None or w.kind == kind), key=lambda w: w.name
            )
