"""How asyncio learns that a shell step's process exited, without a thread per process.

Python 3.11's default child watcher starts a thread for every subprocess (and waits for it to
start), which costs more than the fork itself on a busy machine. On Linux (pidfd_open, 5.3+)
the watcher installed here waits on a pidfd in the event loop that started the process, as
Python 3.12 does by default; elsewhere the default watcher stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVarTuple

log = logging.getLogger(__name__)

_installed = False
_Ts = TypeVarTuple("_Ts")
_guard = threading.Lock()


class LoopPidfdWatcher(asyncio.AbstractChildWatcher):
    """A child watcher that needs no thread and no attached loop: each process is watched by
    the loop running when it was started (so loops in several threads each watch their own)."""

    def __enter__(self) -> LoopPidfdWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def is_active(self) -> bool:
        return True

    def close(self) -> None:
        return None

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        return None

    def add_child_handler(self, pid: int, callback: Callable[[int, int, *_Ts], object], *args: *_Ts) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, loop, pid, pidfd, callback, args)

    def remove_child_handler(self, pid: int) -> bool:
        return True  # the handler goes when the process exits

    @staticmethod
    def _reap(
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pidfd: int,
        callback: Callable[..., object],
        args: tuple[Any, ...],
    ) -> None:
        loop.remove_reader(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = 255  # reaped elsewhere: its status is lost
            log.warning("child process %d was reaped elsewhere; its exit status is unknown", pid)
        finally:
            os.close(pidfd)
        callback(pid, code, *args)


def install() -> None:
    """Use `LoopPidfdWatcher` for this process's asyncio subprocesses (once; Linux only)."""
    global _installed
    if _installed:
        return
    with _guard:
        if _installed:
            return
        _installed = True
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
            return
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:
            return  # a kernel without pidfds: keep asyncio's default watcher
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                asyncio.get_event_loop_policy().set_child_watcher(LoopPidfdWatcher())
            except NotImplementedError:  # a policy without child watchers (not asyncio's own)
                return
