"""Every playbook in `examples/` runs as its header says, with `noetl run --json`: network examples
against the deterministic HTTP stub (its URL passed with `--set api=...`), PostgreSQL examples in a
schema of their own (`--set schema=...`) with a `pg_examples` credential in the test's store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.support.cli import noetl, run_playbook
from tests.support.credentials import KEY_ENV, add_credential, fresh_encryption_key, pg_credential_data
from tests.support.stub_api import StubAPI

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "example-secret-token-42"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, fresh_encryption_key())  # inherited by the `noetl` subprocesses
    url = f"sqlite:///{tmp_path}/noetl.db"
    add_credential(url, "api_token", "bearer", {"token": TOKEN})
    return url


@pytest.fixture
def pg_store(store: str, pg_dsn: str) -> str:
    add_credential(store, "pg_examples", "postgres", pg_credential_data(pg_dsn))
    return store


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_examples_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def run(name: str, store: str, **values: Any) -> dict[str, Any]:
    """Run examples/<name>.yaml; assert it COMPLETED (exit 0) and return the `--json` outcome."""
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    result = run_playbook(EXAMPLES / f"{name}.yaml", store, *sets)
    assert result.stdout.strip(), result.stderr
    outcome: dict[str, Any] = result.json
    assert outcome["status"] == "COMPLETED", outcome["error"]
    assert result.code == 0
    assert set(outcome) == {"execution_id", "status", "error", "steps"}
    return outcome


def result_of(outcome: dict[str, Any], step: str) -> Any:
    assert outcome["steps"][step]["status"] == "COMPLETED", outcome["steps"][step]
    return outcome["steps"][step]["result"]


def test_every_example_has_a_header_and_validates() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 13
    for path in files:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{path.name} has no comment header"
        checked = noetl("validate", path)
        assert checked.code == 0, f"{path.name}: {checked.stderr}"


def test_hello(store: str) -> None:
    outcome = run("hello", store, who="NoETL")
    assert result_of(outcome, "end") == {"greeting": "Hello, NoETL!", "sum_of_squares": 14}


def test_http_python_postgres(pg_store: str, stub_api: StubAPI, schema: str, pg_dsn: str) -> None:
    outcome = run("http_python_postgres", pg_store, api=stub_api.base_url, schema=schema)
    # items 10..20 are worth >= 100: 11 rows, 100 + 110 + ... + 200
    assert result_of(outcome, "end") == {"fetched": 20, "kept": 11, "stored": 11, "total": 1650}
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(f'SELECT min(id), max(id) FROM "{schema}".example_items').fetchone()
    assert row == (10, 20)


def test_parallel_retries(store: str, stub_api: StubAPI) -> None:
    outcome = run("parallel_retries", store, api=stub_api.base_url)
    assert result_of(outcome, "summarize") == {"pages": [1, 2, 3, 4], "items": 35, "attempts": [1, 2, 1, 2]}
    assert stub_api.state.flaky_failures == {2: 1, 4: 1}  # the two 500s were retried


def test_pagination(store: str, stub_api: StubAPI) -> None:
    outcome = run("pagination", store, api=stub_api.base_url)
    assert result_of(outcome, "report") == {"pages": 4, "count": 35, "first": 1, "last": 35}
    assert stub_api.state.call_count("/api/v1/assessments") == 4  # the back-edge ran fetch 4 times


def test_nested_loop(store: str) -> None:
    outcome = run("nested_loop", store)
    assert result_of(outcome, "rank") == {
        "ranking": ["Carol", "Bob", "Alice"],
        "levels": {"Alice": "junior", "Bob": "senior", "Carol": "senior"},
    }


def test_score_user_runs_alone(store: str) -> None:
    outcome = run("score_user", store, user={"name": "Ada", "years": 12, "rating": 4.5})
    assert result_of(outcome, "grade") == {"name": "Ada", "score": 95.0, "level": "senior"}


def test_pipeline_labels(store: str, stub_api: StubAPI) -> None:
    outcome = run("pipeline_labels", store, api=stub_api.base_url)
    assert result_of(outcome, "end") == {
        "labels": ["clean", "count", "extract"],
        "first_email": "USER1@EXAMPLE.COM",
        "count": {"fetched": 5, "total": 35},
    }


def test_duckdb_postgres(pg_store: str, schema: str) -> None:
    outcome = run("duckdb_postgres", pg_store, schema=schema)
    # ids 1..30: region by id % 3 (0 north, 1 south, 2 east), amount id * 1.5
    expected = {
        region: {"orders": 10, "revenue": sum(i * 1.5 for i in range(1, 31) if i % 3 == rest)}
        for region, rest in (("north", 0), ("south", 1), ("east", 2))
    }
    assert result_of(outcome, "end") == {"regions": expected}


def test_shell(store: str) -> None:
    outcome = run("shell", store)
    assert result_of(outcome, "end") == {
        "sorted": ["alpha", "bravo", "charlie", "delta"],
        "lines": 4,
        "exit_codes": [0, 0, 0],
    }


def test_error_handling(store: str, stub_api: StubAPI) -> None:
    outcome = run("error_handling", store, api=stub_api.base_url)
    assert result_of(outcome, "end") == {"probe_error": "not_found", "tries": 3, "ok": True}
    assert stub_api.state.flaky_log == [(9, 500), (9, 500), (9, 200)]


@pytest.mark.parametrize(
    ("celsius", "branch", "advice"), [(30, "hot", "stay in the shade"), (12, "cold", "wear a coat")]
)
def test_workbook(store: str, celsius: int, branch: str, advice: str) -> None:
    outcome = run("workbook", store, temperature_c=celsius)
    assert result_of(outcome, branch) == {"advice": advice, "fahrenheit": celsius * 9 / 5 + 32}
    other = "cold" if branch == "hot" else "hot"
    assert outcome["steps"][other]["status"] == "SKIPPED"


def test_variables(store: str) -> None:
    outcome = run("variables", store, rate=0.2)
    assert result_of(outcome, "end") == {
        "currency": "EUR",
        "subtotal": 60,
        "taxed": [12.0, 24.0, 36.0],
        "total": 72.0,
    }


def test_cursor_loop(pg_store: str, schema: str, pg_dsn: str) -> None:
    outcome = run("cursor_loop", pg_store, schema=schema)
    assert result_of(outcome, "end") == {"processed": [1, 2, 3, 4, 5, 6, 7], "sample": "JOB-1"}
    with psycopg.connect(pg_dsn) as conn:
        states = conn.execute(f'SELECT DISTINCT state FROM "{schema}".example_queue').fetchall()
    assert states == [("done",)]


def test_credentials(store: str, stub_api: StubAPI, tmp_path: Path) -> None:
    outcome = run("credentials", store, api=stub_api.base_url)
    assert result_of(outcome, "end") == {
        "scheme": "Bearer",
        "token_chars": len(TOKEN),
        "body": {"hello": "world"},
    }
    assert TOKEN not in json.dumps(outcome)  # the echoed header is masked in the outcome
