"""Coordination for a store that one process owns (memory, SQLite): nobody else writes to it,
so the cross-process lock is a no-op, this process is always the leader, cached state is never
stale, and execute dedup keys live in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

from noetl.engine.events import Event
from noetl.errors import StoreError


class SoloCoordination:
    """The `Coordination` port for a single-process store (mixed into its adapter)."""

    shared = False

    def __init__(self) -> None:
        self._dedup: dict[tuple[int, str], tuple[int, float]] = {}
        self._dedup_guard = threading.Lock()
        self._nodes = NodeLeases()

    def execution_lock(self, execution_id: int) -> AbstractContextManager[None]:
        return nullcontext()

    def claim_dedup(self, scope: int, key: str, window_secs: int, execution_id: int) -> int | None:
        now = time.monotonic()
        with self._dedup_guard:
            seen = self._dedup.get((scope, key))
            if seen is not None and now - seen[1] <= window_secs:
                return seen[0]
            self._dedup[(scope, key)] = (execution_id, now)
            if len(self._dedup) > 10_000:  # forget keys whose window is long over
                self._dedup = {k: v for k, v in self._dedup.items() if now - v[1] <= 86_400}
        return None

    def try_leadership(self, role: str) -> bool:
        return True

    def is_stale(self, execution_id: int) -> bool:
        return False

    def unseen(self, execution_id: int) -> list[Event] | None:
        return []

    def mark_current(self, execution_id: int) -> None:
        return None

    def lease_node(self, owner: str, ttl_seconds: float) -> int:
        return self._nodes.lease(owner, ttl_seconds)

    def release_node(self, owner: str) -> None:
        self._nodes.release(owner)


NODES = 1024


class NodeLeases:
    """Snowflake node leases kept in memory: {owner: (node, expires)}."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[int, float]] = {}
        self._guard = threading.Lock()

    def lease(self, owner: str, ttl_seconds: float) -> int:
        now = time.monotonic()
        with self._guard:
            self._held = {o: held for o, held in self._held.items() if held[1] > now or o == owner}
            current = self._held.get(owner)
            node = current[0] if current is not None else free_node(n for n, _ in self._held.values())
            self._held[owner] = (node, now + ttl_seconds)
            return node

    def release(self, owner: str) -> None:
        with self._guard:
            self._held.pop(owner, None)


def free_node(taken: Iterable[int]) -> int:
    """The lowest node number not in `taken`; StoreError when all 1024 are."""
    used = set(taken)
    for node in range(NODES):
        if node not in used:
            return node
    raise StoreError(
        "all 1024 snowflake node numbers are leased; stop idle processes or wait for leases to lapse"
    )
