"""`kind: noop`: do nothing and return a fixed value.

`data` is `config["result"]` when given, else `{"status": "ok", "message": config.get("message", "noop")}`.
"""

from __future__ import annotations

from typing import Any

from noetl.tools.base import ToolContext, ToolResult
from noetl.tools.jsonsafe import to_jsonable

__all__ = ["NoopTool"]


class NoopTool:
    kind = "noop"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if "result" in config:
            data: Any = to_jsonable(config["result"])
        else:
            data = {"status": "ok", "message": to_jsonable(config.get("message", "noop"))}
        return ToolResult(status="success", data=data)
