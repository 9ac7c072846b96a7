"""A step's `loop: {in, iterator, spec: {mode, max_in_flight}}`.

`mode` and `max_in_flight` may also be written directly under `loop`; `loop.spec` wins.
"""

from __future__ import annotations

from typing import Any, cast

from noetl.dsl.checks import Checks, found, is_count, line_of, show
from noetl.dsl.model import Loop, LoopMode


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
    collection = _collection(checks, loop, step)
    iterator = _iterator(checks, loop, step)
    max_in_flight, mif_field, mif_line = _setting(loop, spec, "max_in_flight")
    if max_in_flight is not None and not is_count(max_in_flight, 1):
        checks.fail(
            f"max_in_flight must be a positive integer, got {show(max_in_flight)}",
            step=step,
            field=mif_field,
            line=mif_line,
        )
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
    if mode is None:
        mode = "sequential"
    if mode == "cursor" or "cursor" in loop:
        checks.fail(
            "cursor loops are not supported; loop over a collection with "
            "loop: {in: ..., iterator: ..., spec: {mode: sequential|parallel}}",
            step=step,
            field=mode_field if mode == "cursor" else "loop.cursor",
            line=mode_line if mode == "cursor" else line_of(loop, "cursor"),
        )
    if mode not in ("sequential", "parallel"):
        checks.fail(
            f"{mode_field} must be 'sequential' or 'parallel', got {show(mode)}",
            step=step,
            field=mode_field,
            line=mode_line,
        )
    return cast(LoopMode, mode)


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
