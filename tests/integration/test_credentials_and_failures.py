"""Issue acceptance, through the real CLI: credentials never leak, and tool failures read well.

(a) A password added with `noetl credential add` is never written or printed in clear text: not in the
    SQLite store files, not in `noetl run --json`, not in `noetl events`, not in `credential show`
    (only with --reveal). Also `credential list`, `rm` and the upstream file shape (`-f cred.json`).
(b) Each tool failure ends in a FAILED step whose message says what went wrong and where.
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.support.cli import CliResult, events, noetl, run_playbook
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key, pg_credential_data
from tests.support.stub_api import StubAPI

from noetl.secrets import MASK

PG_PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: pg_step
  path: tests/acceptance/pg_step
workload:
  pg_auth: pg_local
  sql: SELECT 1 AS one, current_user AS who
workflow:
  - step: start
    tool:
      kind: postgres
      auth: "{{ pg_auth }}"
      command: "{{ sql }}"
    next:
      spec: {mode: exclusive}
      arcs:
        - step: end
  - step: end
    tool:
      kind: python
      code: |
        result = {"status": "done"}
"""

HTTP_PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: http_step
  path: tests/acceptance/http_step
workload:
  url: http://127.0.0.1:9/
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: "{{ url }}"
      timeout: 10
    next:
      spec: {mode: exclusive}
      arcs:
        - step: end
  - step: end
    tool:
      kind: python
      code: |
        result = {"status": "done"}
"""

ECHO_PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: echo_bearer
  path: tests/acceptance/echo_bearer
workload:
  url: http://127.0.0.1:9/
  expected_sha: ""
workflow:
  - step: start
    tool:
      kind: http
      url: "{{ url }}"
      auth: api_token
    next:
      spec: {mode: exclusive}
      arcs:
        - step: check
  - step: check
    tool:
      kind: python
      input:
        got: "{{ start.body.headers.authorization }}"
        expected_sha: "{{ expected_sha }}"
      code: |
        import hashlib
        result = {"sent_real_token": hashlib.sha256(got.encode()).hexdigest() == expected_sha}
"""

HTTP_RETRY_PLAYBOOK = HTTP_PLAYBOOK.replace(
    "      timeout: 10\n",
    """\
      timeout: 10
      spec:
        policy:
          rules:
            - when: "{{ output.http.status == 500 }}"
              then: { do: retry, attempts: 3, delay: 0.1 }
""",
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # inherited by the `noetl` subprocesses
    return f"sqlite:///{tmp_path}/noetl.db"


@pytest.fixture
def pg_playbook(tmp_path: Path) -> Path:
    path = tmp_path / "pg_step.yaml"
    path.write_text(PG_PLAYBOOK, encoding="utf-8")
    return path


@pytest.fixture
def http_playbook(tmp_path: Path) -> Path:
    path = tmp_path / "http_step.yaml"
    path.write_text(HTTP_PLAYBOOK, encoding="utf-8")
    return path


@pytest.fixture
def echo_playbook(tmp_path: Path) -> Path:
    path = tmp_path / "echo_bearer.yaml"
    path.write_text(ECHO_PLAYBOOK, encoding="utf-8")
    return path


@pytest.fixture
def http_retry_playbook(tmp_path: Path) -> Path:
    path = tmp_path / "http_retry_step.yaml"
    path.write_text(HTTP_RETRY_PLAYBOOK, encoding="utf-8")
    return path


def store_files(tmp_path: Path) -> dict[str, bytes]:
    """Raw bytes of the store database and its -wal/-shm companions, whichever exist."""
    files = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("noetl.db*"))}
    assert "noetl.db" in files
    return files


def assert_not_in_store(tmp_path: Path, secret: str) -> None:
    for name, raw in store_files(tmp_path).items():
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert secret.encode(encoding) not in raw, f"{secret!r} found in {name} ({encoding})"


