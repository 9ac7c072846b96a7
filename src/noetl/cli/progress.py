"""Live progress of a local run: a rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from noetl.engine import events as ev
from noetl.engine.events import Event


@dataclass
class _StepLine:
    name: str
    status: str = "pending"
    total: int | None = None
    done: int = 0
    failed: int = 0
    error: str | None = None


class Progress:
    """Observes the events of the root execution (children count towards their parent step)."""

    def __init__(self, *, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.root: int | None = None
        self.steps: dict[str, _StepLine] = {}
        self._last_printed: dict[str, int] = {}
        self._started = time.monotonic()
        self._live_view: Any = None

    # -- lifecycle

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live_view = Live(
                self._render(), console=Console(file=self.stream), refresh_per_second=8, transient=False
            )
            self._live_view.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live_view is not None:
            self._live_view.update(self._render())
            self._live_view.__exit__(None, None, None)

    # -- events

    def __call__(self, event: Event) -> None:
        kind = event.event_type
        if kind == ev.PLAYBOOK_STARTED and self.root is None and event.parent_execution_id is None:
            self.root = event.execution_id
            self._line(f"execution {event.execution_id} started")
            return
        if event.execution_id != self.root:
            return
        name = event.node_name or ""
        if kind == ev.STEP_ENTER:
            line = self._step(name)
            line.status = "running"
            total = event.payload.get("iterations_expected")
            if isinstance(total, int):
                line.total, line.done, line.failed = total, 0, 0
                self._line(f"step {name}: looping over {total} items")
            else:
                self._line(f"step {name}: running")
        elif kind == ev.COMMAND_COMPLETED or kind == ev.COMMAND_FAILED:
            line = self._step(name)
            if line.total is not None and (event.meta or {}).get("iteration_index") is not None:
                line.done += 1
                if kind == ev.COMMAND_FAILED:
                    line.failed += 1
                self._loop_line(line)
            if kind == ev.COMMAND_FAILED:
                line.status = "failed"
                line.error = str(event.payload.get("error", ""))
                self._line(f"step {name}: FAILED: {line.error}")
        elif kind == ev.STEP_EXIT:
            line = self._step(name)
            line.status = "completed"
            self._line(f"step {name}: completed")
        elif kind == ev.STEP_SKIPPED:
            line = self._step(name)
            line.status = "skipped"
            self._line(f"step {name}: skipped ({event.payload.get('reason', '')})")
        elif kind in ev.TERMINAL_TYPES:
            elapsed = time.monotonic() - self._started
            self._line(f"execution {event.execution_id} {event.status} in {elapsed:.2f}s")
        if self._live_view is not None:
            self._live_view.update(self._render())

    def _step(self, name: str) -> _StepLine:
        line = self.steps.get(name)
        if line is None:
            line = self.steps[name] = _StepLine(name)
        return line

    def _loop_line(self, line: _StepLine) -> None:
        if self.live or not line.total:
            return
        # Plain output: a line at every tenth of the way, not one per item.
        tenth = line.done * 10 // line.total
        if tenth != self._last_printed.get(line.name):
            self._last_printed[line.name] = tenth
            self._line(f"step {line.name}: {line.done}/{line.total} items")

    def _line(self, text: str) -> None:
        if not self.live:
            print(text, file=self.stream, flush=True)

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title="noetl run", expand=False)
        table.add_column("step")
        table.add_column("status")
        table.add_column("progress")
        colours = {"completed": "green", "failed": "red", "running": "yellow", "skipped": "dim"}
        for line in self.steps.values():
            progress = f"{line.done}/{line.total}" if line.total is not None else ""
            if line.failed:
                progress += f" ({line.failed} failed)"
            colour = colours.get(line.status, "white")
            table.add_row(line.name, f"[{colour}]{line.status}[/{colour}]", progress)
        table.caption = f"{time.monotonic() - self._started:.1f}s"
        return table
