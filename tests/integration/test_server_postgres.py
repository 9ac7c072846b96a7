"""The control plane on PostgreSQL.

1. The route tests of `test_api.py` re-run over an app whose store is PostgreSQL (a schema of this
   module's own, emptied before each test), plus PostgreSQL-only checks that read the tables
   with SQL: idempotent ingest leaves one `event` row, worker pools land in `runtime`, credential
   data is encrypted in `credential.data_encrypted`, pool and trace reach events and commands.
2. Dedup on PostgreSQL: the default 300 s window, an explicit window, the parent scope with its
   audit event, and the race (10 identical requests at once, against one app and against two apps
   on two stores sharing the schema, as two servers are). Two such apps also arbitrate claims,
   share progress and catalog versions, and a server does not offer commands another server took.
3. The seed's SQL (seed-iterator-metadata-propagation.md) run unchanged, the schema name put for
   `noetl`, after a real `noetl server start --with-worker` ran a nested playbook in a loop.

The conformance corpus runs through such a server in `tests/conformance` (its `server` mode).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from tests.integration import test_api as api
from tests.integration.test_api import claim, error, execute, ok, pending, register, status_of
from tests.support.auth import AUTH, TEST_TOKEN

from noetl.api.app import create_app
from noetl.ids import Snowflake
from noetl.runtime.control import ControlPlane
from noetl.store import open_store
from noetl.store.crypto import KEY_ENV
from noetl.store.ports import Store

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("pg_dsn")]

TEST_KEY = "q2PN0mB6cWuZ7s3b3Qd9pQ2cC1kXJ0m5Q8v4aHq9Jx0="
TABLES = ("event", "execution", "catalog", "credential", "command", "runtime", "execute_dedup")
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def _schema_name() -> str:
    return f"noetl_t_{uuid.uuid4().hex[:8]}"


def _store_url(pg_dsn: str, schema: str) -> str:
    return f"{pg_dsn}?schema={schema}"


def _drop_schema(pg_dsn: str, schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sql(pg_dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; the rows it returns (none for a statement without a result)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description is not None else []


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _encryption_key() -> Iterator[None]:
    """A fixed credential key (no key file written to the user's data dir)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, TEST_KEY)
        yield


@pytest.fixture(scope="module")
def schema(pg_dsn: str) -> Iterator[str]:
    """The schema of the in-process route tests (the server subprocess has another)."""
    name = _schema_name()
    yield name
    _drop_schema(pg_dsn, name)


@pytest.fixture(scope="module")
def pg_store(pg_dsn: str, schema: str, _encryption_key: None) -> Iterator[Store]:
    store = open_store(_store_url(pg_dsn, schema))
    yield store
    store.close()


@pytest.fixture
def control(pg_dsn: str, pg_store: Store, schema: str) -> ControlPlane:
    """Overrides test_api's `control`: a fresh control plane over an emptied PostgreSQL schema."""
    tables = ", ".join(f'"{schema}".{table}' for table in TABLES)
    sql(pg_dsn, f"TRUNCATE {tables}")
    return ControlPlane(pg_store)


@pytest.fixture
def client(pg_dsn: str, control: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(control, admin_token=TEST_TOKEN), headers=AUTH) as test_client:
        yield test_client


# ---------------------------------------------------------------------------------- 1. test_api routes again
# The same functions, collected here, so their `client` / `control` are the PostgreSQL ones above.

test_health_routes = api.test_health_routes
test_openapi_docs_list_every_route = api.test_openapi_docs_list_every_route
test_error_bodies = api.test_error_bodies
test_register_counts_versions_per_path = api.test_register_counts_versions_per_path
test_register_accepts_base64_content = api.test_register_accepts_base64_content
test_register_rejects_bad_documents = api.test_register_rejects_bad_documents
test_catalog_list_filters_by_kind_newest_first = api.test_catalog_list_filters_by_kind_newest_first
test_catalog_resource_lookups = api.test_catalog_resource_lookups
test_execute_validates_and_resolves = api.test_execute_validates_and_resolves
test_execute_starts_with_payload_or_workload_alias = api.test_execute_starts_with_payload_or_workload_alias
test_execute_loop_start_counts_every_command = api.test_execute_loop_start_counts_every_command
test_execute_batch_limits = api.test_execute_batch_limits
test_execute_batch_contains_partial_failure = api.test_execute_batch_contains_partial_failure
test_dedup_returns_the_first_execution = api.test_dedup_returns_the_first_execution
test_dedup_key_is_not_spent_by_a_failed_request = api.test_dedup_key_is_not_spent_by_a_failed_request
test_dedup_is_race_safe = api.test_dedup_is_race_safe
test_pending_and_get_command = api.test_pending_and_get_command
test_claim_arbitration = api.test_claim_arbitration
test_worker_protocol_runs_a_playbook = api.test_worker_protocol_runs_a_playbook
test_event_ingest_is_idempotent = api.test_event_ingest_is_idempotent
test_event_ingest_errors = api.test_event_ingest_errors
test_event_batch_inherits_the_envelope = api.test_event_batch_inherits_the_envelope
test_executions_list_get_and_filters = api.test_executions_list_get_and_filters
test_cancel = api.test_cancel
test_worker_pool_registration = api.test_worker_pool_registration
test_heartbeat_renews_and_deregister_releases_leases = (
    api.test_heartbeat_renews_and_deregister_releases_leases
)
test_credentials_crud_never_leaks_data = api.test_credentials_crud_never_leaks_data
test_in_process_worker_runs_nested_playbooks = api.test_in_process_worker_runs_nested_playbooks


# ---------------------------------------------------------------------------------- 1b. PostgreSQL-only checks


def _events(pg_dsn: str, schema: str, execution_id: str | int) -> list[tuple[str, dict[str, Any]]]:
    rows = sql(
        pg_dsn,
        f'SELECT event_type, meta FROM "{schema}".event WHERE execution_id = %s ORDER BY event_id',
        (int(execution_id),),
    )
    return [(str(kind), dict(meta or {})) for kind, meta in rows]


def _issued_pools(pg_dsn: str, schema: str, execution_id: str | int) -> list[tuple[Any, ...]]:
    """(step, pool) of each `command.issued` row: commands live in the event log (the `command`
    table of the migrations is not written by the control plane)."""
    return sql(
        pg_dsn,
        f"SELECT node_name, meta->>'pool' FROM \"{schema}\".event"
        " WHERE execution_id = %s AND event_type = 'command.issued' ORDER BY event_id",
        (int(execution_id),),
    )


def test_execution_pool_and_trace_reach_events_and_commands(
    client: TestClient, pg_dsn: str, schema: str
) -> None:
    register(client)
    started = execute(client, {"path": "tests/api/two_steps", "execution_pool": "iot", "trace": TRACE})
    assert started["status"] == "started"
    assert pending(client, pool="shared") == []
    [command] = pending(client, pool="iot")
    fetched = ok(client.get(f"/api/commands/{command['event_id']}"))
    assert fetched["meta"]["pool"] == "iot"
    assert fetched["meta"]["trace"] == TRACE
    log = _events(pg_dsn, schema, started["execution_id"])
    kinds = [kind for kind, _ in log]
    assert kinds[0] == "playbook_started" and "command.issued" in kinds
    start_meta = log[0][1]
    assert start_meta["execution_pool"] == "iot" and start_meta["trace"] == TRACE
    assert all(meta.get("trace") == TRACE for _, meta in log), log
    assert [meta["pool"] for kind, meta in log if kind == "command.issued"] == ["iot"]
    assert _issued_pools(pg_dsn, schema, started["execution_id"]) == [("start", "iot")]

    # A child started with parent_execution_id and no trace of its own inherits the parent's.
    child = execute(client, {"path": "tests/api/two_steps", "parent_execution_id": started["execution_id"]})
    child_log = _events(pg_dsn, schema, child["execution_id"])
    assert child_log and all(meta.get("trace") == TRACE for _, meta in child_log), child_log
    [child_command] = [c for c in pending(client) if str(c["execution_id"]) == child["execution_id"]]
    assert ok(client.get(f"/api/commands/{child_command['event_id']}"))["meta"]["trace"] == TRACE
    parents = sql(
        pg_dsn,
        f'SELECT DISTINCT parent_execution_id FROM "{schema}".event WHERE execution_id = %s',
        (int(child["execution_id"]),),
    )
    assert parents == [(int(started["execution_id"]),)]
    listed = ok(client.get("/api/executions", params={"parent_execution_id": started["execution_id"]}))
    assert [str(r["execution_id"]) for r in listed] == [child["execution_id"]]


def test_batch_keeps_per_item_routing_and_the_seed_shape(
    client: TestClient, pg_dsn: str, schema: str
) -> None:
    register(client)
    items = [
        {"path": "tests/api/two_steps", "execution_pool": "iot", "payload": {"who": "x"}},
        {"path": "tests/api/two_steps", "dedup": {"key": "batch-k"}},
        {"path": "tests/api/missing"},
        {"path": "tests/api/two_steps", "trace": TRACE},
        {"path": "tests/api/two_steps", "dedup": {"key": "batch-k"}},
    ]
    body = ok(client.post("/api/execute/batch", json={"executions": items}))
    assert (body["count"], body["started"], body["duplicates"], body["failed"]) == (5, 3, 1, 1)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == ["started", "started", "error", "started", "duplicate"]
    assert results[4]["execution_id"] == results[1]["execution_id"]
    # seed: a started item omits `error`; an error item omits `execution_id`
    assert "error" not in results[0] and "execution_id" not in results[2]
    assert results[2]["error"] == "Playbook not found: tests/api/missing"

    assert _issued_pools(pg_dsn, schema, results[0]["execution_id"]) == [("start", "iot")]
    assert _issued_pools(pg_dsn, schema, results[1]["execution_id"]) == [("start", "shared")]
    assert _issued_pools(pg_dsn, schema, results[3]["execution_id"]) == [("start", "shared")]
    first_meta = _events(pg_dsn, schema, results[0]["execution_id"])[0][1]
    assert first_meta["execution_pool"] == "iot"
    assert ok(client.get(f"/api/executions/{results[0]['execution_id']}"))["workload"] == {"who": "x"}
    traced = _events(pg_dsn, schema, results[3]["execution_id"])
    assert all(meta.get("trace") == TRACE for _, meta in traced)
    assert all("trace" not in meta for _, meta in _events(pg_dsn, schema, results[0]["execution_id"]))
    rows = sql(pg_dsn, f"SELECT count(*) FROM \"{schema}\".event WHERE event_type = 'playbook_started'")
    assert rows == [(3,)]


def test_posting_an_event_twice_stores_one_row(
    client: TestClient, control: ControlPlane, pg_dsn: str, schema: str
) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    ok(claim(client, command["event_id"]))
    event_id = Snowflake((getattr(control.ids, "node", 0) + 1) % 1024)()  # a worker's own node
    body = {
        "execution_id": started["execution_id"],
        "step": "start",
        "event_type": "command.started",
        "payload": {"command_id": command["command_id"]},
        "event_id": str(event_id),
        "worker_id": "w1",
    }
    first = client.post("/api/events", json=body)
    second = client.post("/api/events", json=body)
    assert 200 <= first.status_code < 300 and 200 <= second.status_code < 300, (first.text, second.text)
    batch = {"execution_id": started["execution_id"], "worker_id": "w1", "events": [dict(body)]}
    assert ok(client.post("/api/events/batch", json=batch))["status"] == "ok"
    rows = sql(
        pg_dsn,
        f'SELECT execution_id, event_type, node_name, worker_id FROM "{schema}".event WHERE event_id = %s',
        (event_id,),
    )
    assert rows == [(int(started["execution_id"]), "command.started", "start", "w1")]


def test_worker_pools_live_in_the_runtime_table(client: TestClient, pg_dsn: str, schema: str) -> None:
    def runtime_rows() -> dict[str, tuple[Any, ...]]:
        rows = sql(pg_dsn, f'SELECT name, kind, status, capacity, labels, heartbeat FROM "{schema}".runtime')
        return {str(row[0]): row[1:] for row in rows}

    ok(
        client.post(
            "/api/worker/pool/register", json={"name": "pg-a", "capacity": 2, "labels": {"zone": "z1"}}
        )
    )
    ok(client.post("/api/worker/pool/register", json={"name": "pg-b", "status": "ready"}))
    rows = runtime_rows()
    assert set(rows) == {"pg-a", "pg-b"}
    kind, _, capacity, labels, beat = rows["pg-a"]
    assert (kind, capacity, labels) == ("worker_pool", 2, {"zone": "z1"})
    sql(pg_dsn, f"UPDATE \"{schema}\".runtime SET heartbeat = now() - interval '1 hour' WHERE name = 'pg-a'")
    stale = runtime_rows()["pg-a"][4]
    ok(client.post("/api/worker/pool/heartbeat", json={"name": "pg-a"}))
    renewed = runtime_rows()["pg-a"][4]
    assert renewed > stale and renewed >= beat
    assert ok(client.post("/api/worker/pool/deregister", json={"name": "pg-a"}))["status"] == "ok"
    assert set(runtime_rows()) == {"pg-b"}
    deleted = client.request("DELETE", "/api/worker/pool/deregister", json={"name": "pg-b"})
    assert ok(deleted)["status"] == "ok"
    assert runtime_rows() == {}
    assert ok(client.get("/api/worker/pools")) == []


def test_credentials_are_encrypted_in_the_table(
    client: TestClient, control: ControlPlane, pg_dsn: str, schema: str
) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    data = {"db_host": "db.internal", "db_password": secret}
    created = ok(client.post("/api/credentials", json={"name": "pg_cred", "type": "postgres", "data": data}))
    assert "data" not in created and secret not in json.dumps(created)
    listing = client.get("/api/credentials")
    assert secret not in listing.text and [c["name"] for c in listing.json()["items"]] == ["pg_cred"]
    plain = client.get("/api/credentials/pg_cred")
    assert "data" not in plain.json() and secret not in plain.text
    assert client.get("/api/credentials/pg_cred", params={"include_data": "true"}).status_code == 403
    stored = control.store.get_credential("pg_cred")
    assert stored is not None and stored.data == data
    [(name, kind, sealed)] = sql(pg_dsn, f'SELECT name, type, data_encrypted FROM "{schema}".credential')
    assert (name, kind) == ("pg_cred", "postgres")
    assert secret not in sealed and "db.internal" not in sealed and "db_password" not in sealed
    assert ok(client.delete("/api/credentials/pg_cred"))["id"] == "pg_cred"
    assert sql(pg_dsn, f'SELECT count(*) FROM "{schema}".credential') == [(0,)]


def test_cancel_is_recorded_in_the_tables(client: TestClient, pg_dsn: str, schema: str) -> None:
    register(client)
    started = execute(client)
    command = pending(client)[0]
    ok(client.post(f"/api/executions/{started['execution_id']}/cancel", json={"reason": "pg"}))
    assert status_of(client, started["execution_id"])["status"] == "CANCELLED"
    error(claim(client, command["event_id"], "w9"), 409)
    rows = sql(
        pg_dsn,
        f'SELECT status, completed_at FROM "{schema}".execution WHERE execution_id = %s',
        (int(started["execution_id"]),),
    )
    assert rows[0][0] == "CANCELLED" and rows[0][1] is not None
    kinds = [kind for kind, _ in _events(pg_dsn, schema, started["execution_id"])]
    assert kinds[-1] == "playbook.cancelled"


# ---------------------------------------------------------------------------------- 2. dedup


def _dedup_request(key: str, **spec: Any) -> dict[str, Any]:
    return {"path": "tests/api/two_steps", "dedup": {"key": key, **spec}}


def test_dedup_default_window_is_300_seconds(client: TestClient, pg_dsn: str, schema: str) -> None:
    register(client)
    first = execute(client, _dedup_request("default-window"))
    assert first["status"] == "started"
    second = execute(client, _dedup_request("default-window"))
    assert second == {"execution_id": first["execution_id"], "status": "duplicate", "commands_generated": 0}

    def age(seconds: int) -> None:
        sql(
            pg_dsn,
            f'UPDATE "{schema}".execute_dedup SET seen_at = now() - make_interval(secs => %s) WHERE dedup_key = %s',
            (seconds, "default-window"),
        )

    age(290)  # still inside the default window
    assert execute(client, _dedup_request("default-window"))["execution_id"] == first["execution_id"]
    age(310)  # past 300 s: a new execution starts
    third = execute(client, _dedup_request("default-window"))
    assert third["status"] == "started" and third["execution_id"] != first["execution_id"]
    assert execute(client, _dedup_request("default-window"))["execution_id"] == third["execution_id"]


def test_dedup_explicit_window(client: TestClient, pg_dsn: str, schema: str) -> None:
    register(client)
    # window 0: nothing is ever a duplicate
    zero = [execute(client, _dedup_request("zero", window_secs=0)) for _ in range(3)]
    assert [z["status"] for z in zero] == ["started"] * 3
    assert len({z["execution_id"] for z in zero}) == 3
    # window 1 s: a duplicate inside it, a new execution after it
    first = execute(client, _dedup_request("one", window_secs=1))
    again = execute(client, _dedup_request("one", window_secs=1))
    assert first["status"] == "started"
    assert again == {"execution_id": first["execution_id"], "status": "duplicate", "commands_generated": 0}
    time.sleep(1.2)
    later = execute(client, _dedup_request("one", window_secs=1))
    assert later["status"] == "started" and later["execution_id"] != first["execution_id"]
    # an explicit long window is honoured the same way
    sixty = execute(client, _dedup_request("sixty", window_secs=60))
    sql(
        pg_dsn,
        f"UPDATE \"{schema}\".execute_dedup SET seen_at = now() - interval '50 seconds' WHERE dedup_key = 'sixty'",
    )
    assert execute(client, _dedup_request("sixty", window_secs=60))["status"] == "duplicate"
    started = sql(pg_dsn, f"SELECT count(*) FROM \"{schema}\".event WHERE event_type = 'playbook_started'")
    assert started == [(6,)]
    assert sixty["status"] == "started"


def test_dedup_is_scoped_by_parent_and_audited(client: TestClient, pg_dsn: str, schema: str) -> None:
    register(client)
    parent = execute(client)
    scoped = {**_dedup_request("msg-1"), "parent_execution_id": parent["execution_id"]}
    first = execute(client, scoped)
    second = execute(client, scoped)
    assert first["status"] == "started" and second["execution_id"] == first["execution_id"]
    assert second["status"] == "duplicate"
    unscoped = execute(client, _dedup_request("msg-1"))  # the same key in another scope
    assert unscoped["status"] == "started" and unscoped["execution_id"] != first["execution_id"]
    rows = sql(
        pg_dsn,
        f"SELECT execution_id, result->'context' FROM \"{schema}\".event"
        " WHERE event_type = 'subscription.message.deduplicated'",
    )
    assert len(rows) == 1 and rows[0][0] == int(parent["execution_id"])
    audit = rows[0][1]
    assert audit["dedup_key"] == "msg-1" and audit["original_execution_id"] == first["execution_id"]
    assert api.work(client)
    for execution in (parent, first, unscoped):
        assert status_of(client, execution["execution_id"])["status"] == "COMPLETED"


def _race(clients: list[TestClient], request: dict[str, Any], threads: int = 10) -> list[dict[str, Any]]:
    barrier = threading.Barrier(threads)
    answers: list[dict[str, Any]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def post(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            body = ok(clients[index % len(clients)].post("/api/execute", json=request))
            with lock:
                answers.append(body)
        except BaseException as exc:  # re-raised in the test thread
            with lock:
                failures.append(exc)

    runners = [threading.Thread(target=post, args=(i,)) for i in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=60)
    if failures:
        raise failures[0]
    assert len(answers) == threads
    return answers


def _assert_one_winner(answers: list[dict[str, Any]], pg_dsn: str, schema: str) -> None:
    statuses = sorted(a["status"] for a in answers)
    assert statuses == ["duplicate"] * (len(answers) - 1) + ["started"], statuses
    winner = next(a["execution_id"] for a in answers if a["status"] == "started")
    assert {a["execution_id"] for a in answers} == {winner}
    assert all(a["commands_generated"] == 0 for a in answers if a["status"] == "duplicate")
    rows = sql(pg_dsn, f"SELECT execution_id FROM \"{schema}\".event WHERE event_type = 'playbook_started'")
    assert rows == [(int(winner),)]
    assert sql(pg_dsn, f'SELECT execution_id FROM "{schema}".execution') == [(int(winner),)]


def test_dedup_race_on_one_app(client: TestClient, pg_dsn: str, schema: str) -> None:
    register(client)
    answers = _race([client], _dedup_request("race-one"))
    _assert_one_winner(answers, pg_dsn, schema)


def test_dedup_race_across_two_servers(client: TestClient, pg_dsn: str, schema: str) -> None:
    """Two control planes on two stores (two pools) over the same schema, as two servers are."""
    register(client)
    other_store = open_store(_store_url(pg_dsn, schema))
    try:
        with TestClient(create_app(ControlPlane(other_store), admin_token=TEST_TOKEN), headers=AUTH) as other:
            answers = _race([client, other], _dedup_request("race-two", window_secs=300))
            _assert_one_winner(answers, pg_dsn, schema)
            winner = answers[0]["execution_id"]
            assert status_of(other, winner)["status"] == "RUNNING"  # the other server sees it too
    finally:
        other_store.close()


# ---------------------------------------------------------------------------------- two servers, one schema


@pytest.fixture
def other(pg_dsn: str, schema: str, control: ControlPlane) -> Iterator[TestClient]:
    """A second app on a store of its own over the same schema: another server of the cluster."""
    store = open_store(_store_url(pg_dsn, schema))
    try:
        with TestClient(create_app(ControlPlane(store), admin_token=TEST_TOKEN), headers=AUTH) as test_client:
            yield test_client
    finally:
        store.close()


def test_two_servers_arbitrate_claims_and_share_progress(client: TestClient, other: TestClient) -> None:
    register(client)
    started = execute(client)
    [command] = pending(client)
    # concurrent claims of one command through both servers: exactly one worker gets it
    barrier = threading.Barrier(6)
    codes: dict[str, int] = {}

    def grab(index: int) -> None:
        barrier.wait(timeout=30)
        codes[f"w{index}"] = claim((client, other)[index % 2], command["event_id"], f"w{index}").status_code

    runners = [threading.Thread(target=grab, args=(i,)) for i in range(6)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=60)
    assert sorted(codes.values()) == [200] + [409] * 5, codes
    winner = next(w for w, code in codes.items() if code == 200)
    assert ok(claim(other, command["event_id"], winner))["status"] == "ok"  # idempotent on either server
    assert ok(claim(client, command["event_id"], winner))["status"] == "ok"
    # the run goes on through the other server; the first one sees it
    api.finish(other, command, {"via": "other"}, winner)
    [following] = pending(other)
    assert following["step"] == "end"
    ok(claim(other, following["event_id"], winner))
    api.finish(other, following, {"via": "other"}, winner)
    assert status_of(client, started["execution_id"])["status"] == "COMPLETED"
    assert status_of(client, started["execution_id"])["result"] == {"via": "other"}


def test_cancel_through_one_server_refuses_claims_through_the_other(
    client: TestClient, other: TestClient
) -> None:
    register(client)
    started = execute(client)
    [command] = pending(client)
    ok(client.post(f"/api/executions/{started['execution_id']}/cancel", json={}))
    assert "cancel" in error(claim(other, command["event_id"], "w-other"), 409).lower()
    assert status_of(other, started["execution_id"])["status"] == "CANCELLED"


def test_two_servers_register_versions_without_gaps(client: TestClient, other: TestClient) -> None:
    versions: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def post(index: int) -> None:
        barrier.wait(timeout=30)
        version = register((client, other)[index % 2])["version"]
        with lock:
            versions.append(version)

    runners = [threading.Thread(target=post, args=(i,)) for i in range(8)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(timeout=60)
    assert sorted(versions) == list(range(1, 9))
    latest = ok(other.post("/api/catalog/resource", json={"path": "tests/api/two_steps"}))
    assert latest["version"] == 8
    assert (
        ok(client.post("/api/catalog/resource", json={"path": "tests/api/two_steps", "version": "3"}))[
            "version"
        ]
        == 3
    )


def test_pending_drops_commands_claimed_through_another_server(client: TestClient, other: TestClient) -> None:
    register(client)
    for _ in range(2):
        execute(client)
    for command in pending(client):  # both run to the end through the other server
        ok(claim(other, command["event_id"], "w-other"))
        api.finish(other, command, {"ok": True}, "w-other")
        [following] = [c for c in pending(other) if c["execution_id"] == command["execution_id"]]
        ok(claim(other, following["event_id"], "w-other"))
        api.finish(other, following, {"ok": True}, "w-other")
    fresh = execute(client)
    # a worker polling this server with two free slots must see the one command really on offer
    offered = pending(client, limit=2)
    assert [str(c["execution_id"]) for c in offered] == [fresh["execution_id"]], offered


# ---------------------------------------------------------------------------------- the server subprocess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    schema: str
    dsn: str
    log: Path

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = httpx.post(self.url + path, json=body, headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, execution_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.get(f"/api/executions/{execution_id}/status")
            if status["status"] in TERMINAL:
                return status
            time.sleep(0.1)
        raise AssertionError(
            f"execution {execution_id} did not finish within {timeout}s: {status}\n{self.tail()}"
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def server(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `noetl server start --with-worker` on a schema of its own (the server creates it)."""
    schema = _schema_name()
    tmp = tmp_path_factory.mktemp("pg-server")
    log = tmp / "server.log"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_") or k == "NOETL_API_TOKEN"}
    env[KEY_ENV] = TEST_KEY
    command = [
        sys.executable, "-m", "noetl", "server", "start", "--host", "127.0.0.1", "--port", str(port),
        "--with-worker", "--workers", "16", "--store", _store_url(pg_dsn, schema),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become healthy:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Server(url, schema, pg_dsn, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _drop_schema(pg_dsn, schema)


def test_server_subprocess_runs_on_its_schema(server: Server) -> None:
    health = server.get("/api/health")
    assert health["status"] == "ok" and health["database"] == "connected"
    tables = {
        row[0]
        for row in sql(
            server.dsn,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (server.schema,),
        )
    }
    assert {"event", "execution", "catalog", "credential", "command", "runtime"} <= tables


# ---------------------------------------------------------------------------------- 3. the seed's SQL

ITER_CHILD = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: iter_child
  path: tests/pg/iter_child
workload:
  x: {}
workflow:
  - step: start
    tool:
      kind: python
      input: {x: "{{ workload.x }}"}
      code: |
        result = {"name": x["name"], "next_age": x["age"] + 1}
    next: finish
  - step: finish
    tool:
      kind: python
      input: {s: "{{ start }}"}
      code: |
        result = {"greeting": "hi " + s["name"], "next_age": s["next_age"]}
"""

ITER_PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: iter_parent
  path: tests/pg/iter_parent
workload:
  users:
    - {name: Alice, age: 28}
    - {name: Bob, age: 35}
    - {name: Carol, age: 41}
workflow:
  - step: start
    loop:
      in: "{{ workload.users }}"
      iterator: user
      spec: {mode: sequential}
    tool:
      kind: playbook
      path: tests/pg/iter_child
      return_step: finish
      input: {x: "{{ user }}"}
    next:
      arcs:
        - step: end
          when: "{{ event.name == 'loop.done' }}"
  - step: end
    tool:
      kind: python
      input: {r: "{{ start.results }}"}
      code: |
        result = {"children": r}
"""

USERS: list[dict[str, Any]] = [
    {"name": "Alice", "age": 28},
    {"name": "Bob", "age": 35},
    {"name": "Carol", "age": 41},
]


@pytest.fixture(scope="module")
def nested_run(server: Server) -> tuple[str, dict[str, Any]]:
    for content in (ITER_CHILD, ITER_PARENT):
        assert server.post("/api/catalog/register", {"content": content})["status"] == "success"
    started = server.post("/api/execute", {"path": "tests/pg/iter_parent"})
    status = server.wait(started["execution_id"])
    return started["execution_id"], status


def test_nested_loop_run_completes_over_http(nested_run: tuple[str, dict[str, Any]]) -> None:
    _, status = nested_run
    assert status["status"] == "COMPLETED", status
    assert status["result"] == {
        "children": [{"greeting": f"hi {u['name']}", "next_age": u["age"] + 1} for u in USERS]
    }


def _seed_sql(server: Server, statement: str) -> list[tuple[Any, ...]]:
    """A query of the seed document, unchanged but for the schema name."""
    return sql(server.dsn, statement.replace("noetl.event", f"{server.schema}.event"))


def test_seed_iterator_metadata_query(server: Server, nested_run: tuple[str, dict[str, Any]]) -> None:
    parent_id, _ = nested_run
    rows = _seed_sql(
        server,
        f"""
        SELECT
          execution_id,
          parent_execution_id,
          meta->>'iterator_index' as iteration,
          meta->>'iterator_count' as total,
          meta->'iterator_item' as item_data
        FROM noetl.event
        WHERE event_type = 'playbook_started'
          AND parent_execution_id = '{parent_id}'
        ORDER BY execution_id;
        """,
    )
    assert len(rows) == 3, rows
    assert [r[1] for r in rows] == [int(parent_id)] * 3
    assert [r[2] for r in rows] == ["0", "1", "2"]  # sequential: started in index order
    assert [r[3] for r in rows] == ["3", "3", "3"]
    assert [r[4] for r in rows] == USERS
    # the seed's generic form (`parent_execution_id IS NOT NULL`) finds exactly these children
    generic = _seed_sql(
        server,
        """
        SELECT execution_id, parent_execution_id, meta->>'iterator_index' as iteration,
          meta->>'iterator_count' as total, meta->'iterator_item' as item_data
        FROM noetl.event
        WHERE event_type = 'playbook_started' AND parent_execution_id IS NOT NULL
        ORDER BY execution_id;
        """,
    )
    assert generic == rows


def test_seed_join_query(server: Server, nested_run: tuple[str, dict[str, Any]]) -> None:
    parent_id, _ = nested_run
    iteration_of = {
        int(r[0]): r[1]
        for r in _seed_sql(
            server,
            f"SELECT execution_id, meta->>'iterator_index' FROM noetl.event"
            f" WHERE event_type = 'playbook_started' AND parent_execution_id = '{parent_id}'",
        )
    }
    assert sorted(iteration_of.values()) == ["0", "1", "2"]
    joined = _seed_sql(
        server,
        f"""
        SELECT
          child.execution_id,
          child.event_type,
          child.node_name,
          parent.meta->>'iterator_index' as iteration
        FROM noetl.event child
        JOIN noetl.event parent
          ON child.execution_id = parent.execution_id
          AND parent.event_type = 'playbook_started'
        WHERE child.parent_execution_id = '{parent_id}'
        ORDER BY parent.meta->>'iterator_index', child.event_id;
        """,
    )
    child_events = sql(
        server.dsn,
        f"SELECT execution_id, event_type, node_name FROM {server.schema}.event"
        " WHERE execution_id = ANY(%s) ORDER BY event_id",
        (list(iteration_of),),
    )
    assert len(joined) == len(child_events) > 3 * 4, (len(joined), len(child_events))
    assert all(iteration == iteration_of[int(execution_id)] for execution_id, _, _, iteration in joined)
    assert [r[3] for r in joined] == sorted(r[3] for r in joined)
    for execution_id in iteration_of:
        kinds = [r[1] for r in joined if int(r[0]) == execution_id]
        assert kinds[0] == "playbook_started" and kinds[-1] == "playbook.completed", kinds
        assert {"command.issued", "call.done", "command.completed"} <= set(kinds)
        assert {r[2] for r in joined if int(r[0]) == execution_id} >= {"start", "finish"}


def test_every_child_event_names_the_parent(server: Server, nested_run: tuple[str, dict[str, Any]]) -> None:
    parent_id, _ = nested_run
    rows = sql(
        server.dsn,
        f"""
        SELECT e.event_type, e.parent_execution_id, e.meta->>'iterator_index', s.meta->>'iterator_index'
        FROM {server.schema}.event e
        JOIN {server.schema}.event s ON s.execution_id = e.execution_id AND s.event_type = 'playbook_started'
        WHERE s.parent_execution_id = %s
        """,
        (int(parent_id),),
    )
    assert len(rows) > 12
    assert {r[1] for r in rows} == {int(parent_id)}
    # SYSTEM.md §3: every event of the child carries the iterator metadata too
    assert all(r[2] == r[3] for r in rows), [r for r in rows if r[2] != r[3]][:5]
    # and the parent's own events are not marked as anybody's child
    own = sql(
        server.dsn,
        f"SELECT DISTINCT parent_execution_id FROM {server.schema}.event WHERE execution_id = %s",
        (int(parent_id),),
    )
    assert own == [(None,)]
