"""Snowflake ids: 41-bit milliseconds since 2024-01-01 UTC, 10-bit node, 12-bit sequence.

`default_ids`, the process's shared generator, is built once here with the configured node
(`NOETL_SNOWFLAKE_NODE_ID`, via `noetl.settings`); `Snowflake` itself takes its node explicitly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from noetl.settings import settings

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
_NODE_BITS = 10
_SEQ_BITS = 12
_MAX_SEQ = (1 << _SEQ_BITS) - 1


class Snowflake:
    """Thread-safe generator of monotonically increasing 63-bit ids."""

    def __init__(self, node: int | None = None) -> None:
        """`node` in 0..1023; None: `node_id()`, derived from the process id."""
        if node is None:
            node = node_id()
        if not 0 <= node < (1 << _NODE_BITS):
            raise ValueError(f"snowflake node must be in 0..1023, got {node}")
        self.node = node
        self._last_ms = 0
        self._seq = 0
        self._floor = 0  # every id generated from now on is greater (see `observe`)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            now = time.time_ns() // 1_000_000
            if now < self._last_ms:  # clock went backwards: keep ids increasing
                now = self._last_ms
            if now == self._last_ms:
                self._seq = (self._seq + 1) & _MAX_SEQ
                if self._seq == 0:  # sequence exhausted in this millisecond
                    now = self._last_ms + 1
            else:
                self._seq = 0
            self._last_ms = now
            made = ((now - EPOCH_MS) << (_NODE_BITS + _SEQ_BITS)) | (self.node << _SEQ_BITS) | self._seq
            if made > self._floor:
                return made
            # An observed id of another node is ahead (same millisecond, higher node bits, or a
            # clock ahead of ours): continue from the millisecond after it.
            self._last_ms = (self._floor >> (_NODE_BITS + _SEQ_BITS)) + EPOCH_MS + 1
            self._seq = 0
            return ((self._last_ms - EPOCH_MS) << (_NODE_BITS + _SEQ_BITS)) | (self.node << _SEQ_BITS)

    __call__ = next

    def observe(self, event_id: int) -> None:
        """Generate only ids greater than `event_id` from now on: an id another process made
        (a worker's report, a command another server issued) orders before every event this
        generator makes in reaction to it, although both are made in the same millisecond."""
        if event_id > self._floor:
            with self._lock:
                self._floor = max(self._floor, event_id)

    def use_node(self, node: int) -> None:
        """Generate ids with node bits `node` from now on (a node leased from the store)."""
        if not 0 <= node < (1 << _NODE_BITS):
            raise ValueError(f"snowflake node must be in 0..1023, got {node}")
        with self._lock:
            self.node = node


def observe(ids: Callable[[], int], event_id: int) -> None:
    """`Snowflake.observe` when `ids` is a snowflake generator (other id sources, such as a test's
    counter, are left as they are)."""
    if isinstance(ids, Snowflake):
        ids.observe(event_id)


def node_id(configured: int | None = None) -> int:
    """The node bits for a configured node id (any integer, taken modulo 1024), else for the
    process id."""
    return (os.getpid() if configured is None else configured) % (1 << _NODE_BITS)


default_ids = Snowflake(node_id(settings().snowflake_node_id))
