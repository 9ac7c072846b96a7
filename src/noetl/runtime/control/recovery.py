"""Keeping work moving when workers or servers go away: the periodic reap (expired leases are
issued again, unclaimed commands notified again, bus holds taken back) and the recovery of
running executions when a server starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from noetl.engine.events import Event
from noetl.engine.machine import Engine
from noetl.runtime.control.claims import Claims
from noetl.runtime.control.leases import Leases
from noetl.runtime.control.offers import Offers
from noetl.runtime.orchestrator import ENGINE_WORKER, Orchestrator
from noetl.status import RUNNING
from noetl.store.ports import WorkerRecord

log = logging.getLogger(__name__)

RECOVERY_PAGE = 500


class Recovery:
    def __init__(
        self,
        orchestrator: Orchestrator,
        offers: Offers,
        leases: Leases,
        claims: Claims,
        live_workers: Callable[[], list[WorkerRecord]],
    ) -> None:
        self.orchestrator = orchestrator
        self.offers = offers
        self.leases = leases
        self.claims = claims
        self.live_workers = live_workers
        self.store = orchestrator.store

    def reap(self) -> dict[str, int]:
        """Issue again the commands whose worker stopped heartbeating, and re-notify commands
        nobody claimed. Every server checks the claims made through it; the leader (one server
        per store) also checks claims made through servers that may be gone."""
        now = time.monotonic()
        alive = {w.name for w in self.live_workers()}
        expired = self.leases.expired(alive)
        reissued = sum(self.expire(lease.execution_id, cid, lease.worker_id) for cid, lease in expired)
        if self.store.shared:
            self.claims.reconcile()
        if self.store.try_leadership("reaper"):
            reissued += self._reap_foreign_claims(alive)
        for event in self.offers.expired_holds(now):
            self._take_back(event.execution_id, str((event.meta or {}).get("command_id")))
        renotified = self.offers.renotify_stale(now)
        return {"reissued": reissued, "renotified": renotified}

    def _take_back(self, execution_id: int, command_id: str) -> None:
        """No worker claimed a command handed over with its notification: a failing run stops
        waiting for it (the cached engine only: a hand-over is not in the log)."""
        if self.orchestrator.engines.cached(execution_id) is not None:
            self.orchestrator.react(execution_id, lambda engine: engine.take_back(command_id))

    def expire(self, execution_id: int, command_id: str, worker_id: str) -> int:
        """Issue a command again (or fail its step after max_attempts): its worker is gone."""
        reason = f"worker {worker_id} stopped renewing its lease ({self.leases.lease_seconds:g} s)"

        def decide(engine: Engine) -> list[Event]:
            if command_id not in engine.state.commands:
                return []
            return engine.expire(command_id, reason=reason)

        return 1 if self.orchestrator.react(execution_id, decide) else 0

    def _reap_foreign_claims(self, alive: set[str]) -> int:
        """Claims made through other servers: expire those whose worker is not alive any more
        (not heartbeating anywhere, and claimed longer than a lease ago)."""
        watched = self.leases.watched()
        cutoff = time.time() - self.leases.lease_seconds
        reissued = 0
        for summary in self.store.executions(status=RUNNING, limit=10_000):
            engine = self.orchestrator.engines.cached(summary.execution_id)
            if engine is None:
                continue  # not known here yet; its own server watches it, or recover() loads it
            for command in list(engine.state.commands.values()):
                if command.status == "issued" or command.command_id in watched:
                    continue
                worker = command.worker_id or ""
                if worker == ENGINE_WORKER or worker in alive:
                    continue
                claimed = command.claimed_at.timestamp() if command.claimed_at else 0.0
                if claimed >= cutoff:
                    continue
                reissued += self.expire(summary.execution_id, command.command_id, worker)
        return reissued

    def recover(self) -> int:
        """After a server start: rebuild every running execution from the log, settle what was
        derived but not logged, put unclaimed commands back on offer and give claimed ones a
        fresh lease (their workers renew it, or it expires and they are issued again)."""
        recovered = 0
        offset = 0
        while True:
            page = self.store.executions(status=RUNNING, limit=RECOVERY_PAGE, offset=offset)
            if not page:
                break
            offset += len(page)
            for summary in page:
                engine = self.orchestrator.resume(summary.execution_id)
                if engine is None:
                    continue
                recovered += 1
                self._reoffer(engine)
        return recovered

    def _reoffer(self, engine: Engine) -> None:
        for command in engine.open_commands():
            if command.kind == "playbook":
                continue  # the orchestrator resumed it
            if command.status != "issued":
                self.leases.grant(command.command_id, engine.execution_id, command.worker_id or "unknown")
                continue
            issued = self.store.get_event(command.event_id)
            if issued is not None:
                self.offers.offer(issued, again=True)
