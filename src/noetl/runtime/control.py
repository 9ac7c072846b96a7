"""The control plane: registers playbooks, starts executions, ingests worker events, hands out
commands and reports status. The HTTP API (`noetl.api`) is a thin layer over this class.

Each execution's engine is kept in memory and rebuilt from the event log when missing (after a
restart, or when another server process wrote events). Orchestration of one execution is
serialised by a per-execution lock (plus the store's cross-process lock where it has one).
Effects on *other* executions (starting a child, reporting a child's end to its parent,
cancelling children) are queued and run after the lock is released, so locks never nest.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from noetl.bus.ports import DIRECT_RUN_WINDOW, MAX_INLINE_COMMAND_BYTES
from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.events import Event, utcnow
from noetl.engine.machine import Engine
from noetl.errors import Conflict, NoetlError, NotFound, PlaybookError, ValidationFailed
from noetl.ids import Snowflake, default_ids
from noetl.secrets import masked
from noetl.store.ports import Store, WorkerRecord
from noetl.worker.executor import Command, Executor, child_request

log = logging.getLogger(__name__)

DEFAULT_DEDUP_WINDOW_SECS = 300
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_REPUBLISH_SECONDS = 10.0
MAX_BATCH_ITEMS = 1000
MAX_PENDING_CHECKS = 5  # rounds of checking pending candidates against the log per poll
# A command notified with its body is left to the bus this long before polling workers are
# offered it: a worker may be running it from its notification (see noetl.bus.ports) without a
# claim yet. Bodies are sent only to pools whose live workers all listen on the bus.
BUS_HOLD_SECONDS = DIRECT_RUN_WINDOW + 3.0
WORKER_VIEW_SECONDS = 1.0  # how long the registry's view of the pools' workers is reused
# Ended executions whose engines stay in memory (status queries, late reports); older ones are
# rebuilt from the log when asked for, so a long-lived server does not grow without bound.
MAX_ENDED_ENGINES = 1000
CONTROL_WORKER = "control-plane"
_ITERATOR_KEYS = ("iterator_index", "iterator_count", "iterator_item")
_COMMAND_EVENTS = frozenset(
    {
        ev.COMMAND_STARTED,
        ev.CALL_DONE,
        ev.CALL_ERROR,
        ev.COMMAND_COMPLETED,
        ev.COMMAND_FAILED,
        ev.COMMAND_HEARTBEAT,
    }
)


@dataclass
class _Lease:
    execution_id: int
    worker_id: str
    deadline: float  # time.monotonic()


@dataclass
class DedupSpec:
    key: str
    window_secs: int = DEFAULT_DEDUP_WINDOW_SECS


@dataclass
class ExecuteRequest:
    path: str | None = None
    catalog_id: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    parent_execution_id: int | None = None
    execution_pool: str | None = None
    trace: dict[str, Any] | None = None
    dedup: DedupSpec | None = None
    # Iterator metadata of a nested run started from a loop (seed: recorded on the child's
    # playbook_started meta and on every child event).
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, body: Any) -> ExecuteRequest:
        if not isinstance(body, Mapping):
            raise ValidationFailed("the request body must be a JSON object")
        payload = body.get("payload", body.get("workload")) or {}
        if not isinstance(payload, Mapping):
            raise ValidationFailed("'payload' must be a JSON object")
        dedup_raw = body.get("dedup")
        dedup = None
        if dedup_raw is not None:
            if not isinstance(dedup_raw, Mapping) or not isinstance(dedup_raw.get("key"), str):
                raise ValidationFailed("'dedup' must be an object with a string 'key'")
            window = dedup_raw.get("window_secs", DEFAULT_DEDUP_WINDOW_SECS)
            if not isinstance(window, int) or isinstance(window, bool) or window < 0:
                raise ValidationFailed("'dedup.window_secs' must be a non-negative integer")
            dedup = DedupSpec(dedup_raw["key"], window)
        trace = body.get("trace")
        if trace is not None and not isinstance(trace, Mapping):
            raise ValidationFailed("'trace' must be an object")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValidationFailed("'metadata' must be an object")
        request = cls(
            metadata=dict(metadata) if metadata else None,
            path=_opt_str(body.get("path")),
            catalog_id=_opt_int(body.get("catalog_id"), "catalog_id"),
            payload=dict(payload),
            parent_execution_id=_opt_int(body.get("parent_execution_id"), "parent_execution_id"),
            execution_pool=_opt_str(body.get("execution_pool")),
            trace=dict(trace) if trace else None,
            dedup=dedup,
        )
        request.validate()
        return request

    def validate(self) -> None:
        if not self.path and self.catalog_id is None:
            raise ValidationFailed("Either 'path' or 'catalog_id' must be provided")


@dataclass
class ExecuteOutcome:
    execution_id: int
    status: str  # started | duplicate
    commands_generated: int

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": str(self.execution_id),
            "status": self.status,
            "commands_generated": self.commands_generated,
        }


# Publishes one command notification. It may return a Future (a publish still under way): its
# failure then makes the command available to polling workers at once.
Notifier = Callable[[str, dict[str, Any]], "concurrent.futures.Future[None] | None"]


@dataclass
class IngestOutcome:
    event_ids: list[int]
    # Commands whose events were refused: another worker holds the command, its execution ended
    # or was cancelled, or its lease expired and it was issued again. Their worker stops them.
    rejected: list[str]


class ControlPlane:
    def __init__(
        self,
        store: Store,
        *,
        ids: Snowflake | None = None,
        notify: Notifier | None = None,
        server_url: str = "http://localhost:8082",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        republish_after: float = DEFAULT_REPUBLISH_SECONDS,
        max_attempts: int = 3,
    ) -> None:
        self.store = store
        self.ids = ids or default_ids
        self.notify = notify
        self.server_url = server_url
        self._engines: dict[int, Engine] = {}
        # The ids of every event in each cached engine's log, so a repeated post is recognised
        # without asking the store (dropped with the engine when another server wrote).
        self._seen: dict[int, set[int]] = {}
        self._ended: OrderedDict[int, None] = OrderedDict()  # ended executions, oldest first
        self._locks: dict[int, threading.RLock] = {}
        self._lock_depth: dict[int, int] = {}
        self._locks_guard = threading.Lock()
        self._playbooks: dict[int, Playbook] = {}
        self._pending: dict[str, dict[int, Event]] = {}  # pool -> command event_id -> command.issued
        self._pending_ids: dict[str, tuple[str, int]] = {}  # command_id -> (pool, its event_id)
        self._pending_guard = threading.Lock()
        self._published: dict[int, float] = {}  # command event_id -> when last notified
        self._held: dict[int, float] = {}  # command event_id -> when notified with its body
        self._bus_pools: tuple[float, frozenset[str]] = (-math.inf, frozenset())
        self._dedup: dict[tuple[int, str], tuple[int, float]] = {}
        self._dedup_guard = threading.Lock()
        self._listeners: list[Callable[[Event], None]] = []
        self.lease_seconds = lease_seconds
        self.republish_after = republish_after
        self.max_attempts = max_attempts
        self._leases: dict[str, _Lease] = {}  # command_id -> lease of the worker that claimed it
        self._leases_guard = threading.Lock()
        self._departed: set[str] = set()  # workers that deregistered: their leases end now
        self._reported: dict[str, set[str]] = {}  # worker -> the commands its last heartbeat listed
        # Notifications carry their command, for workers to run at once (noetl.bus.ports). Off
        # when this server also runs commands itself from `pending` (an in-process worker).
        self.direct_run = True

    # ------------------------------------------------------------------ catalog

    def register(self, content: str, resource_type: str = "Playbook") -> dict[str, Any]:
        import base64

        import yaml

        from noetl.dsl.yaml_lines import load_yaml

        text = content
        try:
            decoded = base64.b64decode("".join(content.split()), validate=True).decode("utf-8")
            if decoded.strip():
                text = decoded
        except (ValueError, UnicodeDecodeError):
            pass
        try:
            doc = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ValidationFailed(f"Invalid YAML: {exc}") from exc
        if not isinstance(doc, Mapping) or not isinstance(doc.get("metadata"), Mapping):
            raise ValidationFailed("The resource must have a 'metadata' section")
        metadata = doc["metadata"]
        path = metadata.get("path") or metadata.get("name")
        if not path:
            raise ValidationFailed("metadata.path or metadata.name is required")
        kind = str(doc.get("kind") or resource_type).lower()
        entry = self.store.register(text, path=str(path), kind=kind)
        return {
            "status": "success",
            "message": f"Resource '{entry.path}' version '{entry.version}' registered.",
            "path": entry.path,
            "version": entry.version,
            "catalog_id": str(entry.catalog_id),
            "kind": entry.kind,
        }

    # ------------------------------------------------------------------ execute

    def execute(self, request: ExecuteRequest) -> ExecuteOutcome:
        request.validate()
        execution_id = self.ids()
        entry = (
            self.store.resource_by_id(request.catalog_id)
            if request.catalog_id is not None
            else self.store.resource(str(request.path))
        )
        if entry is None:
            what = (
                f"Catalog entry not found: {request.catalog_id}"
                if request.catalog_id is not None
                else f"Playbook not found: {request.path}"
            )
            raise NotFound(what)
        playbook = self._playbook(entry.catalog_id, entry.content, entry.path, entry.version)
        if request.dedup is not None:  # after resolving: a 404/422 must not hold the key for the window
            existing = self._claim_dedup(request, execution_id)
            if existing is not None:
                return ExecuteOutcome(existing, "duplicate", 0)
        trace = request.trace
        stamp: dict[str, Any] = {}
        start_meta: dict[str, Any] = {"emitter": "control_plane"}
        if request.execution_pool:
            start_meta["execution_pool"] = request.execution_pool
        if request.parent_execution_id is not None and not trace:
            parent = self._engine_or_none(request.parent_execution_id)
            if parent is not None:
                trace = parent.state.meta.get("trace")  # children inherit the parent's trace
        if trace:
            start_meta["trace"] = trace
            stamp["trace"] = trace
        if request.metadata:
            iterator = {k: v for k, v in request.metadata.items() if k in _ITERATOR_KEYS}
            stamp.update(iterator)
            start_meta.update(request.metadata)
        if request.parent_execution_id is not None:
            stamp["parent_execution_id"] = str(request.parent_execution_id)
        commands = self._start(
            playbook,
            entry.catalog_id,
            execution_id,
            request.payload,
            request.parent_execution_id,
            stamp,
            start_meta,
        )
        return ExecuteOutcome(execution_id, "started", commands)

    def execute_batch(self, items: Any) -> dict[str, Any]:
        if not isinstance(items, list) or not items:
            raise ValidationFailed("execute batch requires a non-empty 'executions' array")
        if len(items) > MAX_BATCH_ITEMS:
            raise ValidationFailed(f"execute batch size {len(items)} exceeds the {MAX_BATCH_ITEMS} cap")
        results: list[dict[str, Any]] = []
        counts = {"started": 0, "duplicate": 0, "error": 0}
        for index, body in enumerate(items):
            try:
                outcome = self.execute(ExecuteRequest.from_json(body))
            except NoetlError as exc:
                counts["error"] += 1
                results.append(
                    {"index": index, "status": "error", "commands_generated": 0, "error": str(exc)}
                )
                continue
            counts[outcome.status] += 1
            results.append({"index": index, **outcome.to_json()})
        return {
            "count": len(items),
            "started": counts["started"],
            "duplicates": counts["duplicate"],
            "failed": counts["error"],
            "results": results,
        }

    def _claim_dedup(self, request: ExecuteRequest, execution_id: int) -> int | None:
        """Race-safe: the first request with a key inside the window wins; later ones get its id."""
        assert request.dedup is not None
        scope = request.parent_execution_id or 0
        key = (scope, request.dedup.key)
        now = utcnow().timestamp()
        claimer = getattr(self.store, "claim_dedup", None)
        if claimer is not None:
            existing: int | None = claimer(scope, request.dedup.key, request.dedup.window_secs, execution_id)
        else:
            with self._dedup_guard:
                seen = self._dedup.get(key)
                if seen is not None and now - seen[1] <= request.dedup.window_secs:
                    existing = seen[0]
                else:
                    self._dedup[key] = (execution_id, now)
                    existing = None
        if existing is not None and scope:
            self._audit_duplicate(scope, request.dedup.key, existing, execution_id)
        return existing

    def _audit_duplicate(self, scope: int, key: str, existing: int, suppressed: int) -> None:
        event = Event(
            event_id=self.ids(),
            execution_id=scope,
            event_type="subscription.message.deduplicated",
            node_id="ingress",
            node_name="ingress",
            node_type="subscription",
            status="DEDUPLICATED",
            result={
                "status": "DEDUPLICATED",
                "context": {
                    "dedup_key": key,
                    "original_execution_id": str(existing),
                    "suppressed_execution_id": str(suppressed),
                    "duplicate_suppressed": True,
                },
            },
            meta={"emitter": "control_plane"},
        )
        self.store.append([event])

    def _start(
        self,
        playbook: Playbook,
        catalog_id: int | None,
        execution_id: int,
        workload: Mapping[str, Any],
        parent_execution_id: int | None,
        stamp: Mapping[str, Any],
        start_meta: Mapping[str, Any],
    ) -> int:
        engine = Engine(
            playbook,
            execution_id,
            ids=self.ids,
            catalog_id=catalog_id,
            parent_execution_id=parent_execution_id,
            stamp=stamp,
            max_attempts=self.max_attempts,
        )
        followups: deque[Callable[[], None]] = deque()
        with self._lock(execution_id):
            self._engines[execution_id] = engine
            self._seen[execution_id] = set()
            out = engine.start(workload, meta={**start_meta, **stamp})
            self._commit(engine, out, followups)
        self._run(followups)
        return sum(1 for e in out if e.event_type == ev.COMMAND_ISSUED)

    # ------------------------------------------------------------------ events

    def ingest(self, events: list[Event]) -> list[int]:
        """Store worker events (idempotent on event_id) and let the engines react."""
        return self.ingest_report(events).event_ids

    def ingest_report(self, events: list[Event]) -> IngestOutcome:
        """`ingest`, also naming the commands whose events were refused. A `command.claimed`
        posted by a worker (one that ran a command straight from its bus notification) is the
        claim: it is checked like `claim` and, when refused, the rest of that command's events
        in the batch are refused with it."""
        ids: list[int] = []
        rejected: dict[str, None] = {}
        followups: deque[Callable[[], None]] = deque()
        by_execution: dict[int, list[Event]] = {}
        for event in events:
            by_execution.setdefault(event.execution_id, []).append(event)
            ids.append(event.event_id)
        unknown: list[int] = []
        for execution_id, batch in by_execution.items():
            with self._lock(execution_id):
                engine = self._engine_or_none(execution_id)
                if engine is None:
                    unknown.append(execution_id)  # the rest of a mixed batch is still taken
                    continue
                out: list[Event] = []
                known = self._seen.get(execution_id)
                if known is None:
                    seen = self.store.known_event_ids([e.event_id for e in batch])
                else:
                    seen = {e.event_id for e in batch if e.event_id in known}
                for event in batch:
                    if event.event_id in seen:
                        continue  # already ingested: posting twice changes nothing
                    command_id = event.command_id
                    if command_id is not None and command_id in rejected:
                        continue
                    if event.event_type == ev.COMMAND_CLAIMED and command_id is not None:
                        try:
                            if not self._claim_allowed(
                                engine, command_id, event.worker_id or "", posted=True
                            ):
                                continue  # this worker's claim is recorded already
                        except Conflict as exc:
                            log.info(
                                "refusing a claim: %s",
                                exc,
                                extra={"command_id": command_id, "worker_id": event.worker_id},
                            )
                            rejected[command_id] = None
                            continue
                    elif event.event_type in _COMMAND_EVENTS and command_id not in engine.state.commands:
                        # A superseded attempt (its lease expired) or an unknown command: its
                        # result is not accepted, so each command's result is recorded once.
                        log.info(
                            "ignoring %s for a command that is not open",
                            event.event_type,
                            extra={"command_id": command_id, "worker_id": event.worker_id},
                        )
                        if command_id is not None:
                            rejected[command_id] = None
                        continue
                    seen.add(event.event_id)
                    self._stamp(engine, event)
                    out.append(event)
                    out.extend(engine.react(event))
                self._commit(engine, out, followups)
        self._run(followups)
        if unknown and len(unknown) == len(by_execution):
            raise NotFound(f"execution {unknown[0]} not found")
        if unknown:
            log.warning("events for unknown executions ignored", extra={"execution_ids": unknown})
        return IngestOutcome(ids, list(rejected))

    def _stamp(self, engine: Engine, event: Event) -> None:
        if engine.state.parent_execution_id is not None and event.parent_execution_id is None:
            event.parent_execution_id = engine.state.parent_execution_id
        if event.catalog_id is None:
            event.catalog_id = engine.state.catalog_id
        if engine.stamp:
            event.meta = {**(event.meta or {}), **engine.stamp}

    def _commit(self, engine: Engine, events: list[Event], followups: deque[Callable[[], None]]) -> None:
        if not events:
            return
        stored = [masked(e) for e in events]
        self.store.append(stored)
        seen = self._seen.get(engine.execution_id)
        if seen is not None:
            seen.update(e.event_id for e in events)
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # an observer must not stop commands being published
                    log.exception("event listener failed", extra={"event_id": event.event_id})
            kind = event.event_type
            if kind == ev.COMMAND_ISSUED:
                if (event.meta or {}).get("tool_kind") == "playbook":
                    followups.append(functools.partial(self._start_child, event))
                else:
                    self._publish(event, engine=engine)
            elif kind == ev.COMMAND_CLAIMED:
                self._unpend(event)
                # Commands the control plane runs itself (nested playbooks) hold no lease.
                if event.command_id is not None and event.worker_id and event.worker_id != CONTROL_WORKER:
                    with self._leases_guard:
                        self._leases[event.command_id] = _Lease(
                            event.execution_id, event.worker_id, time.monotonic() + self.lease_seconds
                        )
            elif kind in (ev.COMMAND_COMPLETED, ev.COMMAND_FAILED, ev.COMMAND_EXPIRED):
                self._unpend(event)
                if event.command_id is not None:
                    with self._leases_guard:
                        self._leases.pop(event.command_id, None)
            elif kind in ev.TERMINAL_TYPES:
                self._drop_pending(event.execution_id)
                followups.append(functools.partial(self._retire, event.execution_id))
                meta = engine.state.meta
                if meta.get("parent_command_id") and engine.state.parent_execution_id is not None:
                    followups.append(functools.partial(self._report_child, engine))

    def _run(self, followups: deque[Callable[[], None]]) -> None:
        while followups:
            followups.popleft()()

    # ------------------------------------------------------------------ commands

    def _publish(self, event: Event, *, again: bool = False, engine: Engine | None = None) -> None:
        meta = event.meta or {}
        pool = str(meta.get("pool") or "shared")
        with self._pending_guard:
            self._pending.setdefault(pool, {})[event.event_id] = event
            self._pending_ids[str(meta.get("command_id"))] = (pool, event.event_id)
            self._published[event.event_id] = time.monotonic()
        self._notify(event, again=again, engine=engine)

    def _notify(self, event: Event, *, again: bool = False, engine: Engine | None = None) -> None:
        """Publish a command notification (without waiting for the bus). A first notification
        carries the command itself, so the worker it reaches can run it at once; one sent again
        (re-notified, or after a restart) is marked so, and its worker claims it first."""
        meta = event.meta or {}
        pool = str(meta.get("pool") or "shared")
        if self.notify is None:
            return
        payload: dict[str, Any] = {
            "execution_id": event.execution_id,
            "event_id": event.event_id,
            "command_id": meta.get("command_id"),
            "step": event.node_name,
            "server_url": self.server_url,
            "issued_at": time.time(),
        }
        if meta.get("trace"):
            payload["trace"] = meta["trace"]
        if again:
            payload["again"] = True
        elif self.direct_run and pool in self._bus_only_pools():
            body = _command_body(event)
            if _json_size(body) <= MAX_INLINE_COMMAND_BYTES:
                payload["command"] = body
                with self._pending_guard:
                    if event.event_id in self._published:
                        self._held[event.event_id] = time.monotonic()
                if engine is not None:  # a failing run now waits for this command's report
                    engine.hand_over(str(meta.get("command_id")))
        try:
            pending = self.notify(f"noetl.commands.{pool}.{event.execution_id}", payload)
        except Exception:  # NATS is only a wake-up signal; polling still finds the command
            self._notify_failed(event.event_id, None)
            return
        if pending is not None:
            pending.add_done_callback(functools.partial(self._notified, event.event_id))

    def _bus_only_pools(self) -> frozenset[str]:
        """Pools with live workers that all listen on the bus (registered with label bus=nats):
        only their notifications carry the command. A polling-only worker on a pool gets its
        commands without the bus hold instead."""
        checked, pools = self._bus_pools
        now = time.monotonic()
        if now - checked < WORKER_VIEW_SECONDS:
            return pools
        listening: set[str] = set()
        polling: set[str] = set()
        try:
            workers = self._live_worker_records()
        except NoetlError:
            workers = []
        for worker in workers:
            if worker.kind != "worker_pool":
                continue
            labels = worker.info.get("labels")
            labels = labels if isinstance(labels, Mapping) else {}
            names = [p.strip() for p in str(labels.get("pools") or "shared").split(",") if p.strip()]
            (listening if labels.get("bus") == "nats" else polling).update(names)
        pools = frozenset(listening - polling)
        self._bus_pools = (now, pools)
        return pools

    def _notified(self, event_id: int, done: concurrent.futures.Future[None]) -> None:
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            self._notify_failed(event_id, exc)

    def _notify_failed(self, event_id: int, exc: BaseException | None) -> None:
        """Offer the command to polling workers at once, and re-notify it at the next reap (which
        also takes back a hand-over: no worker got this notification)."""
        with self._pending_guard:
            if event_id in self._held:
                self._held[event_id] = -math.inf
            if event_id in self._published:
                self._published[event_id] = -math.inf
        log.warning(
            "command notification failed; polling workers will find it",
            extra={"event_id": event_id},
            exc_info=exc if exc is not None else True,
        )

    def _unpend(self, event: Event) -> None:
        """The command `event` is about was claimed or ended: it is not pending any more."""
        with self._pending_guard:
            found = self._pending_ids.get(str(event.command_id))
            if found is not None:
                self._forget_locked(*found)

    def _unpend_id(self, event_id: int) -> None:
        with self._pending_guard:
            found = self._pending_event_locked(event_id)
            if found is not None:
                self._forget_locked(found[0], event_id)

    def _pending_event_locked(self, event_id: int) -> tuple[str, Event] | None:
        """(pool, command.issued) of a pending command (under `_pending_guard`)."""
        for pool, commands in self._pending.items():
            event = commands.get(event_id)
            if event is not None:
                return pool, event
        return None

    def _forget_locked(self, pool: str, event_id: int) -> None:
        """Drop a pending command from every index (under `_pending_guard`)."""
        issued = self._pending.get(pool, {}).pop(event_id, None)
        if issued is not None:
            self._pending_ids.pop(str((issued.meta or {}).get("command_id")), None)
        self._published.pop(event_id, None)
        self._held.pop(event_id, None)

    def _reconcile_pending(self, candidates: list[Event] | None = None) -> bool:
        """Forget pending commands another server claimed or finished: each server's index only
        sees its own writes, so it is checked against the (caught-up) log. Returns whether any
        was dropped."""
        if candidates is None:
            with self._pending_guard:
                candidates = [event for commands in self._pending.values() for event in commands.values()]
        by_execution: dict[int, list[Event]] = {}
        for event in candidates:
            by_execution.setdefault(event.execution_id, []).append(event)
        dropped = False
        for execution_id, events in by_execution.items():
            with self._lock(execution_id):
                engine = self._engine_or_none(execution_id)
                for event in events:
                    command_id = (event.meta or {}).get("command_id")
                    current = engine.state.commands.get(str(command_id)) if engine is not None else None
                    if (
                        engine is None
                        or engine.state.terminal
                        or current is None
                        or current.status != "issued"
                    ):
                        self._unpend_id(event.event_id)
                        dropped = True
        return dropped

    def _drop_pending(self, execution_id: int) -> None:
        with self._pending_guard:
            for pool, commands in self._pending.items():
                for event_id in [k for k, v in commands.items() if v.execution_id == execution_id]:
                    self._forget_locked(pool, event_id)

    def pending(self, pools: list[str] | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """Commands nobody claimed yet (for workers polling without NATS), oldest first. On a
        store other servers share, the answer is checked against the log first (only the
        candidates it returns), so commands claimed through another server are not offered."""
        shared = getattr(self.store, "is_stale", None) is not None
        held_since = time.monotonic() - BUS_HOLD_SECONDS
        for _ in range(MAX_PENDING_CHECKS):
            found: list[Event] = []
            with self._pending_guard:
                for pool, commands in self._pending.items():
                    if pools and pool not in pools:
                        continue
                    # Commands just notified with their body are the bus's (see BUS_HOLD_SECONDS).
                    found.extend(
                        e for e in commands.values() if self._held.get(e.event_id, -math.inf) < held_since
                    )
            found.sort(key=lambda e: e.event_id)
            found = found[:limit]
            if not shared or not self._reconcile_pending(found):
                break
        return [
            {
                "execution_id": e.execution_id,
                "event_id": e.event_id,
                "command_id": (e.meta or {}).get("command_id"),
                "step": e.node_name,
                "server_url": self.server_url,
            }
            for e in found
        ]

    def claim_many(
        self,
        worker_id: str,
        *,
        pools: list[str] | None = None,
        limit: int = 10,
        event_ids: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Claim several commands in one call: the given ones (from bus notifications) or the
        oldest pending ones of the pools. Commands claimed elsewhere meanwhile are skipped. The
        commands of one execution are claimed under one lock and written in one transaction."""
        if event_ids is None:
            event_ids = [int(item["event_id"]) for item in self.pending(pools, limit=limit)]
        by_execution: dict[int, list[Event]] = {}
        for event_id in event_ids[:limit]:
            event = self._issued_event(event_id)
            if event is not None:
                by_execution.setdefault(event.execution_id, []).append(event)
        claimed: list[dict[str, Any]] = []
        for execution_id, issued in by_execution.items():
            followups: deque[Callable[[], None]] = deque()
            with self._lock(execution_id):
                engine = self._engine_or_none(execution_id)
                if engine is None:
                    continue
                out: list[Event] = []
                for event in issued:
                    try:
                        events = self._claim_locked(engine, event, worker_id)
                    except Conflict:
                        self._unpend_id(event.event_id)  # claimed or ended through another server
                        continue
                    if not events:
                        continue  # this worker holds it already: not handed out a second time
                    for claim_event in events:
                        out.append(claim_event)
                        out.extend(engine.react(claim_event))
                    claimed.append({"status": "ok", **_command_body(event)})
                self._commit(engine, out, followups)
            self._run(followups)
        return claimed

    def get_command(self, event_id: int) -> dict[str, Any]:
        event = self.store.get_event(event_id)
        if event is None or event.event_type != ev.COMMAND_ISSUED:
            raise NotFound(f"command.issued event not found: {event_id}")
        return _command_body(event)

    def claim(self, event_id: int, worker_id: str) -> dict[str, Any]:
        event = self._issued_event(event_id)
        if event is None:
            raise NotFound(f"command.issued event not found: {event_id}")
        followups: deque[Callable[[], None]] = deque()
        with self._lock(event.execution_id):
            engine = self._engine_or_none(event.execution_id)
            if engine is None:
                raise NotFound(f"execution {event.execution_id} not found")
            out: list[Event] = []
            for claim_event in self._claim_locked(engine, event, worker_id):
                out.append(claim_event)
                out.extend(engine.react(claim_event))
            self._commit(engine, out, followups)
        self._run(followups)
        return {"status": "ok", **_command_body(event)}

    def _issued_event(self, event_id: int) -> Event | None:
        """A `command.issued` event: from the pending index when it is there, else the store."""
        with self._pending_guard:
            found = self._pending_event_locked(event_id)
        if found is not None:
            return found[1]
        event = self.store.get_event(event_id)
        return event if event is not None and event.event_type == ev.COMMAND_ISSUED else None

    def _claim_locked(self, engine: Engine, event: Event, worker_id: str) -> list[Event]:
        """The `command.claimed` event for a claim (none for the same worker claiming again), or
        Conflict. Called under the execution's lock."""
        command_id = str((event.meta or {}).get("command_id"))
        if not self._claim_allowed(engine, command_id, worker_id):
            return []  # claiming twice is idempotent for the same worker
        claimed = Executor(ids=self.ids, worker_id=worker_id).claimed(Command.from_event(event))
        self._stamp(engine, claimed)
        return [claimed]

    @staticmethod
    def _claim_allowed(engine: Engine, command_id: str, worker_id: str, *, posted: bool = False) -> bool:
        """Whether `worker_id` may claim the command now: True, False when it holds the claim
        already, or Conflict (someone else has it, it ended, the run was cancelled or is failing).
        A `posted` claim comes with the outcome of a command its worker ran from the notification:
        a failing (not yet ended) run still takes it, as it waited for it (`Engine.hand_over`)."""
        state = engine.state
        if state.status == "CANCELLED" or state.cancel_requested:
            raise Conflict("Execution has been cancelled")
        if state.terminal:
            raise Conflict("Execution has already ended")
        current = state.commands.get(command_id)
        if current is None:
            raise Conflict("Command already reached terminal state")
        if current.status != "issued":
            if current.worker_id == worker_id:
                return False
            raise Conflict(f"Command already claimed by {current.worker_id}")
        if posted and current.handed_over:
            return True
        if not engine.accepts(command_id):
            raise Conflict("Execution is failing; no new commands are handed out")
        return True

    # ------------------------------------------------------------------ leases and recovery

    def register_worker(self, record: WorkerRecord) -> WorkerRecord:
        """Register (or refresh) a worker in the shared registry; registering is a heartbeat."""
        return self.store.upsert_worker(replace(record, heartbeat=utcnow()))

    def heartbeat(self, worker_id: str, command_ids: list[str] | None = None) -> int:
        """A live worker renews the leases of the commands it holds (claimed through this server);
        returns how many. The HTTP heartbeat also records it in the shared registry, which other
        servers consult before expiring a lease."""
        deadline = time.monotonic() + self.lease_seconds
        renewed = 0
        with self._leases_guard:
            if command_ids is not None:
                # The worker says what it runs: a claim it does not know about (its answer was
                # lost) is not renewed by the worker's liveness any more, so it expires.
                self._reported[worker_id] = set(command_ids)
            for command_id, lease in self._leases.items():
                if lease.worker_id == worker_id and (command_ids is None or command_id in command_ids):
                    lease.deadline = deadline
                    renewed += 1
        return renewed

    def stopped_commands(self, command_ids: list[str]) -> list[str]:
        """Of the commands a worker runs, those whose execution was cancelled or has ended: the
        worker is told (in the heartbeat answer) to stop them."""
        stopped: list[str] = []
        for command_id in command_ids:
            head = command_id.split(":", 1)[0]
            if not head.isdigit():
                continue
            engine = self._engine_or_none(int(head))
            if engine is not None and engine.state.terminal:
                stopped.append(command_id)
        return stopped

    def release_worker(self, worker_id: str, kind: str = "worker_pool") -> int:
        """A worker that left (deregistered or declared dead): its commands are issued again now."""
        self.store.remove_worker(worker_id, kind)
        with self._leases_guard:
            held = [(cid, lease) for cid, lease in self._leases.items() if lease.worker_id == worker_id]
            for _, lease in held:
                lease.deadline = 0.0
            self._departed.add(worker_id)
        return len(held)

    def reap(self) -> dict[str, int]:
        """Issue again the commands whose worker stopped heartbeating, and re-notify commands
        nobody claimed. Every server checks the claims made through it; the leader (one server
        per store) also checks claims made through servers that may be gone."""
        now = time.monotonic()
        alive = self._live_workers()
        with self._leases_guard:
            due = [(cid, lease) for cid, lease in self._leases.items() if lease.deadline <= now]
            expired: list[tuple[str, _Lease]] = []
            for cid, lease in due:
                reported = self._reported.get(lease.worker_id)
                if (
                    lease.worker_id in alive
                    and lease.worker_id not in self._departed
                    and (reported is None or cid in reported)
                ):
                    lease.deadline = now + self.lease_seconds  # it heartbeats through another server
                else:
                    del self._leases[cid]
                    expired.append((cid, lease))
        reissued = sum(self._expire(lease.execution_id, cid, lease.worker_id) for cid, lease in expired)
        if getattr(self.store, "is_stale", None) is not None:  # a store other servers may share
            self._reconcile_pending()
        leader = getattr(self.store, "try_leadership", None)
        if leader is None or leader("reaper"):
            reissued += self._reap_foreign_claims(alive)
        self._take_back_holds(now)
        renotified = 0
        with self._pending_guard:
            stale = [
                e
                for commands in self._pending.values()
                for e in commands.values()
                if now - self._published.get(e.event_id, 0.0) >= self.republish_after
            ]
            for event in stale:
                self._published[event.event_id] = now
        for event in stale:
            self._notify(event, again=True)
            renotified += 1
        return {"reissued": reissued, "renotified": renotified}

    def _retire(self, execution_id: int) -> None:
        """An execution ended: keep its engine among the last MAX_ENDED_ENGINES, evict older ones
        (only when nobody is working on them; they are rebuilt from the log if needed)."""
        with self._locks_guard:
            self._ended[execution_id] = None
            self._ended.move_to_end(execution_id)
            while len(self._ended) > MAX_ENDED_ENGINES:
                old, _ = self._ended.popitem(last=False)
                lock = self._locks.get(old)
                if lock is None or not lock.acquire(blocking=False):
                    continue  # in use right now: it stays cached
                try:
                    self._engines.pop(old, None)
                    self._seen.pop(old, None)
                finally:
                    lock.release()

    def _take_back_holds(self, now: float) -> None:
        """Commands notified with their body that no worker claimed within the hold: polling
        workers may have them now, and a failing run stops waiting for them."""
        with self._pending_guard:
            due = [event_id for event_id, held in self._held.items() if now - held >= BUS_HOLD_SECONDS]
            taken: list[Event] = []
            for event_id in due:
                del self._held[event_id]
                found = self._pending_event_locked(event_id)
                if found is not None:
                    taken.append(found[1])
        for event in taken:
            followups: deque[Callable[[], None]] = deque()
            with self._lock(event.execution_id):
                engine = self._engines.get(event.execution_id)
                if engine is not None:
                    self._commit(
                        engine, engine.take_back(str((event.meta or {}).get("command_id"))), followups
                    )
            self._run(followups)

    def _live_workers(self) -> set[str]:
        return {w.name for w in self._live_worker_records()}

    def _live_worker_records(self) -> list[WorkerRecord]:
        """Registered workers heard from within a lease."""
        cutoff = utcnow().timestamp() - self.lease_seconds
        return [w for w in self.store.workers() if w.heartbeat.timestamp() >= cutoff]

    def _expire(self, execution_id: int, command_id: str, worker_id: str) -> int:
        followups: deque[Callable[[], None]] = deque()
        with self._lock(execution_id):
            engine = self._engine_or_none(execution_id)
            if engine is None or command_id not in engine.state.commands:
                return 0
            reason = f"worker {worker_id} stopped renewing its lease ({self.lease_seconds:g} s)"
            self._commit(engine, engine.expire(command_id, reason=reason), followups)
        self._run(followups)
        return 1

    def _reap_foreign_claims(self, alive: set[str]) -> int:
        """Claims made through other servers: expire those whose worker is not alive any more
        (not heartbeating anywhere, and claimed longer than a lease ago)."""
        with self._leases_guard:
            watched = set(self._leases)
        cutoff = utcnow().timestamp() - self.lease_seconds
        reissued = 0
        for summary in self.store.executions(status="RUNNING", limit=10_000):
            engine = self._engines.get(summary.execution_id)
            if engine is None:
                continue  # not known here yet; its own server watches it, or recover() loads it
            for command in list(engine.state.commands.values()):
                if command.status == "issued" or command.command_id in watched:
                    continue
                worker = command.worker_id or ""
                if worker == CONTROL_WORKER or worker in alive:
                    continue
                claimed = command.claimed_at.timestamp() if command.claimed_at else 0.0
                if claimed >= cutoff:
                    continue
                reissued += self._expire(summary.execution_id, command.command_id, worker)
        return reissued

    def recover(self) -> int:
        """After a server start: rebuild every running execution from the log, settle what was
        derived but not logged, put unclaimed commands back on offer and give claimed ones a
        fresh lease (their workers renew it, or it expires and they are issued again)."""
        recovered = 0
        offset = 0
        while True:
            page = self.store.executions(status="RUNNING", limit=500, offset=offset)
            if not page:
                break
            offset += len(page)
            for summary in page:
                followups: deque[Callable[[], None]] = deque()
                with self._lock(summary.execution_id):
                    engine = self._engine_or_none(summary.execution_id)
                    if engine is None or engine.state.terminal:
                        continue
                    recovered += 1
                    self._commit(engine, engine.resume(), followups)
                    for command in engine.open_commands():
                        issued = self.store.get_event(command.event_id)
                        if issued is None:
                            continue
                        if command.kind == "playbook":
                            followups.append(functools.partial(self._resume_child, issued))
                        elif command.status == "issued":
                            self._publish(issued, again=True)
                        else:
                            with self._leases_guard:
                                self._leases[command.command_id] = _Lease(
                                    engine.execution_id,
                                    command.worker_id or "unknown",
                                    time.monotonic() + self.lease_seconds,
                                )
                self._run(followups)
        return recovered

    def _resume_child(self, issued: Event) -> None:
        """A `kind: playbook` command issued before a restart: start its child if none exists."""
        meta = issued.meta or {}
        for child in self.store.executions(parent_execution_id=issued.execution_id, limit=10_000):
            engine = self._engine_or_none(child.execution_id)
            if engine is not None and engine.state.meta.get("parent_command_id") == meta.get("command_id"):
                if engine.state.terminal:
                    self._report_child(engine)
                return
        self._start_child(issued)

    # ------------------------------------------------------------------ nested playbooks

    def _start_child(self, issued: Event) -> None:
        """A `kind: playbook` command: the control plane runs the child itself."""
        command = Command.from_event(issued)
        parent = self._engine_or_none(command.execution_id)
        if parent is None or parent.state.terminal or parent.state.failing:
            return
        current = parent.state.commands.get(command.command_id)
        if current is None:
            return
        executor = Executor(ids=self.ids, worker_id=CONTROL_WORKER)
        if current.status == "issued":
            self.ingest([executor.claimed(command), executor.started(command)])
        request = child_request(command.tool_config if isinstance(command.tool_config, dict) else {})
        try:
            entry = (
                self.store.resource_by_id(request.catalog_id)
                if request.catalog_id is not None
                else self.store.resource(str(request.path), request.version)
            )
            if entry is None:
                raise NotFound(f"Playbook not found: {request.path or request.catalog_id}")
            playbook = self._playbook(entry.catalog_id, entry.content, entry.path, entry.version)
        except NoetlError as exc:
            self.ingest(_finish_events(executor, command, None, f"cannot start child playbook: {exc}"))
            return
        stamp: dict[str, Any] = {"parent_execution_id": str(command.execution_id)}
        meta = command.meta
        if "iteration_index" in meta:
            stamp.update(
                iterator_index=meta["iteration_index"],
                iterator_count=meta.get("iteration_total"),
                iterator_item=meta.get("iterator_item"),
            )
        trace = parent.state.meta.get("trace")
        if trace:
            stamp["trace"] = trace
        start_meta = {
            "emitter": "control_plane",
            "parent_step": command.step,
            "parent_command_id": command.command_id,
            "parent_command_event_id": command.event_id,
            "return_step": request.return_step,
        }
        pool = parent.state.meta.get("execution_pool")
        if pool:
            start_meta["execution_pool"] = pool
        self._start(
            playbook, entry.catalog_id, self.ids(), request.workload, command.execution_id, stamp, start_meta
        )

    def _report_child(self, child: Engine) -> None:
        meta = child.state.meta
        parent_id = child.state.parent_execution_id
        issued_id = meta.get("parent_command_event_id")
        if parent_id is None or issued_id is None:
            return
        issued = self.store.get_event(int(issued_id))
        if issued is None:
            return
        command = Command.from_event(issued)
        executor = Executor(ids=self.ids, worker_id=CONTROL_WORKER)
        state = child.state
        if state.status == "COMPLETED":
            result = child.result(meta.get("return_step"))
            self.ingest(_finish_events(executor, command, result, None))
        else:
            error = (
                f"child execution {state.execution_id} {state.status.lower()}: {state.error or 'no detail'}"
            )
            self.ingest(_finish_events(executor, command, None, error))

    # ------------------------------------------------------------------ executions

    def status(self, execution_id: int) -> dict[str, Any]:
        with self._lock(execution_id):
            engine = self._engine_or_none(execution_id)
        if engine is None:
            raise NotFound(f"execution {execution_id} not found")
        state = engine.state
        steps = state.steps.values()
        current = next((s.name for s in reversed(list(steps)) if s.status == "running"), None)
        return {
            "execution_id": execution_id,
            "status": state.status if state.status != "INITIAL" else "RUNNING",
            "completed": state.status == "COMPLETED",
            "failed": state.status == "FAILED",
            "current_step": current,
            "error": state.error,
            "progress": {
                "total_steps": sum(1 for s in steps if s.runs > 0 or s.status != "pending"),
                "completed_steps": sum(1 for s in steps if s.status == "completed"),
                "running_steps": sum(1 for s in steps if s.status == "running"),
                "failed_steps": len(state.failed_steps),
            },
            "is_cancelled": state.status == "CANCELLED",
            # Results only once the run has ended: pollers ask often, and a 10,000-item loop's
            # results would be serialised on every poll.
            "result": engine.result(state.meta.get("return_step")) if state.terminal else None,
            "steps": {
                name: {"status": step.status.upper(), "result": engine.step_data(name)}
                for name, step in state.steps.items()
            }
            if state.terminal
            else None,
        }

    def cancel(
        self, execution_id: int, *, cascade: bool = True, reason: str = "cancelled by request"
    ) -> dict[str, Any]:
        followups: deque[Callable[[], None]] = deque()
        with self._lock(execution_id):
            engine = self._engine_or_none(execution_id)
            if engine is None:
                raise NotFound(f"execution {execution_id} not found")
            if engine.state.terminal:
                raise ValidationFailed(f"Cannot cancel execution in {engine.state.status} state")
            self._commit(engine, engine.cancel(reason), followups)
        self._run(followups)
        if cascade:
            self._cancel_children(execution_id)
        return {
            "execution_id": execution_id,
            "status": "cancelled",
            "message": "Execution cancellation requested",
        }

    def _cancel_children(self, execution_id: int) -> None:
        for child in self.store.executions(parent_execution_id=execution_id, status="RUNNING", limit=10_000):
            try:
                self.cancel(child.execution_id, reason=f"parent execution {execution_id} was cancelled")
            except NoetlError:
                continue

    # ------------------------------------------------------------------ engines

    @contextmanager
    def _lock(self, execution_id: int) -> Iterator[None]:
        """Serialise work on one execution: a lock in this process, plus the store's lock across
        processes where it has one (PostgreSQL advisory locks). Under the lock the cached engine
        is brought up to date if another server process wrote to the execution meanwhile."""
        with self._locks_guard:
            lock = self._locks.setdefault(execution_id, threading.RLock())
        shared_lock = getattr(self.store, "execution_lock", None)
        with lock:
            if shared_lock is None or self._lock_depth.get(execution_id):
                self._lock_depth[execution_id] = self._lock_depth.get(execution_id, 0) + 1
                try:
                    yield
                finally:
                    self._lock_depth[execution_id] -= 1
                return
            with shared_lock(execution_id):
                self._lock_depth[execution_id] = 1
                try:
                    self._catch_up(execution_id)
                    yield
                finally:
                    self._lock_depth[execution_id] = 0

    def _catch_up(self, execution_id: int) -> None:
        """Drop a cached engine that missed events written by another server process."""
        stale = getattr(self.store, "is_stale", None)
        if execution_id in self._engines and stale is not None and stale(execution_id):
            del self._engines[execution_id]
            self._seen.pop(execution_id, None)

    def _playbook(self, catalog_id: int, content: str, path: str, version: int) -> Playbook:
        playbook = self._playbooks.get(catalog_id)
        if playbook is None:
            try:
                playbook = parse_playbook(content, source=f"catalog:{path}@{version}")
            except PlaybookError as exc:
                raise ValidationFailed(str(exc)) from exc
            self._playbooks[catalog_id] = playbook
        return playbook

    def engine(self, execution_id: int) -> Engine:
        engine = self._engine_or_none(execution_id)
        if engine is None:
            raise NotFound(f"execution {execution_id} not found")
        return engine

    def _engine_or_none(self, execution_id: int) -> Engine | None:
        engine = self._engines.get(execution_id)
        if engine is not None:
            return engine
        with self._lock(execution_id):
            engine = self._engines.get(execution_id)
            if engine is not None:
                return engine
            log_events = self.store.read(execution_id)
            if not log_events or log_events[0].event_type != ev.PLAYBOOK_STARTED:
                return None
            started = log_events[0]
            catalog_id = started.catalog_id
            entry = self.store.resource_by_id(catalog_id) if catalog_id is not None else None
            if entry is None:
                return None
            playbook = self._playbook(entry.catalog_id, entry.content, entry.path, entry.version)
            stamp = {
                k: v
                for k, v in (started.meta or {}).items()
                if k.startswith("iterator_") or k in ("trace", "parent_execution_id")
            }
            engine = Engine(
                playbook,
                execution_id,
                ids=self.ids,
                catalog_id=catalog_id,
                parent_execution_id=started.parent_execution_id,
                stamp=stamp,
                max_attempts=self.max_attempts,
            )
            engine.fold(log_events)
            mark = getattr(self.store, "mark_current", None)
            if mark is not None:
                mark(execution_id)
            self._engines[execution_id] = engine
            self._seen[execution_id] = {e.event_id for e in log_events}
            return engine

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)


