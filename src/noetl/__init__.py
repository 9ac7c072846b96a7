"""NoETL in Python: a declarative, event-sourced workflow engine.

`noetl.run(path, workload={...})` and `await noetl.run_async(...)` run a playbook as `noetl run`
does (see `noetl.sdk`). They are imported on first use: `import noetl` (and so every `noetl`
command) stays as cheap as this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from noetl.sdk import RunResult, StepResult, run, run_async

_SDK_NAMES = frozenset({"run", "run_async", "RunResult", "StepResult"})

__all__ = ["RunResult", "StepResult", "__version__", "run", "run_async"]


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        from noetl import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'noetl' has no attribute {name!r}")
