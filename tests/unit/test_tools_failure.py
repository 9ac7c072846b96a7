"""Failure kinds (`output.error.kind` / `retryable` in policy rules) and how each tool reports them."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
from typing import Any

import pytest

from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, failed
from noetl.tools.duckdb import DuckDBTool
from noetl.tools.python import PythonTool
from noetl.tools.shell import ShellTool
from noetl.worker.policy import match, outcome_view, rule_from_raw


def _ctx() -> ToolContext:
    return ToolContext(execution_id=1, step="s", command_id="c")


def run(tool: Any, config: dict[str, Any]) -> ToolResult:
    return asyncio.run(tool.run(config, _ctx()))


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
        (429, "rate_limit"),
        (401, "auth"),
        (403, "auth"),
        (404, "not_found"),
        (400, "client_error"),
        (409, "client_error"),
        (422, "client_error"),
        (408, "timeout"),
        (200, None),
        (302, None),
    ],
)
def test_http_status_kinds(status: int, kind: str | None) -> None:
    assert failure.http_kind(status) == kind


def test_retryable_kinds_are_exactly_the_transient_ones() -> None:
    assert {k for k in failure.KINDS if failure.is_retryable(k)} == {
        "server_error",
        "rate_limit",
        "timeout",
        "connection",
    }


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("42601", "tool"),  # syntax error
        ("23505", "tool"),  # unique violation
        ("42P01", "tool"),  # undefined table
        ("42501", "auth"),  # insufficient privilege
        ("28P01", "auth"),  # invalid password
        ("3D000", "not_found"),  # database does not exist
        ("57014", "timeout"),  # statement timeout
        ("08006", "connection"),
        ("40001", "server_error"),
        ("40P01", "server_error"),
        ("53300", "server_error"),  # too many connections
        ("57P01", "server_error"),  # admin shutdown
        ("XX000", "server_error"),
        (None, "tool"),
    ],
)
def test_sqlstate_kinds(sqlstate: str | None, kind: str) -> None:
    assert failure.sqlstate_kind(sqlstate) == kind


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class RequestsStyleHTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"{status_code} error")
        self.response = _Response(status_code)


class ReadTimeout(Exception):  # named like requests/httpx timeouts, unrelated to TimeoutError
    pass


class ConnectError(Exception):  # named like httpx.ConnectError
    pass


class DatabaseError(Exception):  # shaped like psycopg/psycopg2 errors
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class OperationalError(DatabaseError):
    pass


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (RequestsStyleHTTPError(429), "rate_limit"),
        (RequestsStyleHTTPError(503), "server_error"),
        (urllib.error.HTTPError("http://x", 403, "Forbidden", {}, None), "auth"),  # type: ignore[arg-type]
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "connection"),
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "connection"),
        (TimeoutError("slow"), "timeout"),
        (ReadTimeout("slow"), "timeout"),
        (ConnectError("refused"), "connection"),
        (ConnectionResetError("reset"), "connection"),
        (DatabaseError("deadlock detected", "40P01"), "server_error"),
        (DatabaseError("syntax error", "42601"), "tool"),
        (OperationalError('connection to server at "x" failed: Connection refused'), "connection"),
        (OperationalError('FATAL:  password authentication failed for user "u"'), "auth"),
        (ValueError("bad value"), "tool"),
        (KeyError("k"), "tool"),
    ],
)
def test_exception_kinds(exc: BaseException, kind: str) -> None:
    assert failure.classify_exception(exc) == kind


def test_explicit_cause_is_followed_but_not_implicit_context() -> None:
    try:
        try:
            raise RequestsStyleHTTPError(429)
        except RequestsStyleHTTPError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        assert failure.classify_exception(exc) == "rate_limit"
    try:
        try:
            raise RequestsStyleHTTPError(429)
        except RequestsStyleHTTPError:
            raise KeyError("bug in the handler") from None
    except KeyError as exc:
        assert failure.classify_exception(exc) == "tool"


def test_outcome_view_exposes_kind_and_retryable() -> None:
    view = outcome_view(failed("rate_limit", "HTTP 429", http_status=429, data={"headers": {}}), 2)
    assert view["status"] == "error"
    assert view["attempt"] == 2
    assert view["error"] == {"message": "HTTP 429", "status": 429, "retryable": True, "kind": "rate_limit"}
    assert view["http"]["status"] == 429
    ok = outcome_view(ToolResult(status="success", data={"a": 1}), 1)
    assert "error" not in ok and ok["status"] == "ok"


def test_outcome_view_infers_a_kind_for_results_without_one() -> None:
    timeout = outcome_view(ToolResult(status="timeout", error="slow"), 1)
    assert timeout["error"]["kind"] == "timeout" and timeout["error"]["retryable"] is True
    http = outcome_view(ToolResult(status="error", error="x", http_status=404), 1)
    assert http["error"]["kind"] == "not_found" and http["error"]["retryable"] is False
    flagged = outcome_view(ToolResult(status="error", error="x", retryable=True), 1)
    assert flagged["error"] == {"message": "x", "status": None, "retryable": True, "kind": "tool"}


def test_the_rule_real_playbooks_write_matches_a_server_error_only() -> None:
    rules = (
        rule_from_raw(
            {
                "when": "{{ output.error.retryable and output.error.kind == 'server_error' }}",
                "then": {"do": "retry", "attempts": 3},
            }
        ),
        rule_from_raw({"when": "{{ output.error.kind == 'rate_limit' }}", "then": {"do": "continue"}}),
    )
    server = {"output": outcome_view(failed("server_error", "HTTP 503", http_status=503), 1)}
    limited = {"output": outcome_view(failed("rate_limit", "HTTP 429", http_status=429), 1)}
    denied = {"output": outcome_view(failed("auth", "HTTP 401", http_status=401), 1)}
    assert match(rules, server) is rules[0]
    assert match(rules, limited) is rules[1]
    assert match(rules, denied) is None


def test_python_tool_kinds() -> None:
    bad = run(PythonTool(), {"code": "raise ValueError('no')"})
    assert (bad.failure_kind, bad.is_retryable) == ("tool", False)
    http = run(
        PythonTool(),
        {"code": "import urllib.error\nraise urllib.error.HTTPError('http://x', 503, 'down', {}, None)"},
    )
    assert (http.failure_kind, http.is_retryable) == ("server_error", True)
    refused = run(PythonTool(), {"code": "raise ConnectionRefusedError(111, 'refused')"})
    assert (refused.failure_kind, refused.is_retryable) == ("connection", True)
    slow = run(PythonTool(), {"code": "import time\ntime.sleep(2)", "timeout": 0.2})
    assert (slow.status, slow.failure_kind, slow.is_retryable) == ("timeout", "timeout", True)


def test_shell_and_duckdb_kinds() -> None:
    exit3 = run(ShellTool(), {"command": "exit 3"})
    assert (exit3.status, exit3.failure_kind, exit3.is_retryable) == ("error", "tool", False)
    slow = run(ShellTool(), {"command": "sleep 3", "timeout": 0.2})
    assert (slow.status, slow.failure_kind, slow.is_retryable) == ("timeout", "timeout", True)
    sql = run(DuckDBTool(), {"query": "SELEC 1"})
    assert (sql.status, sql.failure_kind, sql.is_retryable) == ("error", "tool", False)
