"""One command as a child process, watched by the event loop without asyncio's subprocess layer.

asyncio's subprocess support builds a transport, a protocol, a transport and a stream reader
per pipe, and tasks to drain them: about eighteen turns of the loop and ~1 ms of CPU for a
command that does nothing. Here the process is started with `subprocess.Popen` (vfork + exec,
as asyncio does), its output pipes are read by the loop as they become readable, and its exit is
seen on a pidfd (Linux 5.3+; `available()` says whether this path can be used).

The process leads its own session (process group): a timeout or a cancel kills the whole group.
After the process exits, output still buffered is read for up to `drain_after_exit` seconds
(a background child may hold the pipes open; its output past that is not waited for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

_READ_CHUNK = 64 * 1024


def available() -> bool:
    return hasattr(os, "pidfd_open")


@dataclass
class Finished:
    exit_code: int | None
    stdout: bytearray
    stderr: bytearray
    timed_out: bool = False


class _Watch:
    """The loop's view of one running process: its two pipes and its pidfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes], limit: int) -> None:
        self.loop, self.proc, self.limit = loop, proc, limit
        self.result = Finished(None, bytearray(), bytearray())
        self.pipes: dict[int, bytearray] = {}
        self.dropped: dict[int, int] = {}  # pipe -> bytes past the limit, not kept
        self.exited = loop.create_future()
        self.drained = loop.create_future()
        self.pidfd = os.pidfd_open(proc.pid)
        loop.add_reader(self.pidfd, self._exit)

    def watch(self, fd: int, sink: bytearray) -> None:
        os.set_blocking(fd, False)
        self.pipes[fd] = sink
        self.loop.add_reader(fd, self._read, fd)

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_pipe(fd)
            return
        sink = self.pipes[fd]
        room = self.limit - len(sink)
        if room > 0:
            sink += chunk[:room]
        if len(chunk) > room:
            self.dropped[fd] = self.dropped.get(fd, 0) + len(chunk) - max(room, 0)

    def _close_pipe(self, fd: int) -> None:
        self.loop.remove_reader(fd)
        os.close(fd)
        sink = self.pipes.pop(fd)
        dropped = self.dropped.get(fd)
        if dropped:
            sink += f"\n... [{dropped} bytes dropped] ...\n".encode()
        if not self.pipes:
            _settle(self.drained)

    def _exit(self) -> None:
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1
        self.result.exit_code = self.proc.wait()
        _settle(self.exited)

    def expire(self) -> None:
        """The time limit passed: kill the process group (its exit ends the wait)."""
        self.result.timed_out = True
        self.kill()

    def give_up_draining(self) -> None:
        _settle(self.drained)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop watching (pipes still open are closed; a process still running is killed)."""
        for fd in list(self.pipes):
            self._close_pipe(fd)
        if self.pidfd >= 0:
            self.kill()
            self._exit()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: dict[str, str] | None,
    timeout: float | None,
    limit: int,
    drain_after_exit: float,
) -> Finished:
    """Run `argv` to its end (or its timeout: the group is killed); keeps up to `limit` bytes of
    each stream. OSError when it cannot start. Cancelling kills the process group."""
    loop = asyncio.get_running_loop()
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    watch = _Watch(loop, proc, limit)
    watch.watch(out_r, watch.result.stdout)
    watch.watch(err_r, watch.result.stderr)
    timer = loop.call_later(timeout, watch.expire) if timeout is not None else None
    try:
        await watch.exited
        if watch.pipes:
            give_up = loop.call_later(drain_after_exit, watch.give_up_draining)
            await watch.drained
            give_up.cancel()
    except BaseException:  # cancelled: do not leave the process running
        watch.kill()
        raise
    finally:
        if timer is not None:
            timer.cancel()
        watch.close()
    return watch.result