def failed_run(path: Path, store: str, *extra: str) -> tuple[dict[str, Any], list[dict[str, Any]], CliResult]:
    """Run a playbook that must fail at step `start`: the outcome, its event log and the raw result."""
    result = run_playbook(path, store, *extra)
    assert result.code == 1, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome = result.json
    assert outcome["status"] == "FAILED"
    assert outcome["steps"]["start"]["status"] == "FAILED"
    assert outcome["steps"]["end"]["status"] == "PENDING"  # the run stopped at the failure
    log = events(outcome["execution_id"], store)
    assert log[-1]["event_type"] == "playbook.failed"
    assert not [e for e in log if e["node_name"] == "end" and e["event_type"] == "command.issued"]
    return outcome, log, result


def step_error(outcome: dict[str, Any], log: list[dict[str, Any]]) -> str:
    """The failed step's message as the user sees it; it must be the same in the outcome and the log."""
    failed = [e for e in log if e["event_type"] == "command.failed" and e["node_name"] == "start"]
    assert len(failed) == 1
    message = failed[0]["result"]["context"]["error"]
    assert isinstance(message, str) and message
    assert outcome["error"] == f"step 'start' failed: {message}"
    return message


def call_errors(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["event_type"] == "call.error" and e["node_name"] == "start"]


# --------------------------------------------------------------------------------------------
# (a) credentials


@pytest.mark.postgres
def test_password_is_never_stored_or_printed_in_clear(
    tmp_path: Path, store: str, pg_dsn: str, pg_playbook: Path
) -> None:
    password = f"pw-{uuid.uuid4()}"  # trust auth accepts any password
    add_credential(store, "pg_local", "postgres", pg_credential_data(pg_dsn, password=password))
    assert_not_in_store(tmp_path, password)
    assert b"AES-256-GCM" in b"".join(store_files(tmp_path).values())  # stored, as an envelope

    result = run_playbook(pg_playbook, store)
    assert result.code == 0, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome = result.json
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["start"]["result"]["rows"] == [{"one": 1, "who": "postgres"}]
    assert password not in result.stdout and password not in result.stderr

    eid = outcome["execution_id"]
    for args in (("--json",), ()):
        shown = noetl("events", eid, "--store", store, *args)
        assert shown.code == 0, shown.stderr
        assert "command.completed" in shown.stdout
        assert password not in shown.stdout and password not in shown.stderr

    # The human-readable output, with progress and debug logging.
    human = noetl("run", pg_playbook, "--store", store, "--log-level", "DEBUG")
    assert human.code == 0, human.stderr
    assert password not in human.stdout and password not in human.stderr
    assert_not_in_store(tmp_path, password)

    listed = noetl("credential", "list", "--store", store)
    assert listed.code == 0 and "pg_local" in listed.stdout and "postgres" in listed.stdout
    assert password not in listed.stdout
    listed_json = noetl("credential", "list", "--json", "--store", store)
    assert json.loads(listed_json.stdout) == [{"name": "pg_local", "type": "postgres", "description": None}]

    shown = noetl("credential", "show", "pg_local", "--store", store)
    assert shown.code == 0, shown.stderr
    assert password not in shown.stdout
    doc = json.loads(shown.stdout)
    assert doc["name"] == "pg_local" and doc["type"] == "postgres"
    assert doc["data"]["db_password"] == MASK
    assert doc["data"]["db_host"] == pg_credential_data(pg_dsn)["db_host"]  # non-secret fields stay readable
    assert doc["data"]["db_user"] == pg_credential_data(pg_dsn)["db_user"]

    revealed = noetl("credential", "show", "pg_local", "--reveal", "--store", store)
    assert revealed.code == 0, revealed.stderr
    assert json.loads(revealed.stdout)["data"] == pg_credential_data(pg_dsn, password=password)


def test_bearer_token_echoed_back_is_masked_everywhere(
    tmp_path: Path, store: str, echo_playbook: Path, stub_api: StubAPI
) -> None:
    token = f"tok-{uuid.uuid4()}"
    add_credential(store, "api_token", "bearer", {"token": token})
    # The playbook may not contain the secret, so it checks the header it got by its hash.
    expected = hashlib.sha256(f"Bearer {token}".encode()).hexdigest()
    result = run_playbook(
        echo_playbook,
        store,
        "--set",
        f"url={stub_api.base_url}/api/v1/echo",
        "--set",
        f"expected_sha={expected}",
    )
    assert result.code == 0, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome = result.json
    # The stub received the real token; every stored or printed copy of it is masked.
    assert outcome["steps"]["check"]["result"] == {"sent_real_token": True}
    assert outcome["steps"]["start"]["result"]["body"]["headers"]["authorization"] == f"Bearer {MASK}"
    assert token not in result.stdout and token not in result.stderr
    shown = noetl("events", outcome["execution_id"], "--store", store, "--json")
    assert shown.code == 0 and token not in shown.stdout
    assert_not_in_store(tmp_path, token)


