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


# The configuration keys each kind reads (besides `COMMON_TOOL_FIELDS`). `noetl validate` warns
# about any other key; tests/unit/test_validate_fields.py checks that every key a tool module
# reads is listed here.
_SQL = frozenset(
    {"command", "query", "sql", "commands", "queries", "cmds", "cmd", "script", "source", "params"}
    | {"command_b64", "commands_b64", "query_b64", "queries_b64", "auth", "credential"}
)
_DUCKDB = _SQL | {"database", "db_path", "read_only"}
TOOL_FIELDS: dict[str, frozenset[str]] = {
    "python": frozenset({"code", "code_b64", "code_base64", "script", "libs"}),
    "noop": frozenset({"result", "message"}),
    "shell": frozenset({"command", "cmds", "cmd", "shell", "cwd", "env"}),
    "duckdb": _DUCKDB,
    "ducklake": _DUCKDB,
    "http": frozenset(
        {"url", "endpoint", "method", "headers", "params", "verify", "verify_ssl", "auth", "credential"}
        | {"follow_redirects", "response_type", "json", "body", "form", "payload", "data"}
    ),
    "postgres": _SQL | {"connection_string", "dsn", "connection", "transaction", "schema"},
    "transfer": frozenset({"source", "target", "mode", "chunk_size", "batch_size"}),
    "artifact": frozenset({"action", "result_ref", "ref", "uri", "path", "data"}),
    "playbook": frozenset({"path", "catalog_id", "version", "payload", "return_step"}),
    "workbook": frozenset({"task"}),
}
# Keys every tool mapping may carry: the task label in a pipeline (or the action of a workbook
# reference), its input, policy and limits (`spec`), task-level `set`, time limit, result storage.
COMMON_TOOL_FIELDS = frozenset(
    {"kind", "name", "desc", "input", "args", "spec", "set", "timeout", "timeout_seconds"}
    | {"output", "output_select"}
)
# Keys of a tool's `spec` block: its policy rules and its memory limit.
TOOL_SPEC_FIELDS = frozenset({"policy", "max_memory_mb"})
