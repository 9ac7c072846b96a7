"""The run a log line belongs to: while a command runs, its execution, step and command id are
the *current* ones (a context variable, inherited by every task and thread the command starts),
and `RunContextFilter` writes them on each log record as `execution_id`, `step` and `command_id`
(so `NOETL_LOG_FORMAT=json` lines can be filtered by run). A record that names a `command_id`
itself (the orchestrator's lines) gets the execution and step read from that id. Standard library
only: every process can afford it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

RunContext = tuple[int, str | None, str | None]  # execution_id, step, command_id

_current: ContextVar[RunContext | None] = ContextVar("noetl_log_context", default=None)


def enter_command(execution_id: int, step: str | None, command_id: str | None) -> Token[RunContext | None]:
    """Mark what runs now (the executor's hot path); pass the token to `leave_command`."""
    return _current.set((execution_id, step, command_id))


def leave_command(token: Token[RunContext | None]) -> None:
    _current.reset(token)


@contextmanager
def run_context(execution_id: int, step: str | None = None, command_id: str | None = None) -> Iterator[None]:
    token = enter_command(execution_id, step, command_id)
    try:
        yield
    finally:
        leave_command(token)


def current() -> RunContext | None:
    return _current.get()


class RunContextFilter(logging.Filter):
    """Adds `execution_id`, `step` and `command_id` to records logged inside a run."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _current.get()
        if found is None:
            command_id = getattr(record, "command_id", None)
            found = _from_command_id(command_id) if isinstance(command_id, str) else None
        if found is not None:
            execution_id, step, command_id = found
            values = vars(record)
            values.setdefault("execution_id", str(execution_id))
            if step is not None:
                values.setdefault("step", step)
            if command_id is not None:
                values.setdefault("command_id", command_id)
        return True


def _from_command_id(command_id: str) -> RunContext | None:
    """`<execution_id>:<step>:<event_id>[:i<index>]` -> its execution and step."""
    head, _, rest = command_id.partition(":")
    if not head.isdigit():
        return None
    step = rest.rsplit(":", 2 if rest.count(":") >= 2 and rest.rsplit(":", 1)[-1].startswith("i") else 1)[0]
    return int(head), step or None, command_id


__all__ = ["RunContextFilter", "current", "enter_command", "leave_command", "run_context"]
