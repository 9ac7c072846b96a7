"""Per-execution advisory locks of `PostgresStore`, kept a moment after use.

Every server process serialises its work on an execution with a session-level advisory lock
(`pg_advisory_lock`), held on a connection of a small pool of its own. Taking and dropping it
cost two round trips per report; a sequential chain reports to the same server every few
milliseconds, so a lock is not dropped at once: it is parked (the connection keeps it) and the
next locked section of that execution in this process takes it back without a round trip.

A parked lock is dropped when it has been idle for `idle` seconds (a thread of this module
wakes up for it), when it has been held for `longest` seconds since it was taken (so another
process waiting for it gets it after at most that long, even while this one stays busy), or
when more than `most` locks are parked. An execution another process writes to as well (its
write sequence moved on while this process did not hold the lock) is not parked for
`SHARED_SECONDS` after that is seen: two servers sharing a run (their workers report to
both) hand its lock back and forth at once, as without parking. Holding a lock longer changes no guarantee: whoever
holds it is still the only writer of that execution; a process that dies drops its locks with
its sessions. A parked lock's connection that broke is not trusted: the lock is taken again.

While an execution is locked, the locking thread writes its events on the lock's own connection
(`connection_of`), so the write and the lock share a session and a dead session cannot go
unnoticed (the write fails).
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

Connection = psycopg.Connection[TupleRow]

POOL_SIZE: Final = 20  # execution locks held at once by one process (parked ones included)
WAIT_SECONDS: Final = 60.0  # for a free connection of the pool
IDLE_SECONDS: Final = 0.025  # a parked lock is dropped after this long unused
LONGEST_SECONDS: Final = 0.1  # nor kept past this long after it was taken
MOST_PARKED: Final = 4
SHARED_SECONDS: Final = 10.0  # an execution other processes write to: its lock is not kept


@dataclass(eq=False)
class Lease:
    """One execution's lock: the connection holding it and the execution's write sequence."""

    execution_id: int
    key: tuple[int, int]
    conn: Connection
    seq: int
    taken: float  # monotonic time the lock was granted
    owner: int = field(default_factory=threading.get_ident)
    idle_until: float = 0.0
    kept: bool = False  # taken back from the parked locks (no round trip)


class ExecutionLocks:
    def __init__(
        self,
        url: str,
        kwargs: dict[str, Any],
        *,
        schema: str,
        get_write_seq: str,
        configure: Callable[[Connection], None],
        idle: float | None = None,
        longest: float | None = None,
        most: int | None = None,
    ) -> None:
        """`idle`, `longest`, `most`: see the module (defaults: the module's constants)."""
        self._namespace = zlib.crc32(f"{schema}.execution".encode()) & 0x7FFFFFFF
        self._get_write_seq = get_write_seq
        self.idle = IDLE_SECONDS if idle is None else idle
        self.longest = LONGEST_SECONDS if longest is None else longest
        self.most = MOST_PARKED if most is None else most
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=0,
            max_size=POOL_SIZE,
            open=True,
            configure=configure,
            name=f"noetl-locks-{schema}",
            timeout=WAIT_SECONDS,
        )
        self._parked: dict[int, Lease] = {}
        self._shared: dict[int, float] = {}  # execution -> until when its lock is not kept
        self._held: dict[int, Lease] = {}  # locked sections in progress
        self._cond = threading.Condition()
        self._closed = False
        self._sweeper: threading.Thread | None = None
        self._sweeper_due: float | None = None  # when the sweeper wakes up next (None: when told)

    def take(self, execution_id: int) -> Lease:
        """Lock the execution (blocking while another process holds it): a parked lock of this
        process, or a new one with the write sequence read right after it was granted."""
        with self._cond:
            lease = self._parked.pop(execution_id, None)
        if lease is not None and not lease.conn.broken and not lease.conn.closed:
            lease.owner, lease.kept = threading.get_ident(), True
            self._held[execution_id] = lease
            return lease
        if lease is not None:
            self._pool.putconn(lease.conn)  # its session is gone, and the lock with it
        key = (self._namespace, execution_id & 0x7FFFFFFF)
        conn = self._pool.getconn()
        try:
            # The write sequence comes with the lock (one round trip, two statements in a
            # pipeline). It must be a second statement: a subquery of the locking statement
            # would read a snapshot taken before the lock was granted, missing the write of the
            # process that held it.
            with conn.pipeline():
                conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
                cur = conn.execute(self._get_write_seq, (execution_id,))
            row = cur.fetchone()
        except BaseException:
            self._pool.putconn(conn)
            raise
        lease = Lease(execution_id, key, conn, int(row[0]) if row is not None else 0, time.monotonic())
        self._held[execution_id] = lease
        return lease

    def connection_of(self, execution_id: int) -> Connection | None:
        """The lock's connection when the calling thread holds the execution's lock."""
        lease = self._held.get(execution_id)
        if lease is None or lease.owner != threading.get_ident():
            return None
        return lease.conn

    def give_back(self, lease: Lease, seq: int) -> None:
        """End a locked section; `seq` is the execution's write sequence now. The lock is parked
        when it may be, else dropped."""
        self._held.pop(lease.execution_id, None)
        lease.seq = seq
        now = time.monotonic()
        healthy = (
            not lease.conn.broken and lease.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        shared = self._shared.get(lease.execution_id, 0.0) > now
        if healthy and not shared and now - lease.taken < self.longest:
            lease.idle_until = now + self.idle
            with self._cond:
                if not self._closed and len(self._parked) < self.most:
                    self._parked[lease.execution_id] = lease
                    # Deadlines only grow: the sweeper needs waking only when it waits for none
                    # (it is woken early otherwise, and waits again for the rest).
                    if self._sweeper_due is None:
                        self._sweeper_due = lease.idle_until
                        self._start_sweeper()
                        self._cond.notify()
                    return
        self._drop(lease)

    def shared(self, execution_id: int) -> None:
        """Another process writes to this execution too (seen when the lock was taken): its
        lock is not kept for a while, so the other process never waits for an idle one."""
        now = time.monotonic()
        with self._cond:
            if len(self._shared) > 10_000:
                self._shared = {k: v for k, v in self._shared.items() if v > now}
            self._shared[execution_id] = now + SHARED_SECONDS

    def close(self) -> None:
        """Drop the parked locks and close the pool."""
        with self._cond:
            self._closed = True
            parked, self._parked = list(self._parked.values()), {}
            self._cond.notify()
        for lease in parked:
            self._drop(lease)
        self._pool.close()

    def _drop(self, lease: Lease) -> None:
        if not lease.conn.broken and not lease.conn.closed:
            with contextlib.suppress(psycopg.Error):
                if lease.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    lease.conn.rollback()
                lease.conn.execute("SELECT pg_advisory_unlock(%s, %s)", lease.key)
        self._pool.putconn(lease.conn)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:  # under self._cond
            self._sweeper = threading.Thread(target=self._sweep, name="noetl-lock-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep(self) -> None:
        """Drop parked locks once idle past their time."""
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [lease for lease in self._parked.values() if lease.idle_until <= now]
                for lease in due:
                    del self._parked[lease.execution_id]
                if not due:
                    nearest = min((lease.idle_until for lease in self._parked.values()), default=None)
                    if nearest is None and self._held:  # in use: likely parked again soon
                        nearest = now + self.idle
                    self._sweeper_due = nearest
                    self._cond.wait(None if nearest is None else nearest - now)
                    continue
            for lease in due:
                self._drop(lease)
