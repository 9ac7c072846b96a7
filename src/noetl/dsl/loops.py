"""A step's `loop: {in, iterator, spec: {mode, max_in_flight}}`, or a cursor loop
`loop: {cursor: {kind, auth, claim}, iterator, spec: {mode: cursor, frame: {max_rows,
row_concurrency}}}`.

`mode` and `max_in_flight` may also be written directly under `loop`; `loop.spec` wins. A
`loop.cursor` block without a mode is a cursor loop. The other frame keys (`max_seconds`,
`max_bytes`, `lease_seconds`, `heartbeat_seconds`, `process`) are accepted and advisory: the
claim query manages its own leases.
"""

from __future__ import annotations

from typing import Any, cast

from noetl.dsl.checks import Checks, found, is_count, line_of, show
from noetl.dsl.kinds import TOOL_KINDS
from noetl.dsl.model import Cursor, Loop, LoopMode

# Frame keys a cursor loop accepts and ignores (the claim query manages its own leases).
ADVISORY_FRAME_KEYS = frozenset({"max_seconds", "max_bytes", "lease_seconds", "heartbeat_seconds", "process"})


def parse_loop(checks: Checks, raw: dict[Any, Any], step: str) -> Loop:
    loop = raw["loop"]
    if not isinstance(loop, dict):
        checks.fail(
            f"loop must be a mapping {{in, iterator, spec: {{mode}}}}, got {show(loop)}",
            step=step,
            field="loop",
            line=line_of(raw, "loop"),
        )
    spec = _loop_spec(checks, loop, step)
    mode = _mode(checks, loop, spec, step)
    iterator = _iterator(checks, loop, step)
    max_in_flight, mif_field, mif_line = _setting(loop, spec, "max_in_flight")
    if max_in_flight is not None and not is_count(max_in_flight, 1):
        checks.fail(
            f"max_in_flight must be a positive integer, got {show(max_in_flight)}",
            step=step,
            field=mif_field,
            line=mif_line,
        )
    if mode == "cursor":
        max_rows, row_concurrency = _frame(checks, spec, step)
        return Loop(
            in_=None,
            iterator=iterator,
            mode=mode,
            max_in_flight=max_in_flight,
            cursor=_cursor(checks, loop, step),
            max_rows=max_rows,
            row_concurrency=row_concurrency,
        )
    collection = _collection(checks, loop, step)
    return Loop(
        in_=checks.plain(collection, step=step, field="loop.in", line=line_of(loop, "in")),
        iterator=iterator,
        mode=mode,
        max_in_flight=max_in_flight,
    )


def _loop_spec(checks: Checks, loop: dict[Any, Any], step: str) -> dict[Any, Any]:
    spec = loop.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        checks.fail(
            f"loop.spec must be a mapping {{mode, max_in_flight}}, got {show(spec)}",
            step=step,
            field="loop.spec",
            line=line_of(loop, "spec"),
        )
    return spec


def _setting(loop: dict[Any, Any], spec: dict[Any, Any], key: str) -> tuple[Any, str, int | None]:
    """A loop setting with the field and line it came from: `loop.spec.<key>`, else `loop.<key>`."""
    if spec.get(key) is not None:
        return spec[key], f"loop.spec.{key}", line_of(spec, key)
    return loop.get(key), f"loop.{key}", line_of(loop, key)


def _mode(checks: Checks, loop: dict[Any, Any], spec: dict[Any, Any], step: str) -> LoopMode:
    mode, mode_field, mode_line = _setting(loop, spec, "mode")
    has_cursor = loop.get("cursor") is not None
    if mode is None:
        mode = "cursor" if has_cursor else "sequential"
    if mode not in ("sequential", "parallel", "cursor"):
        checks.fail(
            f"{mode_field} must be 'sequential', 'parallel' or 'cursor', got {show(mode)}",
            step=step,
            field=mode_field,
            line=mode_line,
        )
    if mode == "cursor" and not has_cursor:
        checks.fail(
            "loop.spec.mode=cursor requires a loop.cursor block with a claim query "
            "(loop: {cursor: {kind: postgres, auth: ..., claim: ...}})",
            step=step,
            field="loop.cursor",
            line=mode_line,
        )
    if mode != "cursor" and has_cursor:
        checks.fail(
            f"loop.cursor needs loop.spec.mode: cursor, got {show(mode)}",
            step=step,
            field=mode_field,
            line=mode_line,
        )
    return cast(LoopMode, mode)


