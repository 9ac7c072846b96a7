"""The control plane: what the HTTP API calls. It registers playbooks, starts executions, takes
worker events, hands out commands and reports status, over the shared `Orchestrator`.

Its parts: `Offers` (commands waiting for a worker, and their bus notifications), `Leases`
(claims and their renewal), `Claims` (pending lists, claims, heartbeats) and `Recovery` (the
reaper and the restart recovery). This class is the facade and the orchestrator's `Dispatch`:
committed commands go on offer, claims get a lease, ended commands and runs leave the offers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from noetl.dsl.resource import decode_resource
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.loops import DEFAULT_LOOP_WINDOW, StartLoopError, check_start_loop
from noetl.engine.machine import Engine
from noetl.errors import Forbidden, NotFound, ValidationFailed
from noetl.ids import Snowflake, default_ids
from noetl.runtime.control.claims import Claims
from noetl.runtime.control.leases import DEFAULT_LEASE_SECONDS, Leases
from noetl.runtime.control.offers import DEFAULT_REPUBLISH_SECONDS, Notifier, Offers
from noetl.runtime.control.recovery import Recovery
from noetl.runtime.control.requests import ExecuteOutcome, ExecuteRequest
from noetl.runtime.orchestrator import ENGINE_WORKER, IngestOutcome, Launch, Orchestrator
from noetl.secrets import mask_for, secrets
from noetl.status import CANCELLED, COMPLETED, FAILED, INITIAL, RUNNING
from noetl.store.ports import CatalogEntry, Store, StoredCredential, WorkerRecord
from noetl.tools.base import ChildRequest
from noetl.worker.command import Command, refers_to
from noetl.worker.credentials import PUBLIC_FIELDS

log = logging.getLogger(__name__)

_SETTLING = frozenset({ev.COMMAND_COMPLETED, ev.COMMAND_FAILED, ev.COMMAND_EXPIRED})


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
        loop_window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        self.store = store
        self.ids = ids or default_ids
        self.server_url = server_url
        self.lease_seconds = lease_seconds
        self.orchestrator = Orchestrator(
            store,
            ids=self.ids,
            dispatch=self,
            max_attempts=max_attempts,
            emitter="control_plane",
            loop_window=loop_window,
        )
        self.offers = Offers(
            store,
            notify=notify,
            server_url=server_url,
            live_workers=self.live_workers,
            republish_after=republish_after,
        )
        self.leases = Leases(lease_seconds)
        self.claims = Claims(self.orchestrator, self.offers, self.leases, server_url)
        self.recovery = Recovery(self.orchestrator, self.offers, self.leases, self.claims, self.live_workers)
        # Called with a resource's text before it is stored (raise to refuse it); what each
        # returns is called with the stored entry (e.g. the schedules a playbook declares).
        self.register_hooks: list[Callable[[str], Callable[[CatalogEntry], None]]] = []

    @property
    def direct_run(self) -> bool:
        """Whether notifications carry their command (off with an in-process worker)."""
        return self.offers.direct_run

    @direct_run.setter
    def direct_run(self, value: bool) -> None:
        self.offers.direct_run = value

    @property
    def republish_after(self) -> float:
        return self.offers.republish_after

    # ------------------------------------------------------------------ Dispatch

    def committed(self, engine: Engine, events: Sequence[Event]) -> None:
        for event in events:
            kind = event.event_type
            if kind == ev.COMMAND_ISSUED:
                if (event.meta or {}).get("tool_kind") != "playbook":  # those run natively
                    self.offers.offer(event, engine=engine)
            elif kind == ev.COMMAND_CLAIMED:
                self.offers.withdraw(event.command_id)
                # Commands the orchestrator runs itself (nested playbooks) hold no lease.
                if event.command_id is not None and event.worker_id and event.worker_id != ENGINE_WORKER:
                    self.leases.grant(event.command_id, event.execution_id, event.worker_id)
            elif kind in _SETTLING:
                self.offers.withdraw(event.command_id)
                if event.command_id is not None:
                    self.leases.drop(event.command_id)
            elif kind in ev.TERMINAL_TYPES:
                self.offers.withdraw_execution(event.execution_id)

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        self.orchestrator.add_listener(listener)

    # ------------------------------------------------------------------ catalog

    def register(self, content: str, resource_type: str = "Playbook") -> dict[str, Any]:
        resource = decode_resource(content, resource_type)
        after = [hook(resource.text) for hook in self.register_hooks] if resource.kind == "playbook" else []
        entry = self.store.register(resource.text, path=resource.path, kind=resource.kind)
        for registered in after:
            registered(entry)
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
        child = ChildRequest(
            path=request.path,
            catalog_id=request.catalog_id,
            workload=request.payload,
            version=request.version,
        )
        entry = (
            self.store.resource_by_id(child.catalog_id)
            if child.catalog_id is not None
            else self.store.resource(str(child.path), child.version)
        )
        if entry is None:
            what = (
                f"Catalog entry not found: {child.catalog_id}"
                if child.catalog_id is not None
                else f"Playbook not found: {child.path}"
            )
            raise NotFound(what)
        playbook = self.orchestrator.engines.playbook(entry)
        try:  # upstream's strict start-step loop typing: refused before the run exists
            check_start_loop(
                playbook, request.payload, execution_id=execution_id, catalog_id=entry.catalog_id
            )
        except StartLoopError as exc:
            raise ValidationFailed(str(exc)) from exc
        if request.dedup is not None:  # after resolving: a 404/422 must not hold the key for the window
            existing = self._claim_dedup(request, execution_id)
            if existing is not None:
                return ExecuteOutcome(existing, "duplicate", 0)
        started = self.orchestrator.start(
            Launch(
                playbook=playbook,
                catalog_id=entry.catalog_id,
                workload=request.payload,
                parent_execution_id=request.parent_execution_id,
                metadata=request.metadata,
                trace=request.trace,
                execution_pool=request.execution_pool,
                execution_id=execution_id,
            )
        )
        return ExecuteOutcome(execution_id, "started", started.commands_generated)

    def _claim_dedup(self, request: ExecuteRequest, execution_id: int) -> int | None:
        """Race-safe: the first request with a key inside the window wins; later ones get its id."""
        assert request.dedup is not None
        scope = request.parent_execution_id or 0
        existing = self.store.claim_dedup(scope, request.dedup.key, request.dedup.window_secs, execution_id)
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

    # ------------------------------------------------------------------ worker traffic

    def ingest(self, events: list[Event]) -> list[int]:
        """Store worker events (idempotent on event_id) and let the engines react."""
        return self.orchestrator.ingest(events).event_ids

    def ingest_report(self, events: list[Event]) -> IngestOutcome:
        """`ingest`, also naming the commands whose events were refused."""
        return self.orchestrator.ingest(events)

    def report(self, events: list[Event]) -> IngestOutcome:
        """Events a client posted (`/api/events`): only about a command (a `command_id` in
        meta), never of a type only the engine writes; whether the poster holds that command is
        checked per event (`Orchestrator.ingest`)."""
        for event in events:
            if engine_only(event.event_type):
                raise Forbidden(f"'{event.event_type}' events are written by the engine, not posted")
            if self.orchestrator.engines.get(event.execution_id) is None:
                raise NotFound(f"execution {event.execution_id} not found")
            if not event.command_id:
                raise ValidationFailed(
                    f"a posted '{event.event_type}' event must name its command (meta.command_id)"
                )
        return self.orchestrator.ingest(events)

    def pending(self, pools: list[str] | None = None, limit: int = 10) -> list[dict[str, Any]]:
        return self.claims.pending(pools, limit)

    def claim(self, event_id: int, worker_id: str) -> dict[str, Any]:
        return self.claims.claim(event_id, worker_id)

    def claim_many(
        self,
        worker_id: str,
        *,
        pools: list[str] | None = None,
        limit: int = 10,
        event_ids: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        return self.claims.claim_many(worker_id, pools=pools, limit=limit, event_ids=event_ids)

    def get_command(self, event_id: int) -> dict[str, Any]:
        return self.claims.command(event_id)

    def heartbeat(self, worker_id: str, command_ids: list[str] | None = None) -> int:
        return self.claims.heartbeat(worker_id, command_ids)

    def stopped_commands(self, command_ids: list[str]) -> list[str]:
        return self.claims.stopped_commands(command_ids)

    def release_worker(self, worker_id: str, kind: str = "worker_pool") -> int:
        return self.claims.release_worker(worker_id, kind)

    def reap(self) -> dict[str, int]:
        return self.recovery.reap()

    def recover(self) -> int:
        return self.recovery.recover()

    def live_workers(self) -> list[WorkerRecord]:
        """Registered workers heard from within a lease."""
        cutoff = datetime.now(UTC).timestamp() - self.lease_seconds
        return [w for w in self.store.workers() if w.heartbeat.timestamp() >= cutoff]

    def release_secret(self, name: str, *, worker_id: str, command_id: str) -> StoredCredential:
        """A credential's data for the worker holding `command_id`, when that command refers to
        it: the only way a secret leaves the server. The read is recorded in the execution's log
        (without the value), and the values are masked in that execution from now on."""
        head = command_id.split(":", 1)[0]
        engine = self.orchestrator.engines.get(int(head)) if head.isdigit() else None
        command = engine.state.commands.get(command_id) if engine is not None else None
        if engine is not None and command is not None and command.status == "issued":
            # A worker running the command from its notification (not claimed yet): asking for
            # its secret is its claim, checked like one.
            self._claim_for_secret(engine.execution_id, command.event_id, worker_id)
            command = engine.state.commands.get(command_id)
        if engine is None or command is None or command.status == "issued" or command.worker_id != worker_id:
            raise Forbidden(f"worker '{worker_id}' holds no running command {command_id}")
        issued = self.store.get_event(command.event_id)
        if issued is None or not refers_to(Command.from_event(issued), name):
            raise Forbidden(f"command {command_id} does not use credential '{name}'")
        credential = self.store.get_credential(name)
        if credential is None:
            raise NotFound(f"Credential '{name}' not found")
        for key, value in credential.data.items():
            if key not in PUBLIC_FIELDS:
                secrets.add(engine.execution_id, value)
        read = self.orchestrator.events_for(worker_id).event(
            Command.from_event(issued),
            "credential.read",
            "READ",
            {"credential": name, "credential_type": credential.type},
        )
        self.orchestrator.react(engine.execution_id, lambda _engine: [read])
        return credential

    def _claim_for_secret(self, execution_id: int, issued_id: int, worker_id: str) -> None:
        issued = self.store.get_event(issued_id)
        if issued is None:
            return
        claim = self.orchestrator.events_for(worker_id).claimed(Command.from_event(issued))
        outcome = self.orchestrator.ingest([claim])
        if outcome.rejected:
            raise Forbidden(f"worker '{worker_id}' may not claim command {claim.command_id}")

    # ------------------------------------------------------------------ executions

    def engine(self, execution_id: int) -> Engine:
        engine = self.orchestrator.engines.get(execution_id)
        if engine is None:
            raise NotFound(f"execution {execution_id} not found")
        return engine

    def status(self, execution_id: int) -> dict[str, Any]:
        with self.orchestrator.engines.lock(execution_id):
            engine = self.engine(execution_id)
        return mask_for(execution_id, status_view(engine))

    def cancel(
        self, execution_id: int, *, cascade: bool = True, reason: str = "cancelled by request"
    ) -> dict[str, Any]:
        self.orchestrator.cancel(execution_id, reason, cascade=cascade)
        return {
            "execution_id": execution_id,
            "status": "cancelled",
            "message": "Execution cancellation requested",
        }


_ENGINE_TYPES = frozenset(
    {ev.PLAYBOOK_STARTED, ev.COMMAND_ISSUED, ev.COMMAND_EXPIRED, ev.CTX_UPDATED, "credential.read"}
)
_ENGINE_PREFIXES = ("playbook.", "step.", "loop.", "subscription.", "schedule.")


def engine_only(event_type: str) -> bool:
    """Whether only the engine (or the control plane) writes events of this type."""
    return event_type in _ENGINE_TYPES or event_type.startswith(_ENGINE_PREFIXES)


def status_view(engine: Engine) -> dict[str, Any]:
    """`GET /api/executions/{id}/status`: the run's status and progress; its results once it
    has ended (pollers ask often, and a 10,000-item loop's results would be serialised on every
    poll)."""
    state = engine.state
    steps = state.steps.values()
    current = next((s.name for s in reversed(list(steps)) if s.status == "running"), None)
    return {
        "execution_id": state.execution_id,
        "status": state.status if state.status != INITIAL else RUNNING,
        "completed": state.status == COMPLETED,
        "failed": state.status == FAILED,
        "current_step": current,
        "error": state.error,
        "progress": {
            "total_steps": sum(1 for s in steps if s.runs > 0 or s.status != "pending"),
            "completed_steps": sum(1 for s in steps if s.status == "completed"),
            "running_steps": sum(1 for s in steps if s.status == "running"),
            "failed_steps": len(state.failed_steps),
        },
        "is_cancelled": state.status == CANCELLED,
        "result": engine.result(state.meta.get("return_step")) if state.terminal else None,
        "steps": {
            name: {"status": step.status.upper(), "result": engine.step_data(name)}
            for name, step in state.steps.items()
        }
        if state.terminal
        else None,
    }
