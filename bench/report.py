"""The table `make bench` prints: every figure with its target and whether the target is met.

Targets are those of issue 16 where it sets one, else the earlier ones (issue 6, issue 13).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MET, NOT_MET, NO_FIGURE = "met", "NOT MET", "-"


@dataclass(frozen=True)
class Row:
    label: str
    value: str = ""
    target: str = ""
    mark: str = ""


def judge(value: float | None, op: str, bound: float) -> str:
    """The mark of a figure against `op bound` ('<=' or '>=')."""
    if value is None:
        return NO_FIGURE
    ok = value <= bound if op == "<=" else value >= bound
    return MET if ok else NOT_MET


def figure(
    label: str, value: float | None, unit: str, op: str = "", bound: float = 0.0, digits: int = 2
) -> Row:
    """A row; with `op` ('<=' or '>=') the figure is judged against `bound` (same unit)."""
    shown = NO_FIGURE if value is None else f"{value:,.{digits}f}{unit}"
    if not op:
        return Row(label, shown)
    return Row(label, shown, f"{op} {bound:,g}{unit}", judge(value, op, bound))


def section(title: str) -> Row:
    return Row(f"[{title}]")


def note(text: str) -> Row:
    return Row("  (" + text + ")")


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def rust_shell_per_step(peers: dict[str, Any] | None) -> float | None:
    """The Rust CLI's shell chain per step from a `make bench-peers` run, if any."""
    value = _get(peers, "systems", "noetl_5_3_2", "chain", "overhead_ms_per_step")
    return float(value) if isinstance(value, int | float) else None


def render(rows: Iterable[Row]) -> str:
    rows = list(rows)
    width = max(len(r.label) for r in rows if r.value)
    vwidth = max(24, *(len(r.value) for r in rows))
    lines = [f"{'figure':<{width}}  {'measured':<{vwidth}}  {'target':<16} mark"]
    for r in rows:
        if not (r.value or r.target or r.mark):
            lines.append(f"\n{r.label}")
            continue
        lines.append(f"{r.label:<{width}}  {r.value:<{vwidth}}  {r.target:<16} {r.mark}".rstrip())
    return "\n".join(lines)


def summary(rows: Iterable[Row]) -> str:
    judged = [r for r in rows if r.mark in (MET, NOT_MET)]
    missed = [r.label.strip() for r in judged if r.mark == NOT_MET]
    text = f"targets met: {len(judged) - len(missed)} of {len(judged)}"
    return text + ("" if not missed else "; not met: " + "; ".join(missed))
