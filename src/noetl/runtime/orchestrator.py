"""The orchestration core every mode shares: the local runtime and the control plane both run
executions through one `Orchestrator`.

It starts executions (roots and children), takes reported events (checking that each belongs to
an open command), lets the execution's engine react, and commits: events are stamped, masked and
appended, then handed to the mode's `Dispatch` (the local runtime queues commands for its worker
pool; the control plane offers them to workers). Nested playbooks are engine-native: a
`kind: playbook` command is run here, by starting the child; when a child ends, its outcome is
reported into the parent as that command's result. Cancelling an execution, or its failure,
cancels its running children.

Work on one execution happens under its lock (`EngineCache.lock`). Effects on *other*
executions (starting a child, reporting a child's end, cancelling children) are queued as
follow-ups and run after the lock is released, so locks never nest.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from noetl.dsl.model import Playbook
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.loops import DEFAULT_LOOP_WINDOW
from noetl.engine.machine import Engine
from noetl.errors import Conflict, NoetlError, NotFound, PlaybookError, ValidationFailed
from noetl.ids import observe
from noetl.runtime.engines import EngineCache
from noetl.runtime.resolver import PlaybookResolver
from noetl.secrets import masked, secrets
from noetl.status import CANCELLED, COMPLETED, RUNNING
from noetl.store.ports import Store
from noetl.tools.base import ChildRequest
from noetl.worker.command import Command, CommandEvents, child_metadata, child_request

log = logging.getLogger(__name__)

# The worker id on commands the orchestrator runs itself (nested playbooks): they hold no lease.
ENGINE_WORKER = "control-plane"
ITERATOR_KEYS = ("iterator_index", "iterator_count", "iterator_item")
# Events a worker reports about a command it holds.
COMMAND_EVENTS = frozenset(
    {
        ev.COMMAND_STARTED,
        ev.CALL_DONE,
        ev.CALL_ERROR,
        ev.COMMAND_COMPLETED,
        ev.COMMAND_FAILED,
        ev.COMMAND_HEARTBEAT,
    }
)

# Events after which a command is not open any more.
_CLOSING = frozenset({ev.COMMAND_COMPLETED, ev.COMMAND_FAILED, ev.COMMAND_EXPIRED})

FollowUps = deque[Callable[[], None]]


class Dispatch(Protocol):
    """What a mode does with committed events: run or offer the commands, settle ended runs."""

    def committed(self, engine: Engine, events: Sequence[Event]) -> None:
        """`events` of `engine`'s execution were just written (called under its lock)."""
        ...


@dataclass
class Launch:
    """An execution to start."""

    playbook: Playbook
    catalog_id: int | None
    workload: Mapping[str, Any]
    parent_execution_id: int | None = None
    # Recorded on `playbook_started` meta; its iterator keys are also stamped on every event.
    metadata: Mapping[str, Any] | None = None
    trace: Mapping[str, Any] | None = None
    execution_pool: str | None = None
    execution_id: int | None = None


@dataclass
class Started:
    execution_id: int
    commands_generated: int
    engine: Engine


@dataclass
class IngestOutcome:
    event_ids: list[int]
    # Commands whose events were refused: another worker holds the command, its execution ended
    # or was cancelled, or its lease expired and it was issued again. Their worker stops them.
    rejected: list[str]


