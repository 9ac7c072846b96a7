"""The contract every Store adapter keeps. Add an adapter by adding a param to `store`."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from noetl.engine.events import (
    CALL_DONE,
    COMMAND_ISSUED,
    PLAYBOOK_CANCELLED,
    PLAYBOOK_COMPLETED,
    PLAYBOOK_FAILED,
    PLAYBOOK_STARTED,
    STEP_ENTER,
    Event,
)
from noetl.ids import Snowflake
from noetl.store.ports import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    Store,
    StoredCredential,
)

TEST_KEY = "q2PN0mB6cWuZ7s3b3Qd9pQ2cC1kXJ0m5Q8v4aHq9Jx0="  # 32 bytes, URL-safe base64

ids = Snowflake(node=7)


@pytest.fixture(
    params=[
        "memory",
        "sqlite-file",
        "sqlite-memory",
        "sqlite-file-deferred",
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """Every adapter under test is built here, and only here. Each param must yield an empty
    store: PostgreSQL gets a schema of its own in database `test`, dropped afterwards (it asks for
    `pg_dsn` only here, so the other params run without PostgreSQL)."""
    monkeypatch.setenv("NOETL_ENCRYPTION_KEY", TEST_KEY)
    adapter: Store
    if request.param == "memory":
        from noetl.store.memory import MemoryStore

        adapter = MemoryStore()
    elif request.param == "sqlite-file":
        from noetl.store.sqlite import SQLiteStore

        adapter = SQLiteStore(tmp_path / "contract.db")
    elif request.param == "sqlite-memory":
        from noetl.store.sqlite import SQLiteStore

        adapter = SQLiteStore(":memory:")
    elif request.param == "sqlite-file-deferred":
        # As the local runtime uses it: appends deferred, and the scheduled writes never run
        # here, so every other call must write them first.
        from noetl.store.sqlite import SQLiteStore

        adapter = SQLiteStore(tmp_path / "contract.db")
        with adapter.write_behind(lambda callback: None):
            yield adapter
        adapter.close()
        return
    elif request.param == "postgres":
        yield from _postgres_store(request.getfixturevalue("pg_dsn"))
        return
    else:  # pragma: no cover
        raise AssertionError(request.param)
    yield adapter
    adapter.close()


def _postgres_store(dsn: str) -> Iterator[Store]:
    import psycopg

    from noetl.store.postgres import PostgresStore

    schema = f"noetl_t_{uuid.uuid4().hex[:8]}"
    try:
        adapter = PostgresStore(dsn, schema=schema)
        try:
            yield adapter
        finally:
            adapter.close()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def event(execution_id: int, event_type: str = STEP_ENTER, **fields: Any) -> Event:
    fields.setdefault("event_id", ids.next())
    return Event(execution_id=execution_id, event_type=event_type, **fields)


def started(execution_id: int, *, path: str = "tests/demo", **fields: Any) -> Event:
    fields.setdefault("node_name", path)
    fields.setdefault("context", {"path": path, "workload": {}})
    return event(execution_id, PLAYBOOK_STARTED, status="STARTED", **fields)


def ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# -- event log --------------------------------------------------------------------------------


def test_read_returns_the_execution_oldest_first(store: Store) -> None:
    execution, other = ids.next(), ids.next()
    first, second, third = (event(execution, node_name=f"s{i}") for i in range(3))
    store.append([third, first])
    store.append([event(other), second])

    found = store.read(execution)

    assert [e.event_id for e in found] == [first.event_id, second.event_id, third.event_id]
    assert [e.node_name for e in found] == ["s0", "s1", "s2"]
    assert len(store.read(other)) == 1


def test_read_of_an_unknown_execution_is_empty(store: Store) -> None:
    assert store.read(ids.next()) == []
    assert store.get_event(ids.next()) is None


def test_append_of_nothing_is_fine(store: Store) -> None:
    store.append([])


def test_duplicate_event_id_is_ignored_and_never_changes_the_row(store: Store) -> None:
    execution = ids.next()
    original = event(execution, status="ENTERED", context={"n": 1})
    store.append([original])

    retry = event(execution, event_id=original.event_id, status="CHANGED", context={"n": 2})
    store.append([retry])
    store.append([retry, event(execution)])  # a duplicate inside a batch with a new event

    found = store.read(execution)
    assert len(found) == 2
    assert found[0].event_id == original.event_id
    assert found[0].status == "ENTERED"
    assert found[0].context == {"n": 1}


def test_duplicate_within_one_batch_keeps_the_first(store: Store) -> None:
    execution = ids.next()
    one = event(execution, status="first")
    store.append([one, event(execution, event_id=one.event_id, status="second")])

    assert [(e.event_id, e.status) for e in store.read(execution)] == [(one.event_id, "first")]


def test_read_after_event_id(store: Store) -> None:
    execution = ids.next()
    batch = [event(execution) for _ in range(5)]
    store.append(batch)

    after = store.read(execution, after_event_id=batch[1].event_id)

    assert [e.event_id for e in after] == [e.event_id for e in batch[2:]]
    assert store.read(execution, after_event_id=batch[-1].event_id) == []
    assert len(store.read(execution, after_event_id=0)) == 5


def test_get_event(store: Store) -> None:
    execution = ids.next()
    one = event(execution, node_name="step_a")
    store.append([one, event(execution)])

    found = store.get_event(one.event_id)

    assert found is not None
    assert (found.event_id, found.execution_id, found.node_name) == (one.event_id, execution, "step_a")


def test_every_column_round_trips(store: Store) -> None:
    execution, parent = ids.next(), ids.next()
    original = Event(
        event_id=ids.next(),
        execution_id=execution,
        event_type=COMMAND_ISSUED,
        node_name="fetch",
        node_id="fetch",
        node_type="http",
        status="PENDING",
        context={"tool_config": {"kind": "http"}},
        meta={"command_id": f"{execution}:fetch:1", "pool": "shared"},
        result={"status": "PENDING"},
        parent_event_id=ids.next(),
        parent_execution_id=parent,
        catalog_id=ids.next(),
        worker_id="worker-1",
        created_at=datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC),
    )
    store.append([original])

    assert store.read(execution) == [original]
    assert store.get_event(original.event_id) == original


def test_nested_json_and_unicode_round_trip(store: Store) -> None:
    execution = ids.next()
    nested: dict[str, Any] = {
        "text": 'héllo wörld ✓ 日本語 🚀 "quoted" \\ back\nslash',
        "numbers": [0, -1, 2**62, 1.5, -0.25],
        "flags": {"yes": True, "no": False, "nothing": None},
        "deep": {"a": [{"b": [{"c": {"d": ["e", {"f": "ü"}]}}]}]},
        "empty": {"list": [], "map": {}, "string": ""},
        "ключ": "значение",
    }
    original = event(
        execution,
        CALL_DONE,
        context=nested,
        meta={"labels": nested["deep"], "trace": {"traceparent": "00-abc-def-01"}},
        result={"status": "COMPLETED", "context": {"result": nested}},
    )
    bare = event(execution, context=None, meta={}, result=None)
    store.append([original, bare])

    found, found_bare = store.read(execution)
    assert found.context == nested
    assert found.meta == original.meta
    assert found.result == original.result
    assert (found_bare.context, found_bare.meta, found_bare.result) == (None, {}, None)


def test_stored_events_do_not_share_state_with_the_caller(store: Store) -> None:
    execution = ids.next()
    original = event(execution, context={"items": [1, 2]})
    store.append([original])
    assert original.context is not None
    original.context["items"].append(3)

    first = store.read(execution)[0]
    assert first.context == {"items": [1, 2]}
    assert first.context is not None
    first.context["items"].append(4)
    assert store.read(execution)[0].context == {"items": [1, 2]}


def test_created_at_round_trips_as_timezone_aware_utc(store: Store) -> None:
    execution = ids.next()
    utc_moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    elsewhere = datetime(2026, 1, 2, 5, 4, 5, 123000, tzinfo=timezone(timedelta(hours=2)))
    first, second = event(execution, created_at=utc_moment), event(execution, created_at=elsewhere)
    store.append([first, second])

    got_first, got_second = (e.created_at for e in store.read(execution))

    for got, sent in ((got_first, utc_moment), (got_second, elsewhere)):
        assert got.tzinfo is not None
        assert got.utcoffset() == timedelta(0)
        assert abs(got - sent) < timedelta(milliseconds=1)
    assert got_second == datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


def test_concurrent_appends_all_land(store: Store) -> None:
    execution = ids.next()

    def writer() -> None:
        for _ in range(20):
            store.append([event(execution) for _ in range(5)])

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    found = store.read(execution)
    assert len(found) == 400
    assert [e.event_id for e in found] == sorted(e.event_id for e in found)


# -- execution projection ----------------------------------------------------------------------


def test_started_execution_is_running(store: Store) -> None:
    execution, parent, catalog_id = ids.next(), ids.next(), ids.next()
    start = started(execution, path="tests/child", catalog_id=catalog_id, parent_execution_id=parent)
    store.append([start, event(execution)])

    summary = store.execution(execution)

    assert summary is not None
    assert summary.status == RUNNING
    assert summary.path == "tests/child"
    assert summary.catalog_id == catalog_id
    assert summary.parent_execution_id == parent
    assert summary.completed_at is None and summary.error is None
    assert abs(summary.started_at - start.created_at) < timedelta(milliseconds=1)


def test_unknown_execution_is_none(store: Store) -> None:
    assert store.execution(ids.next()) is None


def test_path_falls_back_to_node_name(store: Store) -> None:
    execution = ids.next()
    store.append([event(execution, PLAYBOOK_STARTED, node_name="by/node/name", context={"workload": {}})])

    summary = store.execution(execution)
    assert summary is not None and summary.path == "by/node/name"


def test_completed_execution(store: Store) -> None:
    execution = ids.next()
    store.append([started(execution), event(execution)])
    done = event(execution, PLAYBOOK_COMPLETED, status="COMPLETED", result={"status": "COMPLETED"})
    store.append([done])

    summary = store.execution(execution)

    assert summary is not None
    assert summary.status == COMPLETED
    assert summary.error is None
    assert summary.completed_at is not None
    assert abs(summary.completed_at - done.created_at) < timedelta(milliseconds=1)
    assert summary.path == "tests/demo"


def test_failed_execution_keeps_the_error_from_meta(store: Store) -> None:
    execution = ids.next()
    store.append([started(execution), event(execution, PLAYBOOK_FAILED, meta={"error": "step 'x' failed"})])

    summary = store.execution(execution)
    assert summary is not None
    assert (summary.status, summary.error) == (FAILED, "step 'x' failed")


def test_failed_execution_keeps_the_error_from_the_result_payload(store: Store) -> None:
    execution = ids.next()
    failed = event(execution, PLAYBOOK_FAILED, result={"status": "FAILED", "context": {"error": "boom"}})
    store.append([started(execution), failed])

    summary = store.execution(execution)
    assert summary is not None
    assert (summary.status, summary.error) == (FAILED, "boom")


def test_cancelled_execution(store: Store) -> None:
    execution = ids.next()
    store.append([started(execution)])
    store.append([event(execution, PLAYBOOK_CANCELLED, status="CANCELLED")])

    summary = store.execution(execution)
    assert summary is not None and summary.status == CANCELLED


def test_start_and_finish_in_one_batch(store: Store) -> None:
    execution = ids.next()
    store.append([started(execution), event(execution), event(execution, PLAYBOOK_COMPLETED)])

    summary = store.execution(execution)
    assert summary is not None and summary.status == COMPLETED


def test_a_duplicate_start_does_not_reopen_a_finished_execution(store: Store) -> None:
    execution = ids.next()
    start = started(execution)
    store.append([start, event(execution, PLAYBOOK_COMPLETED)])
    store.append([start])

    summary = store.execution(execution)
    assert summary is not None and summary.status == COMPLETED


def test_executions_filter_by_status_and_parent(store: Store) -> None:
    parent, child_a, child_b, lonely = ids.next(), ids.next(), ids.next(), ids.next()
    store.append([started(parent)])
    store.append([started(child_a, parent_execution_id=parent), started(child_b, parent_execution_id=parent)])
    store.append([started(lonely), event(child_a, PLAYBOOK_FAILED, meta={"error": "bad"})])

    children = store.executions(parent_execution_id=parent)
    assert {s.execution_id for s in children} == {child_a, child_b}
    assert [s.execution_id for s in store.executions(status=FAILED)] == [child_a]
    running_children = store.executions(status=RUNNING, parent_execution_id=parent)
    assert [s.execution_id for s in running_children] == [child_b]
    assert store.executions(parent_execution_id=ids.next()) == []


def test_executions_newest_first_with_limit_and_offset(store: Store) -> None:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    created = [ids.next() for _ in range(5)]
    for n, execution in enumerate(created):
        store.append([started(execution, created_at=base + timedelta(seconds=n))])

    newest_first = list(reversed(created))
    assert [s.execution_id for s in store.executions()] == newest_first
    assert [s.execution_id for s in store.executions(limit=2)] == newest_first[:2]
    assert [s.execution_id for s in store.executions(limit=2, offset=2)] == newest_first[2:4]
    assert [s.execution_id for s in store.executions(offset=4)] == newest_first[4:]
    assert store.executions(offset=10) == []


def test_executions_filter_by_playbook_and_start_time(store: Store) -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    runs = [(ids.next(), "tests/a" if n % 2 else "tests/b", base + timedelta(minutes=n)) for n in range(6)]
    for execution, path, at in runs:
        store.append([started(execution, path=path, created_at=at)])
    store.append([event(runs[1][0], PLAYBOOK_FAILED, meta={"error": "bad"})])

    of_a = [execution for execution, path, _ in reversed(runs) if path == "tests/a"]
    assert [s.execution_id for s in store.executions(path="tests/a")] == of_a
    assert [s.execution_id for s in store.executions(path="tests/a", status=FAILED)] == [runs[1][0]]
    window = store.executions(
        started_after=base + timedelta(minutes=2), started_before=base + timedelta(minutes=4)
    )
    assert [s.execution_id for s in window] == [runs[3][0], runs[2][0]]  # after inclusive, before exclusive
    recent_a = store.executions(path="tests/a", started_after=base + timedelta(minutes=2), limit=1)
    assert [s.execution_id for s in recent_a] == [runs[5][0]]
    assert store.executions(path="tests/none") == []


# -- catalog ---------------------------------------------------------------------------------


def test_catalog_versions_count_up_per_path(store: Store) -> None:
    first = store.register("v: 1", path="demo/a")
    second = store.register("v: 2", path="demo/a")
    other = store.register("v: 1", path="demo/b")

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert len({first.catalog_id, second.catalog_id, other.catalog_id}) == 3
    assert first.kind == "playbook"
    assert first.created_at.utcoffset() == timedelta(0)


def test_catalog_resource_latest_and_explicit_version(store: Store) -> None:
    store.register("v: 1", path="demo/a")
    second = store.register("v: 2", path="demo/a")

    latest = store.resource("demo/a")
    assert latest is not None
    assert (latest.version, latest.content, latest.catalog_id) == (2, "v: 2", second.catalog_id)
    assert latest == second

    one = store.resource("demo/a", version=1)
    assert one is not None and one.content == "v: 1"
    assert store.resource("demo/a", version=3) is None
    assert store.resource("demo/missing") is None


def test_catalog_resource_by_id(store: Store) -> None:
    entry = store.register("name: ünïcode ✓\n", path="demo/id", kind="Playbook")

    found = store.resource_by_id(entry.catalog_id)

    assert found == entry
    assert found is not None and found.kind == "playbook" and found.content == "name: ünïcode ✓\n"
    assert store.resource_by_id(ids.next()) is None


def test_catalog_entries_newest_first_and_kind_filter(store: Store) -> None:
    a = store.register("a", path="demo/a")
    cred = store.register("c", path="demo/cred", kind="credential")
    b = store.register("b", path="demo/a")

    assert [e.catalog_id for e in store.entries()] == [b.catalog_id, cred.catalog_id, a.catalog_id]
    assert [e.catalog_id for e in store.entries("playbook")] == [b.catalog_id, a.catalog_id]
    assert [e.catalog_id for e in store.entries(kind="credential")] == [cred.catalog_id]
    assert store.entries("agent") == []


# -- credentials -----------------------------------------------------------------------------


def credential(name: str = "pg_local", **fields: Any) -> StoredCredential:
    fields.setdefault("type", "postgres")
    fields.setdefault("data", {"host": "localhost", "password": "s3cr3t-pässwörd", "port": 5432})
    return StoredCredential(name=name, **fields)


def test_credential_put_and_get(store: Store) -> None:
    sent = credential(description="local db", tags=("dev", "pg"))
    store.put_credential(sent)

    got = store.get_credential("pg_local")

    assert got is not None
    assert (got.name, got.type, got.data, got.description, got.tags) == (
        "pg_local",
        "postgres",
        sent.data,
        "local db",
        ("dev", "pg"),
    )
    assert got.created_at is not None and got.updated_at is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert store.get_credential("missing") is None


def test_credential_replace_by_name(store: Store) -> None:
    store.put_credential(credential(tags=("old",)))
    first = store.get_credential("pg_local")
    store.put_credential(credential(type="http", data={"token": "new-token"}, description="now http"))

    got = store.get_credential("pg_local")

    assert got is not None and first is not None
    assert (got.type, got.data, got.description, got.tags) == ("http", {"token": "new-token"}, "now http", ())
    assert got.created_at == first.created_at
    assert got.updated_at is not None and first.updated_at is not None
    assert got.updated_at >= first.updated_at
    assert [c.name for c in store.list_credentials()] == ["pg_local"]


def test_credential_list_and_delete(store: Store) -> None:
    store.put_credential(credential("b_cred"))
    store.put_credential(credential("a_cred", data={"api_key": "k-123"}))

    listed = store.list_credentials()
    assert [c.name for c in listed] == ["a_cred", "b_cred"]
    assert listed[0].data == {"api_key": "k-123"}

    assert store.delete_credential("a_cred") is True
    assert store.delete_credential("a_cred") is False
    assert store.get_credential("a_cred") is None
    assert [c.name for c in store.list_credentials()] == ["b_cred"]


# -- worker registry ---------------------------------------------------------------------


def test_worker_registry_lifecycle(store: Store) -> None:
    from noetl.store.ports import WorkerRecord

    old = datetime(2020, 1, 1, tzinfo=UTC)
    saved = store.upsert_worker(
        WorkerRecord(name="w1", kind="worker_pool", status="ready", heartbeat=old, info={"capacity": 4})
    )
    assert saved.name == "w1" and saved.info["capacity"] == 4 and saved.heartbeat == old
    assert [w.name for w in store.workers()] == ["w1"]
    assert store.touch_worker("w1") is True
    assert store.workers()[0].heartbeat > old
    assert store.touch_worker("nobody") is False
    store.upsert_worker(WorkerRecord(name="w1", kind="worker_pool", status="busy", heartbeat=old))
    assert [(w.name, w.status) for w in store.workers("worker_pool")] == [
        ("w1", "busy")
    ]  # upsert, not a copy
    assert store.workers("server_api") == []
    assert store.remove_worker("w1") is True
    assert store.remove_worker("w1") is False
    assert store.workers() == []


def test_known_event_ids_answers_for_a_whole_batch(store: Store) -> None:
    events = [started(ids.next()), event(ids.next())]
    store.append(events)
    wanted = [events[0].event_id, 999, events[1].event_id, events[0].event_id]
    assert store.known_event_ids(wanted) == {events[0].event_id, events[1].event_id}
    assert store.known_event_ids([]) == set()


# ---------------------------------------------------------------------------------- coordination


def test_dedup_claim_first_wins_within_the_window(store: Store) -> None:
    assert store.claim_dedup(0, "order-1", 60, 101) is None
    assert store.claim_dedup(0, "order-1", 60, 102) == 101  # the winner's execution
    assert store.claim_dedup(7, "order-1", 60, 103) is None  # another scope: its own key
    assert store.claim_dedup(0, "order-2", 60, 104) is None


def test_dedup_claim_after_the_window_is_a_new_winner(store: Store) -> None:
    assert store.claim_dedup(0, "k", 0, 201) is None
    time.sleep(1.1)  # window 0 s: the first claim is over (PostgreSQL compares whole seconds)
    assert store.claim_dedup(0, "k", 0, 202) is None
    assert store.claim_dedup(0, "k", 60, 203) == 202


def test_dedup_claims_race_safely(store: Store) -> None:
    winners: list[int | None] = []

    def claim(execution_id: int) -> None:
        winners.append(store.claim_dedup(0, "race", 60, execution_id))

    threads = [threading.Thread(target=claim, args=(300 + n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winner = store.claim_dedup(0, "race", 60, 999)
    assert winner in range(300, 308)
    assert winners.count(None) == 1
    assert all(w in (None, winner) for w in winners)


def test_execution_lock_serialises_and_is_released(store: Store) -> None:
    order: list[str] = []

    def second() -> None:
        with store.execution_lock(42):
            order.append("second")

    with store.execution_lock(42):
        order.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)  # a shared store's lock keeps the second holder out meanwhile
        order.append("first-done")
    thread.join(5)
    assert not thread.is_alive()
    if store.shared:
        assert order == ["first", "first-done", "second"]
    else:  # a single-process store serialises in the orchestrator; its lock is a no-op
        assert sorted(order) == ["first", "first-done", "second"]


def test_leadership_is_held_by_its_first_taker(store: Store) -> None:
    assert store.try_leadership("reaper") is True
    assert store.try_leadership("reaper") is True  # held: asking again keeps it


def test_staleness_follows_writes_of_others(store: Store) -> None:
    execution_id = ids()
    store.append([started(execution_id)])
    store.mark_current(execution_id)
    assert store.is_stale(execution_id) is False
    store.append([event(execution_id, COMMAND_ISSUED)])  # this process's own write
    assert store.is_stale(execution_id) is False
    if not store.shared:
        return
    from noetl.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    other = PostgresStore(store.url, schema=store.schema)  # another server on the same database
    try:
        theirs = [event(execution_id, COMMAND_ISSUED), event(execution_id, COMMAND_ISSUED)]
        other.append(theirs[:1])
        other.append(theirs[1:])
    finally:
        other.close()
    assert store.is_stale(execution_id) is True
    # Just what the other server wrote, in write order; then the execution is current.
    assert [e.event_id for e in store.unseen(execution_id) or []] == [e.event_id for e in theirs]
    assert store.is_stale(execution_id) is False
    assert store.unseen(execution_id) == []
    store.append([event(execution_id, COMMAND_ISSUED)])
    assert store.unseen(execution_id) == []  # its own writes are not unseen
    store.mark_current(execution_id)
    assert store.is_stale(execution_id) is False
