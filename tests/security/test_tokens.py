"""Tokens and scopes: a `read` token only reads, a `worker` token does only what a worker does
(and reads only the secrets of commands it holds), a revoked token stops working, the admin token
file is created 0600 and the CLI on the same machine finds it, and `noetl token` manages tokens.

(Workers, the CLI and the conformance runs of the suite all run with auth on: tests/conftest.py
gives every process the test token.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.security.helpers import (
    TWO_STEPS,
    claim,
    execute,
    http,
    make_token,
    ok,
    pending_of,
    register,
)
from tests.support.cli import noetl
from tests.support.cluster import Cluster, ServerProcess, clean_env, free_port

_READ_POSTS = {"/api/catalog/list", "/api/catalog/resource"}


def _concrete(path: str) -> str:
    return path.replace("{execution_id}", "1").replace("{event_id}", "1").replace("{name}", "x")


def test_a_read_token_cannot_change_anything(server: str) -> None:
    with http(server) as admin:
        register(admin)
        schema = ok(admin.get("/openapi.json"))
        reader = make_token(admin, "read", "reader")
    with http(server, reader) as client:
        assert ok(client.get("/api/executions")) == []
        assert ok(client.post("/api/catalog/list", json={}))["entries"]
        refused = 0
        for path, operations in schema["paths"].items():
            for method in operations:
                if not path.startswith("/api/") or method == "get" or path in _READ_POSTS:
                    continue
                answer = client.request(method.upper(), _concrete(path), json={})
                assert answer.status_code == 403, (method, path, answer.text)
                refused += 1
        assert refused >= 15


def test_a_worker_token_does_what_a_worker_does_and_no_more(server: str) -> None:
    with http(server) as admin:
        register(admin)
        ok(
            admin.post(
                "/api/credentials",
                json={"name": "svc", "type": "basic", "data": {"username": "u", "password": "s3cret-pw"}},
            )
        )
        worker = make_token(admin, "worker", "worker-1")
        execution_id = execute(admin)
    with http(server, worker) as client:
        assert client.post("/api/catalog/register", json={"content": TWO_STEPS}).status_code == 403
        assert client.post("/api/tokens", json={"name": "mine", "scope": "admin"}).status_code == 403
        assert client.post("/api/credentials", json={"name": "x", "type": "t", "data": {}}).status_code == 403
        assert client.post(f"/api/executions/{execution_id}/cancel", json={}).status_code == 403
        # Not a playbook of its choosing: only the child of an open command.
        assert client.post("/api/execute", json={"path": "security/two_steps"}).status_code == 403
        command = pending_of(client, execution_id)
        child = {
            "path": "security/two_steps",
            "parent_execution_id": execution_id,
            "metadata": {"parent_command_id": command["command_id"]},
        }
        assert ok(client.post("/api/execute", json=child))["status"] == "started"
        # What a worker does: register, claim, report.
        ok(client.post("/api/worker/pool/register", json={"name": "w1"}))
        ok(claim(client, command, "w1"))
        # A secret only for a command this worker holds that uses it.
        for worker_id in ("w1", "w2"):
            answer = client.get(
                "/api/credentials/svc",
                params={"include_data": "true", "worker_id": worker_id, "command_id": command["command_id"]},
            )
            assert answer.status_code == 403, answer.text  # w1 holds it, but it does not use `svc`
            assert "s3cret-pw" not in answer.text


def test_the_two_requests_workers_make_per_command_need_a_token_too(server: str) -> None:
    """They are served in front of the app's middleware stack (noetl.api.hot), with the same
    token check and the same latency metric as every other route."""
    with http(server, None) as anonymous:
        for path in ("/api/events/batch", "/api/commands/claim"):
            answer = anonymous.post(path, json={"worker_id": "w", "events": []})
            assert answer.status_code == 401, (path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    with http(server) as admin:
        ok(admin.post("/api/commands/claim", json={"worker_id": "w", "limit": 1}))
        metrics = admin.get("/metrics").text
    assert 'route="/api/events/batch",status="401"' in metrics
    assert 'route="/api/commands/claim",status="200"' in metrics


def test_a_revoked_token_stops_working(server: str) -> None:
    with http(server) as admin:
        token = make_token(admin, "read", "short-lived")
        with http(server, token) as client:
            assert client.get("/api/executions").status_code == 200
            assert ok(admin.delete("/api/tokens/short-lived"))["status"] == "ok"
            assert client.get("/api/executions").status_code == 401
        listed = {row["name"]: row for row in ok(admin.get("/api/tokens"))}
        assert listed["short-lived"]["active"] is False
        assert "token" not in listed["short-lived"]
        assert admin.delete("/api/tokens/short-lived").status_code == 404


def test_the_token_file_is_private_and_the_cli_finds_it(cluster: Cluster, tmp_path: Path) -> None:
    data_home = tmp_path / "data"
    env = clean_env({"XDG_DATA_HOME": str(data_home)})
    env.pop("NOETL_API_TOKEN", None)  # neither the server nor the CLI is told the token
    port = free_port()
    server = ServerProcess(
        name="token-file",
        args=["server", "start", "--host", "127.0.0.1", "--port", str(port), "--store", cluster.store_url],
        env=env,
        log=tmp_path / "token-file.log",
        cwd=tmp_path,
        port=port,
    )
    cluster.servers.append(server)
    server.start()
    cluster.wait_healthy(server)
    token_file = data_home / "noetl" / "api-token"
    assert token_file.exists(), server.tail()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("noetl_") and len(token) > 40
    with http(server.url, None) as anonymous:
        assert anonymous.get("/api/executions").status_code == 401
    with http(server.url, token) as client:
        assert client.get("/api/executions").status_code == 200
    same_machine = noetl("catalog", "list", "--server", server.url, env={**env, "NOETL_API_TOKEN": ""})
    assert same_machine.code == 0, same_machine.stderr
    elsewhere = noetl(
        "catalog", "list", "--server", server.url,
        env={**env, "NOETL_API_TOKEN": "", "XDG_DATA_HOME": str(tmp_path / "other")},
    )  # fmt: skip
    assert elsewhere.code != 0 and "token" in elsewhere.stderr.lower(), elsewhere.stderr
    assert os.stat(token_file).st_size > 0


def test_noetl_token_create_list_revoke(server: str) -> None:
    made = noetl("token", "create", "--scope", "worker", "--name", "ci-worker", "--server", server)
    assert made.code == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("noetl_") and "\n" not in token
    with http(server, token) as client:
        assert client.get("/api/executions").status_code == 200
        assert client.post("/api/catalog/register", json={"content": TWO_STEPS}).status_code == 403
    listed = noetl("token", "list", "--json", "--server", server)
    assert listed.code == 0, listed.stderr
    rows = {row["name"]: row for row in listed.json}
    assert rows["ci-worker"]["scope"] == "worker" and rows["ci-worker"]["active"] is True
    assert token not in listed.stdout
    default_name = noetl("token", "create", "--scope", "read", "--json", "--server", server)
    assert default_name.code == 0 and default_name.json["name"].startswith("read-")
    assert noetl("token", "create", "--scope", "root", "--server", server).code == 2
    assert noetl("token", "create", "--scope", "read", "--name", "ci-worker", "--server", server).code == 1
    revoked = noetl("token", "revoke", "ci-worker", "--server", server)
    assert revoked.code == 0, revoked.stderr
    with http(server, token) as client:
        assert client.get("/api/executions").status_code == 401
    assert noetl("token", "revoke", "ci-worker", "--server", server).code == 1