class Orchestrator:
    def __init__(
        self,
        store: Store,
        *,
        ids: Callable[[], int],
        dispatch: Dispatch,
        max_attempts: int = 3,
        emitter: str | None = None,
        loop_window: int = DEFAULT_LOOP_WINDOW,
    ) -> None:
        self.store = store
        self.emitter = emitter  # recorded on `playbook_started` meta (the engine's own when None)
        self.ids = ids
        self.dispatch = dispatch
        self.engines = EngineCache(store, ids=ids, max_attempts=max_attempts, loop_window=loop_window)
        self.resolver = PlaybookResolver(store, self.engines.playbook)
        self._listeners: list[Callable[[Event], None]] = []
        self._events = CommandEvents(ids=ids, worker_id=ENGINE_WORKER)

    def events_for(self, worker_id: str) -> CommandEvents:
        """The builder of events reported in the name of `worker_id`."""
        return CommandEvents(ids=self.ids, worker_id=worker_id)

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` with every committed event (observers: progress, metrics, wake-ups)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ starting

    def start(self, launch: Launch) -> Started:
        """Start an execution: `playbook_started` and its first commands are committed."""
        execution_id = launch.execution_id if launch.execution_id is not None else self.ids()
        stamp, start_meta = self._launch_meta(launch)
        engine = self.engines.new_engine(
            launch.playbook,
            execution_id,
            catalog_id=launch.catalog_id,
            parent_execution_id=launch.parent_execution_id,
            stamp=stamp,
        )
        if launch.parent_execution_id is not None:
            secrets.link(execution_id, launch.parent_execution_id)  # its secrets are masked there too
        followups: FollowUps = deque()
        with self.engines.lock(execution_id):
            self.engines.add(engine)
            out = engine.start(launch.workload, meta={**start_meta, **stamp})
            self._commit(engine, out, followups)
        self._run(followups)
        return Started(execution_id, sum(1 for e in out if e.event_type == ev.COMMAND_ISSUED), engine)

    def _launch_meta(self, launch: Launch) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what every event of the execution is stamped with, its `playbook_started` meta)."""
        stamp: dict[str, Any] = {}
        start_meta: dict[str, Any] = {"emitter": self.emitter} if self.emitter else {}
        trace = launch.trace
        pool = launch.execution_pool
        if launch.parent_execution_id is not None:
            stamp["parent_execution_id"] = str(launch.parent_execution_id)
            parent = self.engines.get(launch.parent_execution_id)
            if parent is not None:  # children inherit the parent's trace and pool
                trace = trace or parent.state.meta.get("trace")
                pool = pool or parent.state.meta.get("execution_pool")
                if parent.state.meta.get("strict"):  # and `noetl run --strict`
                    start_meta["strict"] = True
        if pool:
            start_meta["execution_pool"] = pool
        if trace:
            start_meta["trace"] = dict(trace)
            stamp["trace"] = dict(trace)
        metadata = dict(launch.metadata or {})
        stamp.update({k: metadata[k] for k in ITERATOR_KEYS if k in metadata})
        start_meta.update(metadata)
        return stamp, start_meta

    def start_child(
        self,
        parent_execution_id: int,
        request: ChildRequest,
        metadata: Mapping[str, Any] | None = None,
        execution_id: int | None = None,
    ) -> Started:
        """Start a nested playbook of `parent_execution_id`: the one way every child starts
        (engine-native `kind: playbook` steps, pipeline tasks run by any worker, and
        `POST /api/execute` with a parent). `metadata` is what the requesting command records
        (`child_metadata`). Raises NotFound/ValidationFailed when the playbook cannot be found."""
        parent = self.engines.get(parent_execution_id)
        try:
            playbook, catalog_id = self.resolver.resolve(request, parent.playbook if parent else None)
        except PlaybookError as exc:
            raise NotFound(str(exc)) from exc
        return self.start(
            Launch(
                playbook=playbook,
                catalog_id=catalog_id,
                workload=request.workload,
                parent_execution_id=parent_execution_id,
                metadata=metadata,
                execution_id=execution_id,
            )
        )

    # ------------------------------------------------------------------ reported events

    def ingest(self, events: Sequence[Event]) -> IngestOutcome:
        """Take reported events (idempotent on event_id) and let the engines react. A posted
        `command.claimed` is a claim: checked like one, and when refused, the rest of that
        command's events in the batch are refused with it."""
        ids: list[int] = []
        rejected: dict[str, None] = {}
        followups: FollowUps = deque()
        by_execution: dict[int, list[Event]] = {}
        for event in events:
            by_execution.setdefault(event.execution_id, []).append(event)
            ids.append(event.event_id)
        if ids:  # what the engines write in reaction orders after the reports in the log
            observe(self.ids, max(ids))
        unknown: list[int] = []
        for execution_id, batch in by_execution.items():
            with self.engines.lock(execution_id):
                engine = self.engines.get(execution_id)
                if engine is None:
                    unknown.append(execution_id)  # the rest of a mixed batch is still taken
                    continue
                failing = engine.state.failing
                out = self._admit(engine, batch, rejected)
                self._commit(engine, out, followups)
                if engine.state.failing and not failing and not engine.state.terminal:
                    followups.append(
                        functools.partial(self.cancel_children, execution_id, "the parent execution failed")
                    )
        self._run(followups)
        if unknown and len(unknown) == len(by_execution):
            raise NotFound(f"execution {unknown[0]} not found")
        if unknown:
            log.warning("events for unknown executions ignored", extra={"execution_ids": unknown})
        return IngestOutcome(ids, list(rejected))

    def _admit(self, engine: Engine, batch: list[Event], rejected: dict[str, None]) -> list[Event]:
        """The events of `batch` the engine accepts, each followed by its reaction. Posting an
        event again changes nothing: a repeat for an open command is known here, one for a
        command that has ended is found in the store."""
        out: list[Event] = []
        reported = self.engines.reported(engine.execution_id)
        open_commands = engine.state.commands
        stored = self._stored(batch, open_commands)
        for event in batch:
            command_id = event.command_id
            if command_id is None:
                if event.event_type in COMMAND_EVENTS:
                    continue
            elif command_id in rejected or event.event_id in stored:
                continue
            else:
                ids = reported.get(command_id)
                if ids is not None and event.event_id in ids:
                    continue  # already ingested
                if not self._accepts(engine, event, command_id, rejected):
                    continue
                reported.setdefault(command_id, set()).add(event.event_id)
            self.stamp(engine, event)
            out.append(event)
            out.extend(engine.react(event))
        return out

    def _stored(self, batch: list[Event], open_commands: Mapping[str, object]) -> set[int]:
        """Of the events about commands that are not open, those stored already (repeats). An
        id stored under another execution is a Conflict."""
        closed = [e for e in batch if (c := e.command_id) is not None and c not in open_commands]
        known = self.store.known_event_ids([e.event_id for e in closed]) if closed else set()
        for event in closed:
            if event.event_id in known:
                stored = self.store.get_event(event.event_id)
                if stored is not None and stored.execution_id != event.execution_id:
                    raise Conflict(
                        f"event id {event.event_id} is stored already, under execution {stored.execution_id}"
                    )
        return known

    def _accepts(self, engine: Engine, event: Event, command_id: str, rejected: dict[str, None]) -> bool:
        if event.event_type == ev.COMMAND_CLAIMED and command_id is not None:
            try:
                # False: this worker's claim is recorded already.
                return check_claim(engine, command_id, event.worker_id or "", posted=True)
            except Conflict as exc:
                log.info(
                    "refusing a claim: %s",
                    exc,
                    extra={"command_id": command_id, "worker_id": event.worker_id},
                )
                rejected[command_id] = None
                return False
        current = engine.state.commands.get(command_id)
        if current is None:
            # A superseded attempt (its lease expired) or an unknown command: its result is not
            # accepted, so each command's result is recorded once.
            why = "a command that is not open"
        elif current.status == "issued" or current.worker_id != event.worker_id:
            # Only the worker holding the command (its claim recorded) reports about it.
            why = f"a command held by {current.worker_id or 'nobody'}"
        else:
            return True
        log.info(
            "ignoring %s for %s",
            event.event_type,
            why,
            extra={"command_id": command_id, "worker_id": event.worker_id},
        )
        rejected[command_id] = None
        return False

    def react(self, execution_id: int, decide: Callable[[Engine], list[Event]]) -> list[Event]:
        """Let the engine decide something under the execution's lock (`decide(engine)` returns
        the engine's new events, e.g. `engine.expire(...)`) and commit what it decided."""
        followups: FollowUps = deque()
        with self.engines.lock(execution_id):
            engine = self.engines.get(execution_id)
            if engine is None:
                return []
            out = decide(engine)
            self._commit(engine, out, followups)
        self._run(followups)
        return out

    def resume(self, execution_id: int) -> Engine | None:
        """After a restart: settle what was derived but not logged; restart native children
        whose start was not recorded. Returns the engine when the execution is still running."""
        followups: FollowUps = deque()
        with self.engines.lock(execution_id):
            engine = self.engines.get(execution_id)
            if engine is None or engine.state.terminal:
                return None
            self._commit(engine, engine.resume(), followups)
            for command in engine.open_commands():
                if command.kind == "playbook":
                    followups.append(functools.partial(self._resume_child, execution_id, command.event_id))
        self._run(followups)
        return engine

    # ------------------------------------------------------------------ committing

    def stamp(self, engine: Engine, event: Event) -> None:
        state = engine.state
        if state.parent_execution_id is not None and event.parent_execution_id is None:
            event.parent_execution_id = state.parent_execution_id
        if event.catalog_id is None:
            event.catalog_id = state.catalog_id
        if engine.stamp:
            event.meta = {**(event.meta or {}), **engine.stamp}

    def _commit(self, engine: Engine, events: list[Event], followups: FollowUps) -> None:
        """Persist, then act: native children, the mode's dispatch, observers, ended runs."""
        if not events:
            return
        try:
            # Strict: the events are new (known ones were filtered out), so an id the store holds
            # already belongs to another execution (a Conflict, never a silent drop).
            self.store.append([masked(e) for e in events], strict=True)
        except NoetlError:
            # Nothing was written: the engine, which applied the events, is rebuilt from the log.
            self.engines.forget(engine.execution_id)
            raise
        reported = self.engines.reported(engine.execution_id)
        for event in events:
            kind = event.event_type
            if kind in _CLOSING:
                reported.pop(str(event.command_id), None)
            if kind == ev.COMMAND_ISSUED and (event.meta or {}).get("tool_kind") == "playbook":
                followups.append(functools.partial(self._run_child_command, event))
            elif kind in ev.TERMINAL_TYPES:
                followups.append(functools.partial(self.engines.retire, event.execution_id))
                if engine.state.meta.get("parent_command_event_id") is not None:
                    followups.append(functools.partial(self._report_child, engine))
        self.dispatch.committed(engine, events)
        for listener in self._listeners:
            for event in events:
                try:
                    listener(event)
                except Exception:  # an observer must not stop the run
                    log.exception("event listener failed", extra={"event_id": event.event_id})

    def _run(self, followups: FollowUps) -> None:
        while followups:
            followups.popleft()()

    # ------------------------------------------------------------------ nested playbooks

    def _run_child_command(self, issued: Event) -> None:
        """A `kind: playbook` command: the orchestrator runs it by starting the child."""
        command = Command.from_event(issued)
        parent = self.engines.get(command.execution_id)
        if parent is None or parent.state.terminal or parent.state.failing:
            return
        current = parent.state.commands.get(command.command_id)
        if current is None:
            return
        if current.status == "issued":
            self.ingest([self._events.claimed(command), self._events.started(command)])
        config = command.tool_config if isinstance(command.tool_config, dict) else {}
        request = child_request(config)
        metadata = {**child_metadata(command, request), "parent_command_event_id": command.event_id}
        try:
            self.start_child(command.execution_id, request, metadata)
        except NoetlError as exc:
            self.ingest(self._events.failed(command, f"cannot start child playbook: {exc}"))

    def _report_child(self, child: Engine) -> None:
        """A native child ended: its outcome is the result of the parent's command."""
        state = child.state
        issued_id = state.meta.get("parent_command_event_id")
        if state.parent_execution_id is None or issued_id is None:
            return
        issued = self.store.get_event(int(issued_id))
        if issued is None:
            return
        command = Command.from_event(issued)
        if state.status == COMPLETED:
            events = self._events.finished(command, child.result(state.meta.get("return_step")), None)
        else:
            error = (
                f"child execution {state.execution_id} {state.status.lower()}: {state.error or 'no detail'}"
            )
            events = self._events.finished(command, None, error)
        try:
            self.ingest(events)
        except NotFound:
            log.warning("the parent of child execution %s is gone", state.execution_id)

    def _resume_child(self, parent_id: int, issued_id: int) -> None:
        """A native child command issued before a restart: start its child if none exists, or
        report the child's end if it ended while nobody listened."""
        issued = self.store.get_event(issued_id)
        if issued is None:
            return
        command_id = (issued.meta or {}).get("command_id")
        for summary in self.store.executions(parent_execution_id=parent_id, limit=10_000):
            child = self.engines.get(summary.execution_id)
            if child is not None and child.state.meta.get("parent_command_id") == command_id:
                if child.state.terminal:
                    self._report_child(child)
                return
        self._run_child_command(issued)

    # ------------------------------------------------------------------ cancelling

    def cancel(
        self, execution_id: int, reason: str = "cancelled by request", *, cascade: bool = True
    ) -> None:
        """Cancel a running execution (and, with `cascade`, its running children). Raises
        NotFound for an unknown execution and ValidationFailed for one that has ended."""
        followups: FollowUps = deque()
        with self.engines.lock(execution_id):
            engine = self.engines.get(execution_id)
            if engine is None:
                raise NotFound(f"execution {execution_id} not found")
            if engine.state.terminal:
                raise ValidationFailed(f"Cannot cancel execution in {engine.state.status} state")
            self._commit(engine, engine.cancel(reason), followups)
        self._run(followups)
        if cascade:
            self.cancel_children(execution_id, f"parent execution {execution_id} was cancelled")

    def cancel_children(self, execution_id: int, reason: str) -> None:
        for child in self.store.executions(parent_execution_id=execution_id, status=RUNNING, limit=10_000):
            try:
                self.cancel(child.execution_id, reason)
            except NoetlError:  # it ended meanwhile
                continue


def check_claim(engine: Engine, command_id: str, worker_id: str, *, posted: bool = False) -> bool:
    """Whether `worker_id` may claim the command now: True, False when it holds the claim
    already, or Conflict (someone else has it, it ended, the run was cancelled or is failing).
    A `posted` claim comes with the outcome of a command its worker ran from the notification:
    a failing (not yet ended) run still takes it, as it waited for it (`Engine.hand_over`)."""
    state = engine.state
    if state.status == CANCELLED or state.cancel_requested:
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
