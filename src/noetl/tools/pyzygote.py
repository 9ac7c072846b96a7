"""The fork server of python-tool processes (a "zygote"): a small single-threaded process with the
python tool's runtime imported, which forks a new tool process on request (a fork from a process
without threads is safe, and costs a few milliseconds instead of a new interpreter's start-up).

The parent talks to it over a UNIX socket: `spawn` sends one end of a fresh socket pair (as an
SCM_RIGHTS file descriptor) and a memory limit, and gets the new process's pid; `wait` gets the
exit status of a process that ended (the zygote is its parent, so it reaps it). The zygote exits
when the parent goes away.
"""

from __future__ import annotations

import json
import os
import socket
from multiprocessing.connection import Connection
from typing import Any

_MAX_MESSAGE = 4096


def main(control_fd: int) -> None:
    """The zygote's loop (`python -c "...main(fd)"`)."""
    from noetl.tools import pychild  # imported once here: every fork has it warm
    from noetl.tools.toolenv import scrub_process

    scrub_process()  # no step's process sees the control plane's secrets

    control = socket.socket(fileno=control_fd)
    ended: dict[int, int] = {}
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 1)
        except OSError:
            return
        if not message:
            return  # the parent went away
        request = json.loads(message)
        _reap(ended)
        if request["op"] == "spawn" and fds:
            pid = os.fork()
            if pid == 0:
                control.close()
                _child(fds[0], request.get("memory"), pychild)
            os.close(fds[0])
            _reply(control, {"pid": pid})
        elif request["op"] == "wait":
            _reply(control, {"code": _wait(int(request["pid"]), ended)})
        else:
            for fd in fds:
                os.close(fd)
            _reply(control, {"error": f"unknown request {request.get('op')!r}"})


def _child(fd: int, memory: int | None, pychild: Any) -> None:
    try:
        pychild.serve(Connection(fd), memory)
    finally:
        os._exit(0)


def _reap(ended: dict[int, int]) -> None:
    """Collect the statuses of processes that ended (no zombies pile up)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ended[pid] = os.waitstatus_to_exitcode(status)
        if len(ended) > 10_000:
            ended.pop(next(iter(ended)))


def _wait(pid: int, ended: dict[int, int]) -> int | None:
    if pid in ended:
        return ended.pop(pid)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def _reply(control: socket.socket, answer: dict[str, Any]) -> None:
    control.sendall(json.dumps(answer).encode() + b"\n")


BOOT = (
    "import json, sys; sys.path[:0] = json.loads(sys.argv[2]); "
    "from noetl.tools.pyzygote import main; main(int(sys.argv[1]))"
)
"""The zygote's command line (`python -c BOOT <control fd> <the parent's sys.path as JSON>`)."""
