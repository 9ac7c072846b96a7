"""Group P of the conformance corpus (local PostgreSQL), in every mode (`runner`).

The runner holds `pg_local`, `pg_k8s` and `pg_noetl_k8s` (locally in each run's store, added with
the real `noetl credential add`; on a server through `POST /api/credentials`). Each test reads the
tables the playbook wrote straight from PostgreSQL and checks the values of
noetl-conformance-corpus.md §2.3. The table names are shared between runs, so rows are selected by
this run's execution id wherever the playbook writes it (P2, P5); P3, P4 and P6 drop or truncate
their tables themselves.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conformance.runners import Runner

pytestmark = [pytest.mark.postgres, pytest.mark.conformance]


def query(dsn: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def test_p1_postgres_retry_connection(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("retry_test/postgres_retry_connection.yaml")
    start = outcome.results["start"]
    assert start["rows"] == [{"test_value": 1}]
    assert start["row_count"] == 1
    assert outcome.statuses == {"start": "COMPLETED", "end": "COMPLETED"}
    log = runner.events(outcome.execution_id)
    assert not [e for e in log if e["event_type"] == "call.error"]  # the query needed no retry


def test_p2_iterator_save(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("iterator_save_test/iterator_save_test.yaml")
    eid = outcome.execution_id
    rows = query(
        pg_dsn,
        "SELECT id, execution_id, item_name, item_value FROM public.iterator_save_test"
        " WHERE execution_id = %s ORDER BY id",
        eid,
    )
    assert rows == [
        {"id": f"{eid}:item{n}", "execution_id": eid, "item_name": f"item{n}", "item_value": 100 * n}
        for n in (1, 2, 3)
    ]
    assert outcome.results["process_items"]["count"] == 3


def test_p3_json_serialization_save(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("json_serialization_save/json_serialization_save.yaml")
    expected = {
        "data": {
            "string_field": "test_value",
            "number_field": 42,
            "nested_object": {"key1": "value1", "key2": "value2"},
            "array_field": [1, 2, 3, 4, 5],
        }
    }
    assert query(pg_dsn, "SELECT id, payload FROM public.json_bug_test ORDER BY id") == [
        {"id": 1, "payload": expected}
    ]
    assert outcome.results["verify_save"]["rows"] == [{"id": 1, "payload": expected}]


def test_p4_postgres_jsonb(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("data_transfer/postgres_jsonb_test/postgres_jsonb_test.yaml")
    rows = query(pg_dsn, "SELECT user_id, profile FROM public.postgres_jsonb_test ORDER BY user_id")
    assert [r["user_id"] for r in rows] == [1, 2, 3, 99]
    profiles = {r["user_id"]: r["profile"] for r in rows}
    assert profiles[1]["preferences"]["theme"] == "auto"
    assert profiles[2]["verified"] is True
    assert "verified" not in profiles[1] and profiles[3]["preferences"]["theme"] == "dark"
    assert profiles[99] == {"name": "Test User", "email": "test@example.com"}
    status = outcome.statuses
    assert status["validate_and_cleanup"] == "COMPLETED"
    assert status["cleanup"] != "COMPLETED"  # unreachable: no arc leads to it, so the table stays


def test_p5_playbook_composition(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("playbook_composition/playbook_composition.yaml")
    eid = outcome.execution_id
    names = ["Alice", "Bob", "Charlie", "Diana"]

    rows = query(
        pg_dsn,
        "SELECT id, user_name, profile_score, score_category FROM public.user_profile_results"
        " WHERE execution_id = %s",
        eid,
    )
    by_name = {r["user_name"]: r for r in rows}
    assert sorted(by_name) == names and len(rows) == 4
    expected_scores = {"Alice": 16.2, "Bob": 16.7, "Charlie": 15.6, "Diana": 21.2}
    for name in names:
        row = by_name[name]
        assert row["id"] == f"{eid}:{name}"
        assert row["profile_score"] == pytest.approx(expected_scores[name])
        assert row["score_category"] == "Junior"

    # Four child executions of the scorer, each pointing at this parent.
    children = runner.children(eid)
    assert len(children) == 4, children
    assert {c.status for c in children} == {"COMPLETED"}
    assert {c.path for c in children} == {"fixtures/playbooks/playbook_composition/user_profile_scorer"}

    # Each child's playbook_started carries its place in the parent's loop.
    started = []
    for child in children:
        first = runner.events(child.execution_id)[0]
        assert first["event_type"] == "playbook_started"
        assert runner.same_id(first["parent_execution_id"], eid), first["parent_execution_id"]
        started.append(first)
    started.sort(key=lambda e: e["meta"]["iterator_index"])
    assert [e["meta"]["iterator_index"] for e in started] == [0, 1, 2, 3]
    assert {e["meta"]["iterator_count"] for e in started} == {4}
    assert [e["meta"]["iterator_item"]["name"] for e in started] == names
    assert [e["context"]["workload"]["user_data"]["name"] for e in started] == names


def test_p6_save_simple_with_child_create_tables(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run_ok("save_storage_test/save_simple_test.yaml")
    eid = outcome.execution_id
    assert query(
        pg_dsn, "SELECT test_id, test_name, test_value, storage_type, test_execution FROM simple_test_flat"
    ) == [
        {
            "test_id": "100",
            "test_name": "Postgres flat structure test",
            "test_value": 42,
            "storage_type": "flat",
            "test_execution": eid,
        }
    ]
    nested = query(
        pg_dsn, "SELECT test_id, test_name, test_data, storage_type, test_execution FROM simple_test_nested"
    )
    assert nested == [
        {
            "test_id": "200",
            "test_name": "nested_structure_test",
            "test_data": {"value": 42.5, "nested_indicator": True, "test_type": "nested_structure"},
            "storage_type": "nested",
            "test_execution": eid,
        }
    ]
    children = runner.children(eid)
    assert [(c.path, c.status) for c in children] == [
        ("fixtures/playbooks/save_storage_test/create_tables", "COMPLETED")
    ]
    assert outcome.results["create_tables"] == {"status": "completed"}


def test_p7_broken_sql_fails(runner: Runner, pg_dsn: str) -> None:
    outcome = runner.run("broken_sql.yaml")
    assert outcome.code == 1, f"exit {outcome.code}:\n{outcome.body}\n{outcome.stderr}"
    assert outcome.status == "FAILED"
    status = outcome.statuses
    assert status["start"] == "COMPLETED"
    assert status["verify_pg_data"] == "FAILED"
    assert status["end"] not in ("COMPLETED", "RUNNING", "FAILED")
    # PostgreSQL's own message and SQLSTATE, not a generic "step failed".
    assert 'syntax error at or near "FROM"' in outcome.error
    assert "SQLSTATE 42601" in outcome.error
    assert "verify_pg_data" in outcome.error

    log = runner.events(outcome.execution_id)
    failed = [e for e in log if e["event_type"] == "command.failed" and e["node_name"] == "verify_pg_data"]
    assert len(failed) == 1
    assert 'syntax error at or near "FROM"' in failed[0]["result"]["context"]["error"]
    assert not [
        e for e in log if e["node_name"] == "end" and e["event_type"] in ("step.enter", "command.issued")
    ]
    assert log[-1]["event_type"] == "playbook.failed"
