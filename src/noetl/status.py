"""Execution statuses, spelled once: the API reports them, the event log and the projections
store them, the engine's state carries them. Pure: no imports, no I/O."""

from __future__ import annotations

INITIAL = "INITIAL"  # the engine's state before `playbook_started`; never reported by the API
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"

TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
"""The statuses an execution never leaves."""

__all__ = ["CANCELLED", "COMPLETED", "FAILED", "INITIAL", "RUNNING", "TERMINAL"]
