"""A line-aware, YAML-1.2-flavoured safe loader for playbooks.

Mappings load as `LineDict` and sequences as `LineList`: ordinary dict/list subclasses that also
remember the 1-based line where they start and the line of each key or item, so the parser can
point at the offending step or field. `to_plain` turns them back into plain containers before
they go into the typed model.

Scalars are resolved the way YAML 1.2 (and upstream's serde_yaml) does, not the YAML 1.1 way
PyYAML uses by default: only `true`/`false` are booleans (`on`, `yes`, `no` stay strings), dates
stay strings, `010` is ten and `1:30` is a string. Duplicate keys in one mapping are an error
rather than a silent "last one wins".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LineDict(dict[Any, Any]):
    """A mapping that knows its YAML line and the line of each of its keys."""

    line: int | None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = None
        self.key_lines = {}

    def line_of(self, key: Any) -> int | None:
        """The line of `key` when present, else the line of the mapping itself."""
        return self.key_lines.get(key, self.line)


class LineList(list[Any]):
    """A sequence that knows its YAML line and the line of each item."""

    line: int | None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = None
        self.item_lines = []

    def line_of(self, index: int) -> int | None:
        if 0 <= index < len(self.item_lines):
            return self.item_lines[index]
        return self.line


# libyaml's parser when PyYAML was built with it (the wheels are): about ten times faster than
# the pure-Python one, which dominated `noetl run` on a long playbook. Same nodes, marks and
# resolver hooks.
try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class LineLoader(_BaseLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and line-carrying containers."""


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), plus merge keys.
LineLoader.yaml_implicit_resolvers = {}
_RESOLVERS: list[tuple[str, str, str]] = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
    (_MERGE_TAG, r"^(?:<<)$", "<"),
]
for _tag, _pattern, _first in _RESOLVERS:
    LineLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
# The empty scalar (`key:` with no value) has no first character to dispatch on.
LineLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])


def _construct_int(loader: LineLoader, node: ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    if text[:1] in "+-":
        text = text[1:]
    if text.startswith("0o"):
        return sign * int(text[2:], 8)
    if text.startswith("0x"):
        return sign * int(text[2:], 16)
    if text.startswith("0b"):
        return sign * int(text[2:], 2)
    return sign * int(text, 10)


_STR_TAG = "tag:yaml.org,2002:str"


def _value(loader: LineLoader, node: Any) -> Any:
    """A node's value: a plain string scalar directly (no constructor lookup), else through the
    loader (maps and lists come back empty and are filled later, as PyYAML does)."""
    if node.tag == _STR_TAG and type(node) is ScalarNode:
        return node.value
    return loader.construct_object(node)


def _construct_map(loader: LineLoader, node: MappingNode) -> Iterator[LineDict]:
    data = LineDict()
    data.line = node.start_mark.line + 1
    yield data
    if any(key_node.tag == _MERGE_TAG for key_node, _ in node.value):
        _fill_merged(loader, node, data)
        return
    key_lines = data.key_lines
    for key_node, value_node in node.value:
        key = _value(loader, key_node)
        try:
            first = key_lines.get(key)
        except TypeError:
            raise ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from None
        if first is not None:
            raise _duplicate(node, key_node, key, first)
        data[key] = _value(loader, value_node)
        key_lines[key] = key_node.start_mark.line + 1


def _duplicate(node: MappingNode, key_node: Any, key: Any, first: int) -> ConstructorError:
    return ConstructorError(
        "while constructing a mapping",
        node.start_mark,
        f"found duplicate key {key!r} (first defined on line {first})",
        key_node.start_mark,
    )


def _fill_merged(loader: LineLoader, node: MappingNode, data: LineDict) -> None:
    """A mapping with merge keys (`<<`): its own keys are checked for duplicates, then PyYAML
    expands the merges."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
            continue
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable: construct_mapping reports it
            continue
        if first is not None:
            raise _duplicate(node, key_node, key, first)
        seen[key] = key_node.start_mark.line + 1
    data.update(loader.construct_mapping(node))
    # After construct_mapping the node is flattened (merge keys expanded); own keys come last.
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            data.key_lines[key] = key_node.start_mark.line + 1
        except TypeError:
            continue


def _construct_seq(loader: LineLoader, node: SequenceNode) -> Iterator[LineList]:
    data = LineList()
    data.line = node.start_mark.line + 1
    yield data
    data.extend([_value(loader, item) for item in node.value])
    data.item_lines = [item.start_mark.line + 1 for item in node.value]


LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with line information; raises `yaml.YAMLError` on bad input."""
    return yaml.load(text, Loader=LineLoader)  # LineLoader is a SafeLoader


def to_plain(value: Any) -> Any:
    """Deep-convert LineDict/LineList into plain dicts and lists.

    Values reached through YAML aliases are copied, never shared. A recursive alias raises
    ValueError.
    """
    return _plain(value, set())


def _plain(value: Any, active: set[int]) -> Any:
    if not isinstance(value, dict | list):
        return value
    if id(value) in active:
        raise ValueError("recursive YAML alias (a node that contains itself)")
    active.add(id(value))
    try:
        if isinstance(value, dict):
            return {key: _plain(item, active) for key, item in value.items()}
        return [_plain(item, active) for item in value]
    finally:
        active.discard(id(value))
