"""The control plane (`ControlPlane`), split by responsibility: `plane` (the facade the API
calls), `offers` (commands waiting for workers, bus notifications), `leases`, `claims`,
`recovery` (reaper, restart recovery) and `requests` (what execute takes and answers)."""

from noetl.runtime.control.leases import DEFAULT_LEASE_SECONDS
from noetl.runtime.control.offers import BUS_HOLD_SECONDS, DEFAULT_REPUBLISH_SECONDS, Notifier
from noetl.runtime.control.plane import ControlPlane, status_view
from noetl.runtime.control.requests import (
    DEFAULT_DEDUP_WINDOW_SECS,
    MAX_BATCH_ITEMS,
    DedupSpec,
    ExecuteOutcome,
    ExecuteRequest,
)
from noetl.runtime.orchestrator import IngestOutcome

__all__ = [
    "BUS_HOLD_SECONDS",
    "DEFAULT_DEDUP_WINDOW_SECS",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_REPUBLISH_SECONDS",
    "MAX_BATCH_ITEMS",
    "ControlPlane",
    "DedupSpec",
    "ExecuteOutcome",
    "ExecuteRequest",
    "IngestOutcome",
    "Notifier",
    "status_view",
]
