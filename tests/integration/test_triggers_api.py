"""`/api/schedules` and `/api/subscriptions` over an in-memory control plane (no scheduler loop
runs here: `trigger` starts runs, the scheduler has its own tests)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.support.auth import AUTH, TEST_TOKEN

from noetl.api.app import create_app
from noetl.runtime.control import ControlPlane
from noetl.store import open_store

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: api-ticked, path: tests/api-ticked}
workflow:
  - step: start
    tool: {kind: noop}
"""


@pytest.fixture
def client() -> Iterator[TestClient]:
    control = ControlPlane(open_store("memory://"))
    control.register(PLAYBOOK)
    with TestClient(create_app(control, admin_token=TEST_TOKEN), headers=AUTH) as test_client:
        yield test_client


def test_schedule_lifecycle(client: TestClient) -> None:
    body = {"name": "every-minute", "path": "tests/api-ticked", "every": "1m", "payload": {"x": 1}}
    created = client.post("/api/schedules", json=body)
    assert created.status_code == 200, created.text
    item = created.json()
    sid = item["schedule_id"]
    assert isinstance(sid, str) and sid.isdigit()
    assert (
        item["every"] == 60
        and item["catchup"] == "one"
        and item["enabled"]
        and item["next_run_at"].endswith("Z")
    )
    assert client.post("/api/schedules", json=body).status_code == 409
    assert [s["name"] for s in client.get("/api/schedules").json()["items"]] == ["every-minute"]

    paused = client.patch(f"/api/schedules/{sid}", json={"enabled": False, "max_active": 2}).json()
    assert not paused["enabled"] and paused["max_active"] == 2 and paused["next_run_at"] is None
    switched = client.patch(
        f"/api/schedules/{sid}", json={"cron": "0 3 * * *", "timezone": "Asia/Tokyo"}
    ).json()
    assert switched["cron"] == "0 3 * * *" and switched["every"] is None

    tick = client.post(f"/api/schedules/{sid}/trigger").json()
    assert tick["status"] == "started" and isinstance(tick["execution_id"], str)
    events = client.get(f"/api/executions/{tick['execution_id']}/events").json()["events"]
    started = next(e for e in events if e["event_type"] == "playbook_started")
    assert started["meta"]["schedule_id"] == sid and started["meta"]["trigger"] == "manual"
    ticks = client.get(f"/api/schedules/{sid}/ticks").json()["items"]
    assert [t["execution_id"] for t in ticks] == [tick["execution_id"]]
    assert client.get(f"/api/schedules/{sid}").json()["last_tick"]["execution_id"] == tick["execution_id"]

    assert client.delete(f"/api/schedules/{sid}").json() == {"schedule_id": sid, "deleted": True}
    assert client.get(f"/api/schedules/{sid}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "path": "p", "cron": "61 * * * *"},
        {"name": "x", "path": "p"},
        {"name": "x", "path": "p", "every": "1s", "timezone": "Nowhere/City"},
        {"name": "x", "path": "p", "every": "1s", "catchup": "twice"},
        {"name": "x", "path": "p", "every": "1s", "unknown": 1},
        {"name": "x", "path": "p", "cron": "0 0 31 2 *"},  # valid, but no year has 31 February
        {"name": "x", "path": "p", "every": 2.9e16},  # dates overflow
        {"name": "x", "path": "p", "every": "400d"},
        {"name": "x", "path": "p", "every": "1s", "timezone": "America"},  # a directory
        {"name": "x", "path": "p", "every": "1s", "timezone": "a" * 5000},
        {"name": "x", "path": "p", "every": "1s", "max_active": "3"},  # strict: a number is a number
        {"name": "x" * 201, "path": "p", "every": "1s"},
        {"name": "x\x00", "path": "p", "every": "1s"},
        {"name": " ", "path": "p", "every": "1s"},
    ],
)
def test_bad_schedules_are_422(client: TestClient, body: dict[str, object]) -> None:
    answer = client.post("/api/schedules", json=body)
    assert answer.status_code == 422, answer.text
    assert set(answer.json()) == {"error", "status"}


def test_trigger_of_a_missing_playbook_is_404_and_the_tick_says_why(client: TestClient) -> None:
    sid = client.post("/api/schedules", json={"name": "ghost", "path": "no/such", "every": "1h"}).json()[
        "schedule_id"
    ]
    answer = client.post(f"/api/schedules/{sid}/trigger")
    assert answer.status_code == 404 and "no/such" in answer.json()["error"]
    assert client.get(f"/api/schedules/{sid}/ticks").json()["items"][0]["status"] == "failed"


def test_declared_schedules_appear_when_the_playbook_is_registered(client: TestClient) -> None:
    text = PLAYBOOK + "schedules:\n  - {name: hourly, cron: '@hourly'}\n"
    content = base64.b64encode(text.encode()).decode()
    assert client.post("/api/catalog/register", json={"content": content}).status_code == 200
    items = client.get("/api/schedules").json()["items"]
    assert [(s["name"], s["source"], s["cron"]) for s in items] == [
        ("tests/api-ticked:hourly", "playbook", "@hourly")
    ]
    bad = base64.b64encode((PLAYBOOK + "schedules: [{every: never}]\n").encode()).decode()
    assert client.post("/api/catalog/register", json={"content": bad}).status_code == 422


def test_subscription_lifecycle(client: TestClient) -> None:
    body = {
        "name": "orders",
        "path": "tests/api-ticked",
        "subject": "orders.created",
        "dedup": {"field": "id"},
    }
    item = client.post("/api/subscriptions", json=body).json()
    sub_id = item["subscription_id"]
    assert isinstance(sub_id, str) and item["execution_pool"] == "subscription"
    assert item["dedup"] == {"field": "id", "header": "Nats-Msg-Id", "window_secs": 300.0}
    assert item["durable"] == f"noetl-sub-{sub_id}"
    assert client.post("/api/subscriptions", json=body).status_code == 409
    paused = client.patch(f"/api/subscriptions/{sub_id}", json={"enabled": False}).json()
    assert not paused["enabled"] and paused["subject"] == "orders.created"
    assert client.get(f"/api/subscriptions/{sub_id}/events").json() == {
        "subscription_id": sub_id,
        "events": [],
    }
    assert client.post("/api/subscriptions", json={"name": "y", "path": "p"}).status_code == 422
    assert client.delete(f"/api/subscriptions/{sub_id}").status_code == 200
    assert client.get("/api/subscriptions").json() == {"items": []}


@pytest.mark.parametrize("kind", ["schedules", "subscriptions"])
def test_ids_are_int64_and_bodies_json(client: TestClient, kind: str) -> None:
    assert client.get(f"/api/{kind}/{2**63}").status_code == 404
    assert client.get(f"/api/{kind}/{2**63 - 1}").status_code == 404
    assert client.get(f"/api/{kind}/abc").status_code == 422
    bad = client.post(f"/api/{kind}", content=b"\x00", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("Invalid JSON body")
    surrogate = b'{"name": "\\ud800", "path": "p", "every": "1s", "subject": "a"}'
    assert client.post(f"/api/{kind}", content=surrogate).status_code == 422


def test_reading_schedules_needs_a_token(client: TestClient) -> None:
    assert client.get("/api/schedules", headers={"authorization": ""}).status_code == 401
