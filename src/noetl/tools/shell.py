"""`kind: shell`: run commands with `/bin/sh -c` as child processes (`noetl.tools.spawn`).

Config: `command` (a string; a list is read as `cmds`) or `cmds` (strings run in order, stopping at the first
non-zero exit); `shell` (default `/bin/sh`), `cwd`, `env` (added to the inherited environment, which
never holds the control plane's secrets: `noetl.tools.toolenv`),
`timeout`/`timeout_seconds` (one deadline for the whole call; on expiry the command's process group is
killed and the status is `timeout`). With `spec.max_memory_mb`, the commands run under that
address-space limit (`ulimit -v`); without it they have none (a JVM reserves more address space than
it uses, so a default limit would break such commands).

Result data: `{exit_code, stdout, stderr}` (for `cmds` the texts of every command run, concatenated, plus
`commands: [{command, exit_code, stdout, stderr}]`). stdin is /dev/null; each command runs in its own
session (process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noetl.tools import failure, spawn, toolenv
from noetl.tools.base import ToolContext, ToolResult, ToolStatus, elapsed_ms, timeout_seconds

__all__ = ["ShellTool"]

OUTPUT_LIMIT = 64 * 1024  # characters of stdout/stderr kept on ToolResult.stdout/.stderr
DATA_LIMIT = 16 * 1024 * 1024  # bytes of each stream kept in the result data
_DRAIN_AFTER_EXIT = 2.0  # seconds to wait for pipes held open by background children
_READ_CHUNK = 64 * 1024


@dataclass
class _Run:
    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool = False


class ShellTool:
    kind = "shell"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()
        try:
            commands, many = _commands(config)
        except ValueError as exc:
            return ToolResult(
                status="error", error=str(exc), error_kind=failure.TOOL, duration_ms=elapsed_ms(started)
            )
        shell = str(config.get("shell") or "/bin/sh")
        cwd = config.get("cwd")
        cwd = str(cwd) if cwd not in (None, "") else None
        env = _environment(config.get("env"))
        timeout = timeout_seconds(config, ctx)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None

        runs: list[_Run] = []
        status: ToolStatus = "success"
        error: str | None = None
        for command in commands:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                status, error = "timeout", f"command timed out after {timeout:g} s"
                break
            try:
                run = await _run_one(_limited(command, ctx.memory_mb), shell, cwd, env, remaining)
                run.command = command
            except OSError as exc:
                runs.append(_Run(command, None, "", str(exc)))
                status, error = "error", f"cannot start command: {exc}"
                break
            runs.append(run)
            if run.timed_out:
                status, error = "timeout", f"command timed out after {timeout:g} s"
                break
            if run.exit_code != 0:
                status = "error"
                error = f"command exited with code {run.exit_code}"
                last = _last_line(run.stderr)
                if last:
                    error += f": {last}"
                break

        stdout = "".join(r.stdout for r in runs)
        stderr = "".join(r.stderr for r in runs)
        exit_code = runs[-1].exit_code if runs else None
        data: dict[str, Any] = {"exit_code": exit_code, "stdout": stdout, "stderr": stderr}
        if many:
            data["commands"] = [
                {"command": r.command, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr}
                for r in runs
            ]
        kind = None if status == "success" else failure.TIMEOUT if status == "timeout" else failure.TOOL
        return ToolResult(
            status=status,
            data=data,
            error=error,
            error_kind=kind,
            retryable=failure.is_retryable(kind),
            stdout=_truncate(stdout),
            stderr=_truncate(stderr),
            exit_code=exit_code,
            duration_ms=elapsed_ms(started),
        )


def _environment(extra: Any) -> dict[str, str] | None:
    """The commands' environment: the inherited one without the control plane's secrets
    (`toolenv`), plus the step's `env`."""
    values = toolenv.text_values(extra, _env_text) if isinstance(extra, Mapping) else None
    return toolenv.command_environment(values)


def _commands(config: Mapping[str, Any]) -> tuple[list[str], bool]:
    for key in ("cmds", "command", "cmd"):
        value = config.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            commands = [_text(c) for c in value if c is not None and _text(c).strip()]
            if commands:
                return commands, True
            continue
        return [_text(value)], key == "cmds"
    raise ValueError("shell: the tool needs 'command' (a string) or 'cmds' (a list of strings)")


def _text(value: Any) -> str:
    """A command as the text the playbook wrote: `command: 'true'` reaches the tool as the boolean
    True (rendered strings are typed, and YAML reads an unquoted true as one), which is the shell
    builtin `true`, not the word `True`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def _run_one(
    command: str, shell: str, cwd: str | None, env: dict[str, str] | None, timeout: float | None
) -> _Run:
    if spawn.available():  # Linux: the loop watches the pipes and a pidfd itself
        done = await spawn.run(
            [shell, "-c", command],
            cwd=cwd,
            env=env,
            timeout=timeout,
            limit=DATA_LIMIT,
            drain_after_exit=_DRAIN_AFTER_EXIT,
        )
        return _Run(command, done.exit_code, _decode(done.stdout), _decode(done.stderr), done.timed_out)
    return await _run_asyncio(command, shell, cwd, env, timeout)


async def _run_asyncio(
    command: str, shell: str, cwd: str | None, env: dict[str, str] | None, timeout: float | None
) -> _Run:
    """The same through asyncio's subprocesses (where there is no pidfd)."""
    proc = await asyncio.create_subprocess_exec(
        shell,
        "-c",
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    out = bytearray()
    err = bytearray()
    assert proc.stdout is not None and proc.stderr is not None
    readers = [asyncio.create_task(_drain(proc.stdout, out)), asyncio.create_task(_drain(proc.stderr, err))]
    timed_out = False
    try:
        if timeout is None:
            await proc.wait()
        else:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                _kill_group(proc.pid)
                await proc.wait()
        _, pending = await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT)
        for task in pending:
            task.cancel()
    except BaseException:  # cancelled: do not leave the process running
        _kill_group(proc.pid)
        for task in readers:
            task.cancel()
        raise
    return _Run(command, proc.returncode, _decode(out), _decode(err), timed_out)


async def _drain(stream: asyncio.StreamReader, sink: bytearray) -> None:
    dropped = 0
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            break
        room = DATA_LIMIT - len(sink)
        if room > 0:
            sink += chunk[:room]
        dropped += max(0, len(chunk) - max(room, 0))
    if dropped:
        sink += f"\n... [{dropped} bytes dropped] ...\n".encode()


def _limited(command: str, memory_mb: int | None) -> str:
    """The command under the step's address-space limit (`ulimit -v`, inherited by what it runs)."""
    if not memory_mb:
        return command
    return f"ulimit -v {memory_mb * 1024} 2>/dev/null\n{command}"


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _decode(raw: bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace")


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


def _truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    omitted = len(text) - 2 * half
    return f"{text[:half]}\n... [{omitted} characters truncated] ...\n{text[-half:]}"
