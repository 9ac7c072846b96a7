"""Coordination for a store that one process owns (memory, SQLite): nobody else writes to it,
so the cross-process lock is a no-op, this process is always the leader, cached state is never
stale, and execute dedup keys live in this process."""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext


class SoloCoordination:
    """The `Coordination` port for a single-process store (mixed into its adapter)."""

    shared = False

    def __init__(self) -> None:
        self._dedup: dict[tuple[int, str], tuple[int, float]] = {}
        self._dedup_guard = threading.Lock()

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

    def mark_current(self, execution_id: int) -> None:
        return None
