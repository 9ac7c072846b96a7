"""The processes python steps run in: user code never runs in the process that orchestrates (the
local runtime, the server, a worker's event loop).

A pool of warm processes, forked by a zygote (`noetl.tools.pyzygote`, a small single-threaded fork
server with the python tool's runtime imported, so a new process costs a few milliseconds), each
taking one job at a time over a socket and reused between steps. A process that dies while running
a step (`os._exit`, a segfault, the kernel's OOM killer) fails that step with an error naming its
exit code or signal; one running past its timeout, or whose step is cancelled, is killed at once
(with everything it started: it leads its own process group). Such a process is never reused.

Each process runs under an address-space limit (NOETL_TOOL_MEMORY_MB, or a step's own
`spec.max_memory_mb`; processes are kept per limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from noetl.tools import failure
from noetl.tools.pychannel import receive_message, send_message
from noetl.tools.pychild import Job, Outcome, dump_job, load_outcome
from noetl.tools.pyzygote import BOOT

log = logging.getLogger(__name__)

MAX_IDLE = 32  # warm processes kept


class _Died(Exception):
    """The process ended while running a job."""


class Zygote:
    """The parent's side of the fork server (thread-safe; one request at a time).

    The zygote is forked from this process by `fork_early` (the CLI does it at start-up, while the
    process has no threads: a fork costs a millisecond or two and shares the imported modules), or
    else started as a new interpreter on first use."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._pid: int | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._replies = b""

    def fork_early(self) -> None:
        """Fork the zygote from this process now (call it only while no other thread runs)."""
        from noetl.tools import pyzygote

        with self._guard:
            if self._alive():
                return
            self._stop()
            ours, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the zygote
                try:
                    ours.close()
                    os.setsid()
                    pyzygote.main(theirs.detach())
                finally:
                    os._exit(0)
            theirs.close()
            self._pid, self._control, self._replies = pid, ours, b""

    def spawn(self, memory_bytes: int | None) -> tuple[int, Connection]:
        """A new tool process: its pid and the parent's end of its channel."""
        ours, theirs = socket.socketpair()
        try:
            with self._guard:
                answer = self._ask({"op": "spawn", "memory": memory_bytes}, [theirs.fileno()])
        finally:
            theirs.close()
        return int(answer["pid"]), Connection(ours.detach())

    def wait(self, pid: int) -> int | None:
        """The exit code of an ended process (negative: the signal that killed it)."""
        with self._guard:
            code = self._ask({"op": "wait", "pid": pid}, []).get("code")
        return int(code) if code is not None else None

    def _ask(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        for attempt in (1, 2):
            control = self._running()
            try:
                socket.send_fds(control, [json.dumps(request).encode()], fds)
                return self._reply(control)
            except OSError:
                if attempt == 2:
                    raise
                self._stop()  # the zygote died: start a new one and ask again
        raise AssertionError("unreachable")

    def _reply(self, control: socket.socket) -> dict[str, Any]:
        while b"\n" not in self._replies:
            chunk = control.recv(4096)
            if not chunk:
                raise OSError("the python-tool fork server went away")
            self._replies += chunk
        line, _, self._replies = self._replies.partition(b"\n")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _alive(self) -> bool:
        if self._control is None or self._pid is None:
            return False
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            return os.waitpid(self._pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def _running(self) -> socket.socket:
        if self._alive() and self._control is not None:
            return self._control
        self._stop()
        ours, theirs = socket.socketpair()
        self._popen = subprocess.Popen(
            [sys.executable, "-c", BOOT, str(theirs.fileno()), json.dumps(sys.path)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the terminal is the parent's to handle
        )
        theirs.close()
        self._pid, self._control, self._replies = self._popen.pid, ours, b""
        return ours

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the zygote ends when its parent hangs up
            self._control = None
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                if self._popen is not None:
                    self._popen.wait()
                else:
                    os.waitpid(self._pid, 0)
        self._pid = self._popen = None

    def close(self) -> None:
        with self._guard:
            self._stop()


@dataclass(eq=False)
class _Process:
    pid: int
    conn: Connection
    memory_mb: int | None
    # The event loop watching the channel (a reader stays registered between jobs) and the
    # answer the current job waits for.
    loop: asyncio.AbstractEventLoop | None = None
    answer: asyncio.Future[Outcome] | None = None

    async def ask(self, job: Job, timeout: float | None = None) -> Outcome:
        """Send a job and wait for its outcome (_Died when the process ends meanwhile,
        TimeoutError after `timeout` seconds)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self._unwatch()
            loop.add_reader(self.conn.fileno(), self._readable)
            self.loop = loop
        answer: asyncio.Future[Outcome] = loop.create_future()
        self.answer = answer
        send_message(self.conn, dump_job(job))
        # A timer of the loop's own: cheaper than asyncio.timeout per job, the same effect.
        timer = loop.call_later(timeout, _expire, answer) if timeout is not None else None
        try:
            return await answer
        finally:
            self.answer = None
            if timer is not None:
                timer.cancel()

    def _readable(self) -> None:
        try:
            outcome = load_outcome(receive_message(self.conn))
        except (EOFError, OSError):
            self._unwatch()  # ended: nothing more will come
            if self.answer is not None and not self.answer.done():
                self.answer.set_exception(_Died())
            return
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(outcome)

    def _unwatch(self) -> None:
        if self.loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self.loop.remove_reader(self.conn.fileno())
            self.loop = None

    def kill(self) -> None:
        """Kill the process and what it started (it leads its own process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if not self.conn.closed:
            self._unwatch()
            self.conn.close()


class ProcessPool:
    def __init__(self, *, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self.zygote = Zygote()
        self._idle: list[_Process] = []
        self._guard = threading.Lock()

    def _start(self, memory_mb: int | None) -> _Process:
        pid, conn = self.zygote.spawn(memory_mb * 1024 * 1024 if memory_mb else None)
        return _Process(pid, conn, memory_mb)

    def _idle_one(self, memory_mb: int | None) -> _Process | None:
        with self._guard:
            for index, candidate in enumerate(self._idle):
                if candidate.memory_mb == memory_mb:
                    return self._idle.pop(index)
        return None

    def _give_back(self, process: _Process) -> None:
        with self._guard:
            if len(self._idle) < self.max_idle:
                self._idle.append(process)
                return
        self._end(process)

    def _end(self, process: _Process) -> None:
        process.kill()
        with contextlib.suppress(OSError):
            self.zygote.wait(process.pid)

    def close(self) -> None:
        """Kill the idle processes and the fork server (running steps end with it)."""
        with self._guard:
            idle, self._idle = self._idle, []
        for process in idle:
            process.kill()
        self.zygote.close()

    async def run(self, job: Job, *, timeout: float | None, memory_mb: int | None) -> Outcome:
        """Run a job in a process of the pool: its outcome, or a failure naming what happened
        (timeout, the process dying). Cancelling the call kills the process."""
        process = self._idle_one(memory_mb)
        if process is None:
            process = await asyncio.to_thread(self._start, memory_mb)
        try:
            outcome = await process.ask(job, timeout)
        except TimeoutError:
            await asyncio.to_thread(self._end, process)
            text = f"python code timed out after {timeout:g} s"
            return Outcome("timeout", error=text, kind=failure.TIMEOUT)
        except (_Died, BrokenPipeError, ConnectionResetError):
            return await asyncio.to_thread(self._death, process, job.step)
        except BaseException:  # cancelled: the step's code may still be running
            process.kill()
            raise
        self._give_back(process)
        return outcome

    def _death(self, process: _Process, step: str) -> Outcome:
        process.kill()
        try:
            code = self.zygote.wait(process.pid)
        except OSError:
            code = None
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            text = f"worker process was killed by {name} while running step '{step}'"
            if -code == signal.SIGKILL:
                limit = f"{process.memory_mb} MB" if process.memory_mb else "none"
                text += f" (out of memory? the step's memory limit is {limit})"
        else:
            text = f"worker process exited with code {code} while running step '{step}'"
        return Outcome("error", error=text, kind=failure.TOOL)


def _expire(answer: asyncio.Future[Outcome]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


pool = ProcessPool()


async def close_processes() -> None:
    pool.close()