def test_credential_list_show_rm(store: str) -> None:
    add_credential(store, "api_token", "bearer", {"token": "tok-secret-1"})
    add_credential(store, "pg_a", "postgres", {"db_host": "h", "db_password": "pw-a"})
    listed = json.loads(noetl("credential", "list", "--json", "--store", store).stdout)
    assert [(c["name"], c["type"]) for c in listed] == [("api_token", "bearer"), ("pg_a", "postgres")]

    # Adding a name again replaces it.
    add_credential(store, "pg_a", "postgres", {"db_host": "h2", "db_password": "pw-b"})
    revealed = noetl("credential", "show", "pg_a", "--reveal", "--store", store)
    assert json.loads(revealed.stdout)["data"] == {"db_host": "h2", "db_password": "pw-b"}

    removed = noetl("credential", "rm", "pg_a", "--store", store)
    assert removed.code == 0 and "credential 'pg_a' deleted" in removed.stdout
    listed = json.loads(noetl("credential", "list", "--json", "--store", store).stdout)
    assert [c["name"] for c in listed] == ["api_token"]

    missing = noetl("credential", "show", "pg_a", "--store", store)
    assert missing.code == 1 and "credential 'pg_a' not found" in missing.stderr
    again = noetl("credential", "rm", "pg_a", "--store", store)
    assert again.code == 1 and "credential 'pg_a' not found" in again.stderr


@pytest.mark.postgres
def test_credential_from_upstream_file_shape(
    tmp_path: Path, store: str, pg_dsn: str, pg_playbook: Path
) -> None:
    password = f"pw-{uuid.uuid4()}"
    data = pg_credential_data(pg_dsn, password=password)
    cred_file = tmp_path / "cred.json"
    cred_file.write_text(
        json.dumps(
            {
                "name": "pg_from_file",
                "type": "postgres",
                "description": "local test database",
                "tags": ["test", "local"],
                "data": data,
            }
        ),
        encoding="utf-8",
    )
    added = noetl("credential", "add", "-f", cred_file, "--store", store)
    assert added.code == 0, added.stderr
    assert "credential 'pg_from_file' (postgres) saved" in added.stdout
    assert password not in added.stdout

    shown = json.loads(noetl("credential", "show", "pg_from_file", "--store", store).stdout)
    assert shown["description"] == "local test database"
    assert shown["data"]["db_password"] == MASK
    revealed = json.loads(noetl("credential", "show", "pg_from_file", "--reveal", "--store", store).stdout)
    assert revealed["data"] == data
    assert_not_in_store(tmp_path, password)

    result = run_playbook(pg_playbook, store, "--set", "pg_auth=pg_from_file")
    assert result.code == 0, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    assert result.json["steps"]["start"]["result"]["rows"] == [{"one": 1, "who": "postgres"}]


def test_credential_add_rejects_incomplete_input(tmp_path: Path, store: str) -> None:
    no_data = noetl("credential", "add", "x", "--type", "postgres", "--store", store)
    assert no_data.code == 2 and "needs 'data'" in no_data.stderr
    bad_json = noetl("credential", "add", "x", "--type", "postgres", "--data", "{nope", "--store", store)
    assert bad_json.code == 2 and "--data is not valid JSON" in bad_json.stderr
    nameless = tmp_path / "nameless.json"
    nameless.write_text(json.dumps({"type": "postgres", "data": {}}), encoding="utf-8")
    no_name = noetl("credential", "add", "-f", nameless, "--store", store)
    assert no_name.code == 2 and "needs a 'name'" in no_name.stderr


# --------------------------------------------------------------------------------------------
# (b) tool failures


