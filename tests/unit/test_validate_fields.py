"""The keys `noetl validate` accepts per tool kind (`noetl.dsl.kinds.TOOL_FIELDS`) cover every
key the tool modules read from their configuration, so a real key is never reported unknown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from noetl.dsl.kinds import COMMON_TOOL_FIELDS, TOOL_FIELDS, TOOL_KINDS
from noetl.tools.scripts import SQL_B64_KEYS, SQL_KEYS

SRC = Path(__file__).resolve().parents[2] / "src" / "noetl"
# Modules reading a tool's configuration, by the kinds whose configuration they read.
READERS = {
    "tools/python.py": ("python",),
    "tools/noop.py": ("noop",),
    "tools/shell.py": ("shell",),
    "tools/duckdb.py": ("duckdb", "ducklake"),
    "tools/http.py": ("http",),
    "tools/postgres.py": ("postgres",),
    "tools/pgconn.py": ("postgres",),
    "tools/transfer.py": ("transfer",),
    "tools/artifact.py": ("artifact",),
    "worker/command.py": ("playbook",),
}
_GET = re.compile(r"\bconfig(?:\.get\(|\[)\s*\"(\w+)\"")
_LOOP = re.compile(r"for key in \(([^)]*)\):\n\s+\w+ = config\.get\(key\)")
_OPTION = re.compile(r"_option\(config, ([^)]*)\)")


def _keys_read(source: str) -> set[str]:
    keys = set(_GET.findall(source))
    for group in (*_LOOP.findall(source), *_OPTION.findall(source)):
        keys.update(re.findall(r"\"(\w+)\"", group))
    return keys


@pytest.mark.parametrize("module", sorted(READERS))
def test_every_key_a_tool_reads_is_accepted(module: str) -> None:
    read = _keys_read((SRC / module).read_text(encoding="utf-8"))
    assert read, f"no configuration key found in {module}: the pattern is stale"
    for kind in READERS[module]:
        missing = read - TOOL_FIELDS[kind] - COMMON_TOOL_FIELDS
        assert missing == set(), f"{kind}: {sorted(missing)}"


def test_the_sql_kinds_accept_every_sql_key() -> None:
    for kind in ("postgres", "duckdb", "ducklake"):
        assert set(SQL_KEYS) | set(SQL_B64_KEYS) <= TOOL_FIELDS[kind]


def test_every_tool_kind_has_its_fields() -> None:
    assert set(TOOL_KINDS) <= set(TOOL_FIELDS)
