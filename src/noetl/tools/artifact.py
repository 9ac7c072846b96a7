"""`kind: artifact`: read back a stored result, or store one.

    - step: load
      tool:
        kind: artifact
        action: get                       # the default
        input:
          result_ref: "{{ big_step._ref }}"  # a ResultRef, an envelope, or a URI string
        # or: uri: noetl://execution/1/result/big_step/ab12 | file:///data/x.json | ./x.json.gz

    - step: keep
      tool:
        kind: artifact
        action: put
        data: "{{ some_step }}"
        uri: ./out/keep.json.gz           # optional: without it the result store keeps the data

`get` returns `{status: "success", data: <the stored value>, uri, size_bytes}`, so
`{{ load.data }}` is the value; `put` returns `{status: "success", result_ref, uri, size_bytes,
sha256}`, and `{{ keep.result_ref }}` feeds a later `get`. Keys may also sit under `input`/`args`.
See `noetl.tools.results` for the store and the reference format.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, failed
from noetl.tools.results import RefError, load_ref, save_ref

__all__ = ["ArtifactTool"]


def _option(config: Mapping[str, Any], *names: str) -> Any:
    for holder in (config, config.get("input"), config.get("args")):
        if isinstance(holder, Mapping):
            for name in names:
                if holder.get(name) not in (None, ""):
                    return holder[name]
    return None


class ArtifactTool:
    kind = "artifact"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        action = str(_option(config, "action") or "get").lower()
        try:
            if action == "get":
                reference = _option(config, "result_ref", "ref", "uri", "path")
                data, meta = await asyncio.to_thread(load_ref, reference, base_path=ctx.base_path)
                return ToolResult(status="success", data={"status": "success", "data": data, **meta})
            if action == "put":
                if "data" not in config and _option(config, "data") is None:
                    return failed(failure.TOOL, "artifact put: 'data' is required (the value to store)")
                value = config["data"] if "data" in config else _option(config, "data")
                uri = _option(config, "uri", "path")
                ref = await asyncio.to_thread(
                    save_ref,
                    value,
                    str(uri) if uri else None,
                    execution_id=ctx.execution_id,
                    step=ctx.step,
                    base_path=ctx.base_path,
                )
                data = {
                    "status": "success",
                    "result_ref": ref,
                    "uri": ref["ref"],
                    "size_bytes": ref["bytes"],
                    "sha256": ref["sha256"],
                }
                return ToolResult(status="success", data=data)
        except RefError as exc:
            return failed(
                failure.NOT_FOUND if "not found" in str(exc) else failure.TOOL, f"artifact {action}: {exc}"
            )
        return failed(failure.TOOL, f"artifact: action '{action}' is not supported (use get or put)")