def _command_body(event: Event) -> dict[str, Any]:
    meta = event.meta or {}
    return {
        "event_id": event.event_id,
        "execution_id": event.execution_id,
        "node_id": event.node_name,
        "node_name": event.node_name,
        "action": meta.get("tool_kind") or event.node_type,
        "context": event.context or {},
        "meta": meta,
    }


def _json_size(body: Mapping[str, Any]) -> int:
    try:
        return len(orjson.dumps(body, default=str))
    except TypeError:
        return MAX_INLINE_COMMAND_BYTES + 1


def _finish_events(executor: Executor, command: Command, data: Any, error: str | None) -> list[Event]:
    """call.done + command.completed, or call.error + command.failed, for a command the control
    plane ran itself."""
    if error is not None:
        return [
            executor._event(command, ev.CALL_ERROR, "FAILED", {"call_index": 0, "error": error}),
            executor._event(command, ev.COMMAND_FAILED, "FAILED", {"error": error}),
        ]
    inner = {"status": "success", "context": {"data": data}}
    return [
        executor._event(command, ev.CALL_DONE, "COMPLETED", {"call_index": 0, "result": inner}),
        executor._event(command, ev.COMMAND_COMPLETED, "success", {"status": "success"}),
    ]


def event_from_json(body: Mapping[str, Any], ids: Callable[[], int]) -> Event:
    """A worker-posted event (`POST /api/events`), in the upstream request shape."""
    try:
        execution_id = int(body["execution_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed("Invalid execution_id") from exc
    event_type = body.get("event_type") or body.get("name")
    if not isinstance(event_type, str) or not event_type:
        raise ValidationFailed("'event_type' (or 'name') is required")
    step = body.get("step")
    payload = body.get("payload", body.get("context"))
    status = body.get("status") or _status_from_name(event_type)
    raw_id = body.get("event_id")
    try:
        event_id = int(raw_id) if raw_id not in (None, "", 0) else ids()
    except (TypeError, ValueError) as exc:
        raise ValidationFailed("Invalid event_id") from exc
    raw_meta = body.get("meta") or {}
    if not isinstance(raw_meta, Mapping):
        raise ValidationFailed("'meta' must be an object")
    meta = dict(raw_meta)
    worker_id = body.get("worker_id")
    meta.setdefault("actionable", body.get("actionable", True))
    meta.setdefault("informative", body.get("informative", True))
    if worker_id:
        meta["worker_id"] = worker_id
    result: dict[str, Any] = {"status": str(status)}
    if isinstance(payload, Mapping):
        result["context"] = dict(payload)
    created = body.get("created_at")
    created_at = utcnow()
    if isinstance(created, str):
        try:
            created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
            if created_at.tzinfo is None:
                created_at = created_at.replace(tzinfo=UTC)
        except ValueError:
            pass
    parent_event_id = _opt_int(body.get("parent_event_id"), "parent_event_id")
    return Event(
        event_id=event_id,
        execution_id=execution_id,
        event_type=event_type,
        node_name=str(step) if step is not None else None,
        node_id=str(step) if step is not None else None,
        node_type=body.get("node_type"),
        status=str(status),
        result=result,
        meta=meta,
        worker_id=str(worker_id) if worker_id else None,
        parent_event_id=parent_event_id,
        created_at=created_at,
    )


def _status_from_name(name: str) -> str:
    lowered = name.lower()
    if any(word in lowered for word in ("done", "exit", "completed")):
        return "COMPLETED"
    if "error" in lowered or "failed" in lowered:
        return "FAILED"
    return "RUNNING"


def _opt_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _opt_int(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValidationFailed(f"'{name}' must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"'{name}' must be an integer") from exc
