"""What the CLI says agrees with what the tools do: the credential types `noetl credential add`
offers are the ones the tools accept; `server start --help` on NATS; credentials managed on a
server with `--server`; the missing-credential hint names the command for the user's mode;
`exec --wait --json` prints the shape of `run --json`; HTTP errors quote a short cleaned excerpt
of an HTML page; a shell `command: true` is the shell's `true`."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import CliResult, noetl, run_playbook
from tests.support.cluster import Cluster, ServerProcess, clean_env
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key
from tests.support.stub_api import StubAPI

from noetl.credtypes import CREDENTIAL_TYPES

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\n"

ECHO = (
    HEADER
    + """\
metadata: {name: cli_echo, path: tests/cli/echo}
workload: {api: "http://127.0.0.1:1", cred: none}
workflow:
  - step: start
    tool: {kind: http, url: "{{ workload.api }}/api/v1/echo", auth: "{{ workload.cred }}"}
    next: [end]
  - step: end
    tool:
      kind: python
      input: {headers: "{{ start.data.headers }}"}
      code: |
        result = {"authorization": headers.get("authorization", "").split(" ")[0],
                  "api_key": headers.get("x-api-key")}
"""
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())
    monkeypatch.delenv("NOETL_SERVER_URL", raising=False)
    return f"sqlite:///{tmp_path}/noetl.db"


# ---------------------------------------------------------------------- credential types


def test_credential_add_help_offers_exactly_the_types_the_tools_accept() -> None:
    helped = noetl("credential", "add", "--help", env={"COLUMNS": "300"})
    assert helped.code == 0
    text = " ".join(helped.stdout.split())
    for name, tools in CREDENTIAL_TYPES.items():
        assert f"{name} ({', '.join(tools)})" in text
    assert "http_bearer" not in text
    assert set(CREDENTIAL_TYPES) == {"postgres", "bearer", "api_key", "basic"}


def test_an_unknown_credential_type_is_refused(store: str) -> None:
    refused = noetl("credential", "add", "x", "--type", "http_bearer", "--data", "{}", "--store", store)
    assert refused.code == 2
    assert "unknown credential type 'http_bearer'" in refused.stderr
    assert "bearer (http)" in refused.stderr and "postgres (postgres, duckdb" in refused.stderr
    assert json.loads(noetl("credential", "list", "--json", "--store", store).stdout) == []
    alias = noetl("credential", "add", "pg", "--type", "PostgreSQL", "--data", "{}", "--store", store)
    assert alias.code == 0 and "credential 'pg' (postgres) saved" in alias.stdout


@pytest.mark.parametrize(
    ("type_", "data", "expected"),
    [
        ("bearer", {"token": "tok-123456"}, {"authorization": "Bearer", "api_key": None}),
        ("api_key", {"api_key": "key-123456"}, {"authorization": "", "api_key": "********"}),
        ("basic", {"username": "ann", "password": "pw-123456"}, {"authorization": "Basic", "api_key": None}),
    ],
)
def test_every_http_type_the_cli_offers_works_in_the_http_tool(
    tmp_path: Path, store: str, stub_api: StubAPI, type_: str, data: dict[str, str], expected: dict[str, Any]
) -> None:
    add_credential(store, "cred", type_, data)
    payload = json.dumps({"api": stub_api.base_url, "cred": "cred"})
    result = run_playbook(write(tmp_path, "echo", ECHO), store, "--payload", payload)
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["steps"]["end"]["result"] == expected


def test_a_postgres_credential_in_the_http_tool_names_the_types_it_accepts(
    tmp_path: Path, store: str, stub_api: StubAPI
) -> None:
    add_credential(store, "pg", "postgres", {"db_host": "h", "db_password": "p"})
    payload = json.dumps({"api": stub_api.base_url, "cred": "pg"})
    result = run_playbook(write(tmp_path, "echo", ECHO), store, "--payload", payload)
    assert result.code == 1
    assert "type 'postgres', which the http tool cannot use (supported: bearer, api_key, basic)" in (
        result.json["error"] or ""
    )


def test_server_start_help_offers_nats() -> None:
    helped = noetl("server", "start", "--help", env={"COLUMNS": "300"})
    assert helped.code == 0
    text = " ".join(helped.stdout.split())
    assert "nats://host:4222" in text
    assert "not supported" not in text.lower() and "not yet" not in text.lower()


# ---------------------------------------------------------------------- the missing-credential hint


def test_local_missing_credential_hint_names_the_store(tmp_path: Path, store: str, stub_api: StubAPI) -> None:
    payload = json.dumps({"api": stub_api.base_url, "cred": "absent"})
    result = run_playbook(write(tmp_path, "echo", ECHO), store, "--payload", payload)
    assert result.code == 1
    error = result.json["error"] or ""
    hint = f"""noetl credential add absent --type bearer --data '{{"token": "..."}}' --store {store}"""
    assert hint in error, error
    assert "--server" not in error


# ---------------------------------------------------------------------- a server


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # the server's and the CLI's
    monkeypatch.delenv("NOETL_SERVER_URL", raising=False)
    with Cluster(tmp_path, f"sqlite:///{tmp_path}/server.db", env={KEY_ENV: os.environ[KEY_ENV]}) as cluster:
        yield cluster.start_server("s1", extra_args=("--with-worker", "--workers", "2"))


def cli(*args: str | Path, env: dict[str, str] | None = None) -> CliResult:
    return noetl(*args, env=clean_env(env))


def test_credentials_on_a_server_with_server_option_and_env(
    tmp_path: Path, server: ServerProcess, stub_api: StubAPI
) -> None:
    url = server.url
    pb = write(tmp_path, "echo", ECHO.replace("tests/cli/echo", f"tests/cli/echo_{tmp_path.name}"))
    assert cli("register", pb, "--server", url).code == 0
    path = f"tests/cli/echo_{tmp_path.name}"
    payload = json.dumps({"api": stub_api.base_url, "cred": "api_token"})

    # Missing on the server: the hint names the server's command, not the local store's.
    missing = cli("exec", path, "--wait", "--json", "--payload", payload, "--server", url)
    assert missing.code == 1
    error = json.loads(missing.stdout)["error"] or ""
    assert (
        f"""noetl credential add api_token --type bearer --data '{{"token": "..."}}' --server {url}"""
        in error
    )

    added = cli(
        "credential",
        "add",
        "api_token",
        "--type",
        "bearer",
        "--data",
        '{"token": "srv-tok-1"}',
        "--server",
        url,
    )
    assert added.code == 0, added.stderr
    assert f"saved on {url}" in added.stdout
    listed = cli(
        "credential", "list", "--json", env={"NOETL_SERVER_URL": url}
    )  # the variable picks the server
    assert listed.code == 0, listed.stderr
    assert {"name": "api_token", "type": "bearer", "description": None} in json.loads(listed.stdout)
    shown = cli("credential", "show", "api_token", "--server", url)
    assert shown.code == 0 and json.loads(shown.stdout)["type"] == "bearer"
    assert "srv-tok-1" not in shown.stdout
    assert cli("credential", "show", "api_token", "--reveal", "--server", url).code == 2
    both = cli("credential", "list", "--server", url, "--store", f"sqlite:///{tmp_path}/x.db")
    assert both.code == 2 and "give one" in both.stderr
    assert cli("credential", "add", "y", "--type", "http_bearer", "--data", "{}", "--server", url).code == 2

    # Now the run finds it; `exec --wait --json` prints exactly the shape of `run --json`.
    done = cli("exec", path, "--wait", "--json", "--payload", payload, "--server", url)
    assert done.code == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert set(outcome) == {"execution_id", "status", "error", "steps"}
    assert outcome["steps"]["end"] == {
        "status": "COMPLETED",
        "result": {"authorization": "Bearer", "api_key": None},
    }
    local_store = f"sqlite:///{tmp_path}/local.db"
    add_credential(local_store, "api_token", "bearer", {"token": "local-tok"})
    local = run_playbook(pb, local_store, "--payload", payload)
    assert local.code == 0, local.stderr
    assert set(local.json) == set(outcome)
    assert {k: v["status"] for k, v in local.json["steps"].items()} == {
        k: v["status"] for k, v in outcome["steps"].items()
    }
    assert local.json["steps"]["end"] == outcome["steps"]["end"]  # (start's result holds timings)

    removed = cli("credential", "rm", "api_token", "--server", url)
    assert removed.code == 0 and f"deleted on {url}" in removed.stdout
    assert cli("credential", "rm", "api_token", "--server", url).code == 1


# ---------------------------------------------------------------------- HTML error bodies


class _HtmlError(BaseHTTPRequestHandler):
    PAGE = (
        "<!DOCTYPE html><html><head><title>Bad gateway</title><style>body { color: red }</style>"
        "<script>var tracking = 'x';</script></head><body>\n<h1>502 Bad&nbsp;Gateway</h1>\n\n"
        "<p>The   upstream   server failed.</p>"
        + "<div class='pad'>lorem ipsum</div>\n" * 500
        + "</body></html>"
    )

    def do_GET(self) -> None:
        raw = self.PAGE.encode()
        self.send_response(502)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_http_error_quotes_a_short_cleaned_excerpt_of_an_html_page(tmp_path: Path, store: str) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlError)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        text = HEADER + (
            "metadata: {name: cli_html, path: tests/cli/html}\nworkflow:\n"
            f"  - step: start\n    tool: {{kind: http, url: 'http://127.0.0.1:{httpd.server_address[1]}/x'}}\n"
        )
        result = run_playbook(write(tmp_path, "html", text), store)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.code == 1
    error = result.json["error"]
    _, _, quoted = error.partition(": HTTP 502 from GET ")
    body = quoted.split("/x: ", 1)[1]
    assert body.startswith("502 Bad Gateway The upstream server failed. lorem ipsum lorem ipsum")
    assert len(body) <= 300 and body.endswith("…")
    for leftover in ("<", ">", "&nbsp;", "tracking", "color: red", "  "):
        assert leftover not in body


# ---------------------------------------------------------------------- shell


def test_shell_command_true_is_the_shell_builtin(tmp_path: Path, store: str) -> None:
    text = HEADER + (
        "metadata: {name: cli_true, path: tests/cli/true}\nworkflow:\n"
        "  - step: start\n    tool: {kind: shell, command: 'true'}\n    next: [bare]\n"
        "  - step: bare\n    tool: {kind: shell, command: true}\n    next: [listed]\n"
        "  - step: listed\n    tool: {kind: shell, cmds: ['true', false, 'echo after']}\n"
    )
    result = run_playbook(write(tmp_path, "true", text), store)
    steps = result.json["steps"]
    assert steps["start"] == {"status": "COMPLETED", "result": {"exit_code": 0, "stdout": "", "stderr": ""}}
    assert steps["bare"]["status"] == "COMPLETED"
    # `false` is the shell's false too: it exits 1 (not 127, "False: not found") and stops the list
    assert result.code == 1
    assert "exited with code 1" in (result.json["error"] or "")
    assert "not found" not in (result.json["error"] or "")
