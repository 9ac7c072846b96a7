"""Handing commands to workers: the pending list polling workers read, claims (one or many at a
time), and what a worker's heartbeat renews or is told to stop.

A claim is a `command.claimed` event, decided under the execution's lock: a command is claimed
once (claiming again is idempotent for the same worker), never on a cancelled, ended or failing
run. On a store other servers share, the pending list is checked against the log first, so
commands claimed through another server are not offered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.engine.machine import Engine
from noetl.errors import Conflict, NotFound
from noetl.runtime.control.leases import Leases
from noetl.runtime.control.offers import Offers
from noetl.runtime.orchestrator import Orchestrator, check_claim
from noetl.worker.command import Command, CommandEvents, command_body

MAX_PENDING_CHECKS = 5  # rounds of checking pending candidates against the log per poll


class Claims:
    def __init__(self, orchestrator: Orchestrator, offers: Offers, leases: Leases, server_url: str) -> None:
        self.orchestrator = orchestrator
        self.offers = offers
        self.leases = leases
        self.server_url = server_url
        self.store = orchestrator.store

    # ------------------------------------------------------------------ pending

    def pending(self, pools: list[str] | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """Commands nobody claimed yet (for workers polling without NATS), oldest first."""
        found: list[Event] = []
        for _ in range(MAX_PENDING_CHECKS):
            found = self.offers.available(pools, limit)
            if not self.store.shared or not self.reconcile(found):
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

    def reconcile(self, candidates: list[Event] | None = None) -> bool:
        """Withdraw offered commands another server claimed or finished: each server's index only
        sees its own writes, so it is checked against the (caught-up) log. Returns whether any
        was withdrawn."""
        if candidates is None:
            candidates = self.offers.all()
        by_execution: dict[int, list[Event]] = {}
        for event in candidates:
            by_execution.setdefault(event.execution_id, []).append(event)
        engines = self.orchestrator.engines
        dropped = False
        for execution_id, events in by_execution.items():
            with engines.lock(execution_id):
                engine = engines.get(execution_id)
                for event in events:
                    command_id = str((event.meta or {}).get("command_id"))
                    current = engine.state.commands.get(command_id) if engine is not None else None
                    if (
                        engine is None
                        or engine.state.terminal
                        or current is None
                        or current.status != "issued"
                    ):
                        self.offers.withdraw_event(event.event_id)
                        dropped = True
        return dropped

    # ------------------------------------------------------------------ claims

    def issued_event(self, event_id: int) -> Event | None:
        """A `command.issued` event: from the offers when it is there, else the store."""
        event = self.offers.find(event_id)
        if event is not None:
            return event
        event = self.store.get_event(event_id)
        return event if event is not None and event.event_type == ev.COMMAND_ISSUED else None

    def command(self, event_id: int) -> dict[str, Any]:
        event = self.store.get_event(event_id)
        if event is None or event.event_type != ev.COMMAND_ISSUED:
            raise NotFound(f"command.issued event not found: {event_id}")
        return command_body(event)

    def claim(self, event_id: int, worker_id: str) -> dict[str, Any]:
        """Claim one command: its body, or Conflict/NotFound."""
        event = self.issued_event(event_id)
        if event is None:
            raise NotFound(f"command.issued event not found: {event_id}")
        if self.orchestrator.engines.get(event.execution_id) is None:
            raise NotFound(f"execution {event.execution_id} not found")
        self.orchestrator.react(event.execution_id, self._claimer([event], worker_id, strict=True))
        return {"status": "ok", **command_body(event)}

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
        commands of one execution are claimed under one lock and written together."""
        if event_ids is None:
            event_ids = [int(item["event_id"]) for item in self.pending(pools, limit=limit)]
        by_execution: dict[int, list[Event]] = {}
        for event_id in event_ids[:limit]:
            event = self.issued_event(event_id)
            if event is not None:
                by_execution.setdefault(event.execution_id, []).append(event)
        claimed: list[dict[str, Any]] = []
        for execution_id, issued in by_execution.items():
            won: list[Event] = []
            self.orchestrator.react(execution_id, self._claimer(issued, worker_id, won=won))
            claimed.extend({"status": "ok", **command_body(event)} for event in won)
        return claimed

    def _claimer(
        self, issued: list[Event], worker_id: str, *, strict: bool = False, won: list[Event] | None = None
    ) -> Callable[[Engine], list[Event]]:
        """The decision that claims `issued` for `worker_id` (run under the execution's lock).
        `strict`: a refused claim raises Conflict; else it is skipped (and withdrawn)."""
        events = CommandEvents(ids=self.orchestrator.ids, worker_id=worker_id)

        def decide(engine: Engine) -> list[Event]:
            out: list[Event] = []
            for event in issued:
                command_id = str((event.meta or {}).get("command_id"))
                try:
                    if not check_claim(engine, command_id, worker_id):
                        continue  # this worker holds it already: not handed out a second time
                except Conflict:
                    if strict:
                        raise
                    self.offers.withdraw_event(event.event_id)  # claimed or ended elsewhere
                    continue
                claimed = events.claimed(Command.from_event(event))
                self.orchestrator.stamp(engine, claimed)
                out.append(claimed)
                out.extend(engine.react(claimed))
                if won is not None:
                    won.append(event)
            return out

        return decide

    # ------------------------------------------------------------------ workers

    def heartbeat(self, worker_id: str, command_ids: list[str] | None = None) -> int:
        """A live worker renews the leases of the commands it holds; returns how many."""
        return self.leases.renew(worker_id, command_ids)

    def stopped_commands(self, command_ids: list[str]) -> list[str]:
        """Of the commands a worker runs, those whose execution was cancelled or has ended: the
        worker is told (in the heartbeat answer) to stop them."""
        stopped: list[str] = []
        for command_id in command_ids:
            head = command_id.split(":", 1)[0]
            if not head.isdigit():
                continue
            engine = self.orchestrator.engines.get(int(head))
            if engine is not None and engine.state.terminal:
                stopped.append(command_id)
        return stopped

    def release_worker(self, worker_id: str, kind: str = "worker_pool") -> int:
        """A worker that left (deregistered or declared dead): its commands are issued again now."""
        self.store.remove_worker(worker_id, kind)
        return self.leases.release(worker_id)
