"""Schedules on real `noetl server start` processes sharing one PostgreSQL schema (issue 14):
a 1-second schedule on two servers runs once per tick, also when one of them is killed -9, and a
server started after an outage catches up as the schedule says. Runs are counted with SQL on the
event log (`playbook_started` meta records `schedule_id` and `tick_at`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tests.support.cluster import Cluster, ServerProcess, post_json
from tests.support.playbooks import with_header

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKFLOW = """\
workflow:
  - step: start
    tool: {kind: python, input: {tick: "{{ workload.tick }}"}, code: "result = {'tick': tick}"}
"""
GRACE = 0.5  # NOETL_SCHEDULE_GRACE_SECONDS of these servers


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_sched_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str, schema: str) -> Iterator[Cluster]:
    env = {"NOETL_SCHEDULE_GRACE_SECONDS": str(GRACE), "NOETL_SCHEDULER_INTERVAL": "0.1"}
    with Cluster(tmp_path, f"{pg_dsn}?schema={schema}", env=env) as running:
        yield running


def start(cluster: Cluster, name: str) -> ServerProcess:
    return cluster.start_server(name, extra_args=("--with-worker",))


def register(server: ServerProcess) -> None:
    text = with_header("scheduled", "tests/scheduled", "workload: {tick: 0}\n" + WORKFLOW)
    post_json(server.url, "/api/catalog/register", {"content": text})


def schedule(server: ServerProcess, name: str, **spec: Any) -> str:
    body = {"name": name, "path": "tests/scheduled", "every": "1s", "payload": {"tick": 1}, **spec}
    sid: str = post_json(server.url, "/api/schedules", body)["schedule_id"]
    return sid


def pause(server: ServerProcess, sid: str) -> None:
    import httpx
    from tests.support.auth import AUTH

    answer = httpx.patch(
        f"{server.url}/api/schedules/{sid}", json={"enabled": False}, headers=AUTH, timeout=30
    )
    assert answer.status_code == 200, answer.text


def runs(pg_dsn: str, schema: str, sid: str) -> list[tuple[datetime, datetime]]:
    """(tick_at, when the run started) of every run of the schedule, by tick."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT meta->>'tick_at', created_at FROM \"{schema}\".event"
            " WHERE event_type = 'playbook_started' AND meta->>'schedule_id' = %s ORDER BY 1",
            (sid,),
        ).fetchall()
    return [(datetime.fromisoformat(tick.replace("Z", "+00:00")), created) for tick, created in rows]


def first_claim_after(pg_dsn: str, schema: str, sid: str, moment: datetime) -> datetime:
    """When a scheduler pass first claimed ticks of the schedule after `moment` (the claim time
    the store wrote: a pass claims its missed tick first, then the timely ones)."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT min(created_at) FROM "{schema}".schedule_tick WHERE schedule_id = %s AND created_at > %s',
            (int(sid), moment),
        ).fetchone()
    assert row is not None and row[0] is not None, f"no tick of schedule {sid} claimed after {moment}"
    return row[0]  # type: ignore[no-any-return]


def duplicates(pg_dsn: str, schema: str, sid: str) -> list[tuple[str, int]]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT meta->>'tick_at', count(*) FROM \"{schema}\".event WHERE event_type = 'playbook_started'"
            " AND meta->>'schedule_id' = %s GROUP BY 1 HAVING count(*) > 1",
            (sid,),
        ).fetchall()
    return [(str(tick), int(n)) for tick, n in rows]


def gaps(ticks: list[datetime]) -> list[datetime]:
    """Whole seconds missing between the first and the last tick."""
    present = set(ticks)
    missing, moment = [], ticks[0]
    while moment < ticks[-1]:
        moment += timedelta(seconds=1)
        if moment not in present:
            missing.append(moment)
    return missing


def test_two_servers_run_a_one_second_schedule_once_per_tick(
    cluster: Cluster, pg_dsn: str, schema: str
) -> None:
    s1, s2 = start(cluster, "s1"), start(cluster, "s2")
    register(s1)
    created = datetime.now(UTC)
    sid = schedule(s1, "two-servers")
    time.sleep(10.0)
    pause(s2, sid)
    paused = datetime.now(UTC)
    ticks = [tick for tick, _ in runs(pg_dsn, schema, sid)]
    print(
        f"two servers: {len(ticks)} runs for {(paused - created).total_seconds():.1f} s, ticks {ticks[0]}..{ticks[-1]}"
    )
    assert duplicates(pg_dsn, schema, sid) == []
    assert 9 <= len(ticks) <= 11
    assert gaps(ticks) == []
    assert all(created < tick <= paused for tick in ticks)


def test_kill_minus_nine_of_one_server_loses_no_tick(cluster: Cluster, pg_dsn: str, schema: str) -> None:
    s1, s2 = start(cluster, "k1"), start(cluster, "k2")
    register(s2)
    sid = schedule(s2, "kill-nine")
    time.sleep(4.0)
    s1.kill()
    killed = datetime.now(UTC)
    time.sleep(6.0)
    pause(s2, sid)
    ticks = [tick for tick, _ in runs(pg_dsn, schema, sid)]
    after = [t for t in ticks if t > killed]
    print(f"kill -9: {len(ticks)} runs, {len(after)} after the kill, gaps {gaps(ticks)}")
    assert duplicates(pg_dsn, schema, sid) == []
    assert gaps(ticks) == []
    assert len(after) >= 5


def test_catch_up_skip_one_all_after_five_seconds_without_a_server(
    cluster: Cluster, pg_dsn: str, schema: str
) -> None:
    first = start(cluster, "c1")
    register(first)
    sids = {policy: schedule(first, f"catchup-{policy}", catchup=policy) for policy in ("skip", "one", "all")}
    time.sleep(2.5)
    first.terminate()
    assert first.wait_exit(20), first.tail()
    stopped = datetime.now(UTC)
    time.sleep(5.0)
    second = cluster.restart_server(first, "c2")
    time.sleep(2.5)
    for sid in sids.values():
        pause(second, sid)
    missed: dict[str, list[datetime]] = {}
    after: dict[str, list[datetime]] = {}
    for policy, sid in sids.items():
        found = runs(pg_dsn, schema, sid)
        assert duplicates(pg_dsn, schema, sid) == []
        after[policy] = [tick for tick, _ in found if tick > stopped]
        assert after[policy], f"{policy}: no run after the outage"
        # The new server's first pass, by its own claim time (an upper bound of the pass's clock: a
        # loaded machine claims a little after the pass read its clock).
        resumed = first_claim_after(pg_dsn, schema, sid, stopped)
        window_end = resumed - timedelta(seconds=GRACE)  # ticks before this were missed
        missed[policy] = [tick for tick in after[policy] if tick < window_end]
        if policy == "all":
            expected = int((window_end - stopped).total_seconds())
            ticks = [tick for tick, _ in found]
            assert gaps(ticks) == []
            assert expected - 1 <= len(missed[policy]) <= expected + 1
            assert len(missed[policy]) >= 5
    print({policy: len(ticks) for policy, ticks in missed.items()})
    # One pass of the new server fired the three schedules on the same clock: `skip` ran from the
    # first timely tick, `one` from the latest missed tick, the second before it, and nothing
    # between the outage and those.
    first_timely = after["skip"][0]
    assert first_timely - stopped >= timedelta(seconds=3), after["skip"]
    assert after["one"][0] == first_timely - timedelta(seconds=1), (after["one"], first_timely)
    assert [tick for tick in after["one"] if tick < first_timely] == [after["one"][0]]
    assert len([tick for tick in after["all"] if tick < first_timely]) >= 4