def closed_port() -> int:
    """A local TCP port with nothing listening (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_connection_refused(store: str, http_playbook: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/v1/items"
    outcome, log, _ = failed_run(http_playbook, store, "--set", f"url={url}")
    message = step_error(outcome, log)
    assert url in message
    assert "connection refused" in message.lower()
    assert len(call_errors(log)) == 1  # no policy rule: no retry


def test_http_500_without_policy_fails(store: str, http_playbook: Path, stub_api: StubAPI) -> None:
    url = f"{stub_api.base_url}/api/v1/status/500"
    outcome, log, _ = failed_run(http_playbook, store, "--set", f"url={url}")
    message = step_error(outcome, log)
    assert "HTTP 500" in message
    assert url in message
    assert stub_api.state.call_count("/api/v1/status/500") == 1  # no implicit retry


def test_http_500_with_retry_rule_gives_up_after_3_attempts(
    store: str, http_retry_playbook: Path, stub_api: StubAPI
) -> None:
    url = f"{stub_api.base_url}/api/v1/status/500"
    outcome, log, _ = failed_run(http_retry_playbook, store, "--set", f"url={url}")
    message = step_error(outcome, log)
    assert "HTTP 500" in message
    assert "after 3 attempts" in message
    assert stub_api.state.call_count("/api/v1/status/500") == 3
    errors = call_errors(log)
    assert len(errors) == 3
    assert [e["result"]["context"].get("retry_in_seconds") for e in errors] == [0.1, 0.1, None]


def test_http_flaky_with_retry_rule_recovers(
    store: str, http_retry_playbook: Path, stub_api: StubAPI
) -> None:
    url = f"{stub_api.base_url}/api/v1/flaky?page=1&fail_on=1"
    result = run_playbook(http_retry_playbook, store, "--set", f"url={url}")
    assert result.code == 0, f"exit {result.code}:\n{result.stdout}\n{result.stderr}"
    outcome = result.json
    assert outcome["status"] == "COMPLETED"
    assert outcome["steps"]["start"]["result"]["status_code"] == 200
    assert outcome["steps"]["start"]["result"]["body"]["attempt"] == 2
    assert outcome["steps"]["end"]["status"] == "COMPLETED"
    assert stub_api.state.call_count("/api/v1/flaky") == 2
    assert stub_api.state.flaky_log == [(1, 500), (1, 200)]
    log = events(outcome["execution_id"], store)
    assert len(call_errors(log)) == 1


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELEC 1", ['syntax error at or near "SELEC"', "SQLSTATE 42601"]),
        (
            "SELECT * FROM no_such_table_for_noetl_tests",
            ['relation "no_such_table_for_noetl_tests" does not exist', "SQLSTATE 42P01"],
        ),
    ],
)
def test_sql_error_reports_database_message(
    store: str, pg_dsn: str, pg_playbook: Path, sql: str, expected: list[str]
) -> None:
    add_credential(store, "pg_local", "postgres", pg_credential_data(pg_dsn))
    outcome, log, _ = failed_run(pg_playbook, store, "--set", f"sql={sql}")
    message = step_error(outcome, log)
    for text in expected:
        assert text in message
    assert sql in message  # which statement failed
    assert len(call_errors(log)) == 1  # a syntax error is not retried


@pytest.mark.postgres
def test_postgres_connection_refused_names_target_not_password(
    tmp_path: Path, store: str, pg_dsn: str, pg_playbook: Path
) -> None:
    password = f"pw-{uuid.uuid4()}"
    data = pg_credential_data(pg_dsn, password=password, port=1)
    add_credential(store, "pg_down", "postgres", data)
    outcome, log, result = failed_run(pg_playbook, store, "--set", "pg_auth=pg_down")
    message = step_error(outcome, log)
    assert f"{data['db_host']}:1" in message
    assert "connection refused" in message.lower()
    assert "pg_down" in message  # which credential was used
    assert password not in message
    assert password not in result.stdout and password not in result.stderr
    shown = noetl("events", outcome["execution_id"], "--store", store, "--json")
    assert password not in shown.stdout
    assert_not_in_store(tmp_path, password)
