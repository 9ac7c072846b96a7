"""`noetl.tools.spawn`: a command's process watched by the event loop (pipes and a pidfd)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from noetl.tools import spawn

pytestmark = pytest.mark.skipif(not spawn.available(), reason="needs os.pidfd_open (Linux 5.3+)")


def run(
    command: str, *, timeout: float | None = None, limit: int = 1 << 20, drain: float = 2.0
) -> spawn.Finished:
    return asyncio.run(
        spawn.run(
            ["/bin/sh", "-c", command],
            cwd=None,
            env=None,
            timeout=timeout,
            limit=limit,
            drain_after_exit=drain,
        )
    )


def test_exit_code_and_both_streams_are_kept_apart() -> None:
    done = run("printf out; printf err >&2; exit 7")
    assert (done.exit_code, bytes(done.stdout), bytes(done.stderr), done.timed_out) == (
        7,
        b"out",
        b"err",
        False,
    )


def test_output_past_the_limit_is_dropped_and_says_how_much() -> None:
    done = run("head -c 100000 /dev/zero", limit=1000)
    assert bytes(done.stdout[:1000]) == b"\0" * 1000
    assert done.stdout[1000:].decode() == "\n... [99000 bytes dropped] ...\n"


def test_a_timeout_kills_the_whole_group_and_says_so(tmp_path: Path) -> None:
    marker = tmp_path / "late"
    began = time.monotonic()
    done = run(f"(sleep 3; touch {marker}) & sleep 30", timeout=0.3, drain=0.2)
    assert done.timed_out and done.exit_code == -9
    assert time.monotonic() - began < 2
    time.sleep(3.2)
    assert not marker.exists()  # the background child died with its group


def test_a_background_child_holding_the_pipes_is_not_waited_for_past_the_drain_time() -> None:
    began = time.monotonic()
    done = run("echo first; (sleep 5; echo late) &", drain=0.3)
    assert done.exit_code == 0 and bytes(done.stdout) == b"first\n"
    assert time.monotonic() - began < 2


def test_cancelling_kills_the_process_and_closes_its_pipes(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    async def scenario() -> None:
        task = asyncio.create_task(
            spawn.run(
                ["/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"],
                cwd=None,
                env=None,
                timeout=None,
                limit=1024,
                drain_after_exit=1.0,
            )
        )
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    fds_before = len(os.listdir("/proc/self/fd"))
    asyncio.run(scenario())
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_a_command_that_cannot_start_is_an_os_error_and_leaks_no_descriptor(tmp_path: Path) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        asyncio.run(
            spawn.run(
                ["/bin/sh", "-c", "true"],
                cwd=str(tmp_path / "missing"),
                env=None,
                timeout=None,
                limit=10,
                drain_after_exit=0.1,
            )
        )
    assert len(os.listdir("/proc/self/fd")) == fds_before
