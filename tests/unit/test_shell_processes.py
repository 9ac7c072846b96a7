"""Shell steps' processes are watched by the event loop that started them (a pidfd,
`noetl.tools.spawn`), not by a thread per process: exit codes, timeouts and loops in other
threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from noetl.tools import spawn
from noetl.tools.base import ToolContext
from noetl.tools.shell import ShellTool

pytestmark = pytest.mark.skipif(not spawn.available(), reason="needs os.pidfd_open (Linux 5.3+)")


def _shell(config: dict[str, Any]) -> Any:
    return ShellTool().run(config, ToolContext(execution_id=1, step="s", command_id="c1"))


def test_exit_codes_arrive_without_a_thread_per_process() -> None:
    async def main() -> tuple[list[int | None], int]:
        codes = [(await _shell({"command": c})).exit_code for c in ("exit 0", "exit 3", "kill -9 $$")]
        before = threading.active_count()
        running = asyncio.create_task(_shell({"command": "sleep 0.5"}))
        await asyncio.sleep(0.25)  # the process runs: a threaded watcher would have a thread for it
        during = threading.active_count() - before
        codes.append((await running).exit_code)
        return codes, during

    codes, extra_threads = asyncio.run(main())
    assert codes == [0, 3, -9, 0]
    assert extra_threads == 0


def test_loops_in_other_threads_watch_their_own_processes() -> None:
    results: dict[int, Any] = {}

    def in_thread(n: int) -> None:
        async def main() -> Any:
            return await asyncio.gather(
                *(_shell({"command": f"sleep 0.0{i}; exit {n + i}"}) for i in range(3))
            )

        results[n] = [r.exit_code for r in asyncio.run(main())]

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in (10, 20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {10: [10, 11, 12], 20: [20, 21, 22]}


def test_a_timeout_still_kills_the_command() -> None:
    result = asyncio.run(_shell({"command": "sleep 30", "timeout": 0.3}))
    assert result.status == "timeout"
    assert "timed out after 0.3 s" in (result.error or "")
