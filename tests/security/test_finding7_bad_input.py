"""Finding 7: 500s for ids of 2^63 and more (`OverflowError` on SQLite, `bigint out of range` on
PostgreSQL) and for NUL bytes in text fields on PostgreSQL; and on PostgreSQL a NUL byte inside a
step result lost the outcome: `/status` said COMPLETED from memory while the event log ended at
`command.started` and the execution row stayed RUNNING.

Now out-of-range ids are a 404 (in a path) or a 422 (in a body or query), NUL characters in text
fields a 422, and a NUL inside data is stored (escaped) like any other character.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.security.helpers import TWO_STEPS, events, execute, http, ok, register, wait_end
from tests.support.cluster import Cluster

HUGE = [str(2**63), str(2**64 + 5), "99999999999999999999999", "-1"]
NUL_RESULT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: nul_result
  path: security/nul_result
workflow:
  - step: start
    tool:
      kind: python
      code: |
        result = {"text": "before\\x00after", "list": ["\\x00"]}
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"noetl_sec_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{dsn}?schema={schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _no_500(answer: object) -> None:
    status = getattr(answer, "status_code", 0)
    assert status < 500, f"{getattr(answer, 'request', '')}: {status} {getattr(answer, 'text', '')[:300]}"


def test_ids_out_of_range_are_client_errors(store_url: str, tmp_path: Path) -> None:
    with Cluster(tmp_path, store_url) as cluster, http(cluster.start_server("server").url) as client:
        register(client, TWO_STEPS)
        for bad in HUGE:
            for answer in (
                client.get(f"/api/executions/{bad}"),
                client.get(f"/api/executions/{bad}/status"),
                client.get(f"/api/executions/{bad}/events"),
                client.post(f"/api/executions/{bad}/cancel", json={}),
                client.get(f"/api/commands/{bad}"),
                client.post(f"/api/commands/{bad}/claim", json={"worker_id": "w"}),
            ):
                _no_500(answer)
                assert answer.status_code in (404, 422)
            for answer in (
                client.get("/api/executions", params={"parent_execution_id": bad}),
                client.post("/api/execute", json={"catalog_id": bad}),
                client.post("/api/execute", json={"path": "security/two_steps", "parent_execution_id": bad}),
                client.post("/api/catalog/resource", json={"catalog_id": bad}),
                client.post("/api/events", json={"execution_id": bad, "event_type": "x"}),
                client.post("/api/events/batch", json={"execution_id": bad, "events": [{"event_type": "x"}]}),
                client.post("/api/commands/claim", json={"worker_id": "w", "event_ids": [bad]}),
                client.post("/api/executions/1/cancel", json={}),
            ):
                _no_500(answer)
                assert answer.status_code in (200, 404, 422), answer.text[:300]
                if answer.status_code == 200:  # a filter that matches nothing
                    assert answer.json() == []


def test_nul_characters_in_text_fields_are_refused(store_url: str, tmp_path: Path) -> None:
    with Cluster(tmp_path, store_url) as cluster, http(cluster.start_server("server").url) as client:
        register(client, TWO_STEPS)
        nul = "a\x00b"
        for method, path, body in (
            ("POST", "/api/catalog/register", {"content": nul}),
            ("POST", "/api/catalog/list", {"resource_type": nul}),
            ("POST", "/api/catalog/resource", {"path": nul}),
            ("POST", "/api/execute", {"path": nul}),
            ("POST", "/api/execute", {"path": "security/two_steps", "execution_pool": nul}),
            ("POST", "/api/credentials", {"name": nul, "type": "t", "data": {}}),
            ("POST", "/api/worker/pool/register", {"name": nul}),
            ("POST", "/api/worker/pool/heartbeat", {"name": nul}),
            ("POST", "/api/tokens", {"name": nul, "scope": "read"}),
            ("POST", "/api/commands/claim", {"worker_id": nul}),
        ):
            answer = client.request(method, path, json=body)
            _no_500(answer)
            assert answer.status_code == 422, (path, answer.status_code, answer.text[:300])
        for path in (
            "/api/credentials/a%00b",
            "/api/executions?status=a%00b",
            "/api/worker/pools?name=a%00b",
        ):
            answer = client.get(path)
            _no_500(answer)
            assert answer.status_code == 422, (path, answer.text[:300])
        assert client.delete("/api/tokens/a%00b").status_code == 422


def test_a_nul_inside_a_step_result_is_kept(store_url: str, tmp_path: Path) -> None:
    with Cluster(tmp_path, store_url) as cluster:
        url = cluster.start_server("server", extra_args=("--with-worker",)).url
        with http(url) as client:
            register(client, NUL_RESULT)
            execution_id = execute(client, "security/nul_result")
            final = wait_end(client, execution_id)
            assert final["status"] == "COMPLETED", final
            assert final["result"] == {"text": "before\x00after", "list": ["\x00"]}
            log = events(client, execution_id)
            assert log[-1]["event_type"] == "playbook.completed", [e["event_type"] for e in log]
            rows = ok(client.get("/api/executions"))
            assert [(r["execution_id"], r["status"]) for r in rows] == [(execution_id, "COMPLETED")]
        # And after a restart, from the store alone (PostgreSQL cannot hold NUL characters: they
        # are kept as the six characters \u0000).
        cluster.close()
        again = cluster.start_server("again").url
        kept = "\x00" if store_url.startswith("sqlite") else "\\u0000"
        with http(again) as client:
            assert ok(client.get(f"/api/executions/{execution_id}"))["status"] == "COMPLETED"
            assert wait_end(client, execution_id)["result"] == {"text": f"before{kept}after", "list": [kept]}
