"""Shared resources the network tools keep open between commands (connection pools, HTTP
clients), closed when a runtime or worker stops."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_CLOSERS = {
    "noetl.tools.postgres": "close_pools",
    "noetl.tools.http": "close_clients",
    "noetl.tools.pyprocess": "close_processes",
}


async def close_tool_resources() -> None:
    """Close the pools the network tools opened (only those whose module was imported)."""
    for module_name, closer_name in _CLOSERS.items():
        module = sys.modules.get(module_name)
        closer = getattr(module, closer_name, None)
        if closer is not None:
            try:
                await closer()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", module_name, exc_info=True)
