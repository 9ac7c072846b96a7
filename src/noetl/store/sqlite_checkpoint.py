"""WAL checkpoints of a SQLite file, taken by a background thread instead of by commits.

With `synchronous=NORMAL` a commit only appends to the write-ahead log; the cost is the
checkpoint that copies the log into the database file and syncs it, which SQLite runs inside
whichever commit crosses `wal_autocheckpoint` pages (one commit in a few hundred pays ~20 ms).
`Checkpointer` runs passive checkpoints on a connection of its own a few times a second, so
that sync happens beside the writer (the sqlite3 module releases the GIL while SQLite works).
The writer's own automatic checkpoint stays on with a larger threshold (`SAFETY_PAGES`): if the
thread falls behind, the log still cannot grow without bound.

The thread starts on the first write (`ensure_started`), not when the store opens: a process
that forks right after opening its store (the python-tool fork server) forks without it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 0.2
SAFETY_PAGES = 16_384  # the writer's own checkpoint threshold (~64 MB of log at 4 KB pages)


class Checkpointer:
    """Passive checkpoints of the WAL of `path` every `interval` seconds, until `stop`."""

    def __init__(self, path: str, interval: float = INTERVAL_SECONDS) -> None:
        self.path = path
        self.interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.checkpoints = 0  # turns that moved log frames into the database file

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ensure_started(self) -> None:
        if self._thread is not None or self._stopping.is_set():
            return
        with self._start_lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="noetl-sqlite-checkpoint", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for a checkpoint in progress (the store closes after)."""
        self._stopping.set()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:  # the writer's own checkpoints still run
            log.warning("background checkpoints of %s are off: %s", self.path, exc)
            return
        try:
            while not self._stopping.wait(self.interval):
                try:
                    _busy, _frames, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if moved > 0:
                        self.checkpoints += 1
                except sqlite3.Error as exc:  # busy or I/O: the next turn (or the writer) retries
                    log.debug("checkpoint of %s skipped: %s", self.path, exc)
        finally:
            conn.close()