def _cursor(checks: Checks, loop: dict[Any, Any], step: str) -> Cursor:
    raw = loop.get("cursor")
    line = line_of(loop, "cursor")
    if not isinstance(raw, dict):
        checks.fail(
            f"loop.cursor must be a mapping {{kind, auth, claim}}, got {show(raw)}",
            step=step,
            field="loop.cursor",
            line=line,
        )
    claim = raw.get("claim")
    if not isinstance(claim, str) or not claim.strip():
        checks.fail(
            "loop.cursor.claim is required (the SQL that claims a frame of rows, "
            f"e.g. UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING ...), {found(claim)}",
            step=step,
            field="loop.cursor.claim",
            line=line_of(raw, "claim") or line,
        )
    kind = raw.get("kind", "postgres")
    if not isinstance(kind, str) or kind not in TOOL_KINDS:
        checks.fail(
            f"loop.cursor.kind must be a tool kind that runs the claim (e.g. postgres), got {show(kind)}",
            step=step,
            field="loop.cursor.kind",
            line=line_of(raw, "kind") or line,
        )
    config = {k: v for k, v in raw.items() if k not in ("claim", "kind")}
    plain = checks.plain(config, step=step, field="loop.cursor", line=line)
    return Cursor(claim=claim, kind=kind, config=plain)


def _frame(checks: Checks, spec: dict[Any, Any], step: str) -> tuple[int, int]:
    """`loop.spec.frame`: `max_rows` and `row_concurrency` (positive integers, default 1)."""
    frame = spec.get("frame")
    if frame is None:
        return 1, 1
    if not isinstance(frame, dict):
        checks.fail(
            f"loop.spec.frame must be a mapping {{max_rows, row_concurrency}}, got {show(frame)}",
            step=step,
            field="loop.spec.frame",
            line=line_of(spec, "frame"),
        )
    values: list[int] = []
    for key in ("max_rows", "row_concurrency"):
        value = frame.get(key, 1)
        if not is_count(value, 1):
            checks.fail(
                f"loop.spec.frame.{key} must be a positive integer, got {show(value)}",
                step=step,
                field=f"loop.spec.frame.{key}",
                line=line_of(frame, key),
            )
        values.append(value)
    return values[0], values[1]


def _collection(checks: Checks, loop: dict[Any, Any], step: str) -> Any:
    collection = loop.get("in")
    if collection is None or (isinstance(collection, str) and not collection.strip()):
        checks.fail(
            'loop.in is required (the collection to iterate over, e.g. "{{ workload.items }}")',
            step=step,
            field="loop.in",
            line=line_of(loop, "in"),
        )
    if isinstance(collection, bool) or not isinstance(collection, str | list | dict | int | float):
        checks.fail(
            f"loop.in must be a template string, a list, a mapping or a number, got {show(collection)}",
            step=step,
            field="loop.in",
            line=line_of(loop, "in"),
        )
    return collection


def _iterator(checks: Checks, loop: dict[Any, Any], step: str) -> str:
    iterator = loop.get("iterator")
    if not isinstance(iterator, str) or not iterator.strip():
        checks.fail(
            f"loop.iterator is required (the variable name bound to each item), {found(iterator)}",
            step=step,
            field="loop.iterator",
            line=line_of(loop, "iterator"),
        )
    if not iterator.isidentifier():
        checks.fail(
            f"loop.iterator must be a variable name (letters, digits, _), got {iterator!r}",
            step=step,
            field="loop.iterator",
            line=line_of(loop, "iterator"),
        )
    return iterator
