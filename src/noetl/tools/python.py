"""`kind: python`: run a step's Python source in a process of its own (`noetl.tools.pyprocess`),
never in the process that orchestrates: a crash, an endless loop or a memory blow-up fails the
step, and a timeout or a cancel kills its process.

What the code sees and how its value is chosen is described in `noetl.tools.pychild`. Source comes
from `code`, `code_b64` or a `script` file or URL (`noetl.tools.scripts`); `libs` lists modules or
pip names (`noetl.tools.pylibs`). Every step has a time limit (`timeout`, else the tool default
NOETL_TOOL_TIMEOUT_SECONDS) and a memory limit (`spec.max_memory_mb`, else NOETL_TOOL_MEMORY_MB).

Failures carry a kind (`noetl.tools.failure`): `timeout`, or the kind of the exception the code
raised (an HTTP error keeps its status's kind, a refused connection is `connection`, anything else
`tool`); a process that died is a `tool` failure naming its exit code or signal.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any, cast

from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, ToolStatus, timeout_seconds
from noetl.tools.pychild import Job, Outcome
from noetl.tools.pyprocess import pool
from noetl.tools.scripts import ScriptError, read_script

__all__ = ["PythonTool"]


class PythonTool:
    kind = "python"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()
        try:
            source = await _source(config, ctx)
        except ScriptError as exc:
            return _result(Outcome("error", error=str(exc), kind=failure.TOOL), started)
        raw_input = config.get("input", config.get("args"))
        if raw_input is None:
            raw_input = {}
        inputs = dict(raw_input) if isinstance(raw_input, Mapping) else {}
        job = Job(
            source=source,
            inputs=inputs,
            input_value=inputs if isinstance(raw_input, Mapping) else raw_input,
            context=dict(ctx.render_context),
            libs=config.get("libs"),
            execution_id=ctx.execution_id,
            step=ctx.step,
        )
        memory = ctx.memory_mb or ctx.default_memory_mb
        outcome = await pool.run(job, timeout=timeout_seconds(config, ctx), memory_mb=memory)
        return _result(outcome, started)


def _result(outcome: Outcome, started: float) -> ToolResult:
    kind = outcome.kind if outcome.status != "success" else None
    return ToolResult(
        status=cast(ToolStatus, outcome.status),
        data=outcome.data,
        error=outcome.error,
        error_kind=kind,
        retryable=failure.is_retryable(kind),
        stdout=outcome.stdout or None,
        stderr=outcome.stderr or None,
        duration_ms=(time.perf_counter() - started) * 1000.0,
    )


async def _source(config: Mapping[str, Any], ctx: ToolContext) -> str:
    code = config.get("code")
    if code is not None and code != "":
        return code if isinstance(code, str) else str(code)
    for key in ("code_b64", "code_base64"):
        encoded = config.get(key)
        if encoded:
            try:
                return base64.b64decode(str(encoded)).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise ScriptError(f"python: '{key}' is not valid base64 UTF-8 text: {exc}") from None
    script = config.get("script")
    if script:
        return await read_script(script, ctx, tool="python")
    raise ScriptError("python: the tool needs 'code' (or 'code_b64', or a 'script' file or URL)")
