"""The tool kinds a playbook may name, and where each is implemented (`"module:Class"`, imported
by `noetl.tools.base.get_tool` on first use). Pure data: the parser checks kinds against it
without importing any tool."""

from __future__ import annotations

TOOL_KINDS: dict[str, str] = {
    "python": "noetl.tools.python:PythonTool",
    "noop": "noetl.tools.noop:NoopTool",
    "shell": "noetl.tools.shell:ShellTool",
    "duckdb": "noetl.tools.duckdb:DuckDBTool",
    "ducklake": "noetl.tools.duckdb:DuckDBTool",
    "http": "noetl.tools.http:HttpTool",
    "postgres": "noetl.tools.postgres:PostgresTool",
    "transfer": "noetl.tools.transfer:TransferTool",
    "artifact": "noetl.tools.artifact:ArtifactTool",
}

# Kinds the engine itself handles (nested playbooks, pipelines, workbook references).
ENGINE_KINDS = frozenset({"playbook", "task_sequence", "workbook"})


def supported_kinds() -> frozenset[str]:
    return frozenset(TOOL_KINDS) | ENGINE_KINDS
