"""Claims carry a lease: the claiming worker renews it with its heartbeats; a command whose
worker stopped heartbeating (or deregistered) is issued again (attempt + 1, up to max_attempts).

Every server watches the claims made through it. Claims made through another server are watched
by the leader (one server per store), which expires those whose worker is not alive anywhere:
the worker registry in the store is shared by every server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

DEFAULT_LEASE_SECONDS = 30.0


@dataclass
class Lease:
    execution_id: int
    worker_id: str
    deadline: float  # time.monotonic()


class Leases:
    """The leases of the claims made through this server (thread-safe)."""

    def __init__(self, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.lease_seconds = lease_seconds
        self._leases: dict[str, Lease] = {}  # command_id -> lease of the worker that claimed it
        self._departed: set[str] = set()  # workers that deregistered: their leases end now
        self._reported: dict[str, set[str]] = {}  # worker -> the commands its last heartbeat listed
        self._guard = threading.Lock()

    def grant(self, command_id: str, execution_id: int, worker_id: str) -> None:
        with self._guard:
            self._leases[command_id] = Lease(execution_id, worker_id, time.monotonic() + self.lease_seconds)

    def drop(self, command_id: str) -> None:
        with self._guard:
            self._leases.pop(command_id, None)

    def held(self) -> dict[str, Lease]:
        """A snapshot of the leases: command_id -> lease (who runs what, for observers)."""
        with self._guard:
            return dict(self._leases)

    def watched(self) -> set[str]:
        with self._guard:
            return set(self._leases)

    def renew(self, worker_id: str, command_ids: list[str] | None = None) -> int:
        """A live worker renews the leases of the commands it holds; returns how many. When it
        says what it runs (`command_ids`), a claim it does not list (its answer was lost) is not
        renewed by its liveness any more, so it expires."""
        deadline = time.monotonic() + self.lease_seconds
        renewed = 0
        with self._guard:
            if command_ids is not None:
                self._reported[worker_id] = set(command_ids)
            for command_id, lease in self._leases.items():
                if lease.worker_id == worker_id and (command_ids is None or command_id in command_ids):
                    lease.deadline = deadline
                    renewed += 1
        return renewed

    def release(self, worker_id: str) -> int:
        """A worker left: its leases end now (they are expired at the next reap)."""
        with self._guard:
            held = [lease for lease in self._leases.values() if lease.worker_id == worker_id]
            for lease in held:
                lease.deadline = 0.0
            self._departed.add(worker_id)
        return len(held)

    def expired(self, alive: set[str]) -> list[tuple[str, Lease]]:
        """Take out the leases that ran out: a lease of a worker still heartbeating (through
        another server) that still runs the command is renewed instead."""
        now = time.monotonic()
        expired: list[tuple[str, Lease]] = []
        with self._guard:
            for command_id, lease in [(c, held) for c, held in self._leases.items() if held.deadline <= now]:
                reported = self._reported.get(lease.worker_id)
                if (
                    lease.worker_id in alive
                    and lease.worker_id not in self._departed
                    and (reported is None or command_id in reported)
                ):
                    lease.deadline = now + self.lease_seconds
                else:
                    del self._leases[command_id]
                    expired.append((command_id, lease))
        return expired
