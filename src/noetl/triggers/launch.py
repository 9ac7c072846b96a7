"""Starting a triggered run under an execution id chosen (and claimed) beforehand, so a run that
was claimed but never recorded (its server died in between) is started later with the same id,
and a recorded one is recognised and never started again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from noetl.errors import NotFound
from noetl.runtime.control import ControlPlane
from noetl.runtime.orchestrator import Launch


def recorded(control: ControlPlane, execution_id: int) -> bool:
    """Whether the run's `playbook_started` is in the store (the projection follows it)."""
    return control.store.execution(execution_id) is not None


def launch(
    control: ControlPlane,
    path: str,
    workload: Mapping[str, Any],
    *,
    execution_id: int,
    metadata: Mapping[str, Any],
    execution_pool: str | None = None,
) -> int:
    """Start the latest version of the catalog playbook `path` as `execution_id`; `metadata` is
    recorded on its `playbook_started` meta. Returns the commands it issued. NotFound when the
    playbook is not in the catalog; ValidationFailed when it does not parse."""
    entry = control.store.resource(path)
    if entry is None:
        raise NotFound(f"Playbook not found: {path}")
    playbook = control.orchestrator.engines.playbook(entry)
    started = control.orchestrator.start(
        Launch(
            playbook=playbook,
            catalog_id=entry.catalog_id,
            workload=dict(workload),
            metadata=dict(metadata),
            execution_pool=execution_pool,
            execution_id=execution_id,
        )
    )
    return started.commands_generated
