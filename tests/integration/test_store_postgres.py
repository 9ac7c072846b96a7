"""What only the PostgreSQL adapter promises: migrations, encryption at rest, the seed's SQL,
race-free catalog versions, atomic batches, and a rough append rate."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest

from noetl.engine.events import PLAYBOOK_STARTED, STEP_ENTER, Event
from noetl.errors import StoreError
from noetl.ids import Snowflake
from noetl.store import open_store, postgres_locks
from noetl.store.crypto import KEY_ENV
from noetl.store.ports import StoredCredential
from noetl.store.postgres import PostgresStore
from noetl.store.postgres_sql import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.postgres

T = TypeVar("T")
ids = Snowflake(node=11)
TEST_KEY = "q2PN0mB6cWuZ7s3b3Qd9pQ2cC1kXJ0m5Q8v4aHq9Jx0="
PASSWORD = "Tr0ub4dor&3-horse-battery-staple"
TABLES = {"event", "execution", "catalog", "credential", "command", "runtime", "schema_migrations"}


@pytest.fixture(autouse=True)
def _test_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    """A schema name nobody uses yet, dropped after the test."""
    name = f"noetl_t_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def store(pg_dsn: str, schema: str) -> Iterator[PostgresStore]:
    adapter = PostgresStore(pg_dsn, schema=schema)
    yield adapter
    adapter.close()


@pytest.fixture
def database(pg_dsn: str) -> Iterator[str]:
    """The URL of a new, empty database (so the default schema `noetl` is ours alone)."""
    name = f"noetl_t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(i)` in `count` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def tables(dsn: str, schema: str) -> set[str]:
    rows = query(dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {name for (name,) in rows}


# -- migrations --------------------------------------------------------------------------------


def test_construction_creates_the_schema_once(pg_dsn: str, schema: str) -> None:
    PostgresStore(pg_dsn, schema=schema).close()
    first = query(pg_dsn, f'SELECT version, applied_at FROM "{schema}".schema_migrations ORDER BY version')
    PostgresStore(pg_dsn, schema=schema).close()
    second = query(pg_dsn, f'SELECT version, applied_at FROM "{schema}".schema_migrations ORDER BY version')

    assert [version for version, _ in first] == [version for version, _, _ in MIGRATIONS]
    assert first[-1][0] == SCHEMA_VERSION
    assert second == first  # nothing re-applied
    assert tables(pg_dsn, schema) >= TABLES


def test_events_have_no_index_on_their_type_and_keep_the_ones_reads_use(pg_dsn: str, schema: str) -> None:
    PostgresStore(pg_dsn, schema=schema).close()
    indexes = {
        name
        for (name,) in query(
            pg_dsn,
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'event'",
            (schema,),
        )
    }
    assert "event_type_idx" not in indexes  # no query reads by type; every insert paid for it
    assert {"event_execution_idx", "event_write_seq_idx"} <= indexes


def test_concurrent_construction_migrates_once(pg_dsn: str, schema: str) -> None:
    stores = in_threads(4, lambda _: PostgresStore(pg_dsn, schema=schema))
    for adapter in stores:
        adapter.close()

    rows = query(pg_dsn, f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
    assert [version for (version,) in rows] == [version for version, _, _ in MIGRATIONS]
    assert tables(pg_dsn, schema) >= TABLES


def test_a_newer_schema_is_used_with_a_warning(
    pg_dsn: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    PostgresStore(pg_dsn, schema=schema).close()
    query(
        pg_dsn,
        f"INSERT INTO \"{schema}\".schema_migrations (version, name) VALUES (%s, 'from the future') "
        "RETURNING version",
        (SCHEMA_VERSION + 1,),
    )

    with caplog.at_level(logging.WARNING, logger="noetl.store.postgres"):
        adapter = PostgresStore(pg_dsn, schema=schema)
    adapter.close()

    assert f"knows up to {SCHEMA_VERSION}" in caplog.text


def test_the_schema_name_is_validated(pg_dsn: str) -> None:
    for bad in ("Noetl", "noetl; DROP TABLE x", "1noetl", "", "x" * 64, 'no"etl'):
        with pytest.raises(StoreError, match="invalid PostgreSQL schema name"):
            PostgresStore(pg_dsn, schema=bad)


def test_a_bad_url_fails_fast_without_showing_the_password(pg_dsn: str) -> None:
    host = pg_dsn.split("@", 1)[1].rsplit("/", 1)[0]
    url = f"postgresql://postgres:hunter2-secret@{host}/noetl_no_such_db_{uuid.uuid4().hex[:6]}"

    with pytest.raises(StoreError) as caught:
        PostgresStore(url)

    assert "hunter2-secret" not in str(caught.value)
    assert "does not exist" in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.Error)


def test_open_store_picks_the_adapter(database: str) -> None:
    adapter = open_store(database)
    try:
        assert isinstance(adapter, PostgresStore)
        assert (adapter.url, adapter.schema) == (database, "noetl")
    finally:
        adapter.close()
    assert tables(database, "noetl") >= TABLES


# -- encryption at rest -----------------------------------------------------------------------


def test_credentials_are_encrypted_at_rest(pg_dsn: str, schema: str, store: PostgresStore) -> None:
    data = {"host": "db.internal", "user": "etl", "password": PASSWORD}
    store.put_credential(StoredCredential(name="warehouse", type="postgres", data=data, tags=("prod",)))

    (sealed,) = query(
        pg_dsn, f'SELECT data_encrypted FROM "{schema}".credential WHERE name = %s', ("warehouse",)
    )[0]
    assert PASSWORD not in sealed and "db.internal" not in sealed
    assert '"alg":"AES-256-GCM"' in sealed

    def rows_like(text: str) -> int:
        sql = f'SELECT count(*) FROM "{schema}".credential AS c WHERE c::text LIKE %s'
        return int(query(pg_dsn, sql, (f"%{text}%",))[0][0])

    assert rows_like("warehouse") == 1  # the check does see the row
    assert rows_like(PASSWORD) == 0
    assert rows_like("horse-battery") == 0
    got = store.get_credential("warehouse")
    assert got is not None and got.data == data and got.tags == ("prod",)


# -- the seed's SQL ----------------------------------------------------------------------------


def test_seed_iterator_sql_works_unchanged(database: str) -> None:
    parent = ids.next()
    children = [ids.next() for _ in range(3)]
    items = [{"name": "Alice", "age": 28}, {"name": "Bob", "age": 35}, {"name": "Chloé", "age": 41}]
    adapter = open_store(database)
    try:
        adapter.append([Event(event_id=ids.next(), execution_id=parent, event_type=PLAYBOOK_STARTED)])
        adapter.append(
            [
                Event(
                    event_id=ids.next(),
                    execution_id=child,
                    event_type=PLAYBOOK_STARTED,
                    node_name="tests/child",
                    parent_execution_id=parent,
                    meta={"iterator_index": n, "iterator_count": 3, "iterator_item": items[n]},
                    context={"path": "tests/child", "workload": {}},
                )
                for n, child in enumerate(children)
            ]
        )
    finally:
        adapter.close()

    # As written in the seed document (the id as a string literal, `noetl.event`).
    rows = query(
        database,
        f"""
        SELECT
          execution_id,
          parent_execution_id,
          meta->>'iterator_index' as iteration,
          meta->>'iterator_count' as total,
          meta->'iterator_item' as item_data
        FROM noetl.event
        WHERE parent_execution_id = '{parent}'
          AND event_type = 'playbook_started'
        ORDER BY execution_id
        """,
    )
    assert rows == [(child, parent, str(n), "3", items[n]) for n, child in enumerate(children)]

    joined = query(
        database,
        f"""
        SELECT child.execution_id, parent.meta->>'iterator_index' as iteration
        FROM noetl.event child
        JOIN noetl.event parent
          ON child.execution_id = parent.execution_id
          AND parent.event_type = 'playbook_started'
        WHERE child.parent_execution_id = '{parent}'
        ORDER BY parent.meta->>'iterator_index', child.event_id
        """,
    )
    assert joined == [(child, str(n)) for n, child in enumerate(children)]
    summaries = query(
        database, "SELECT execution_id, status FROM noetl.execution WHERE parent_execution_id = %s", (parent,)
    )
    assert sorted(summaries) == sorted((child, "RUNNING") for child in children)


# -- catalog -----------------------------------------------------------------------------------


def test_concurrent_registrations_of_one_path_get_distinct_versions(store: PostgresStore) -> None:
    entries = in_threads(10, lambda i: store.register(f"n: {i}", path="race/same"))

    assert sorted(entry.version for entry in entries) == list(range(1, 11))
    assert len({entry.catalog_id for entry in entries}) == 10
    latest = store.resource("race/same")
    assert latest is not None and latest.version == 10
    for entry in entries:
        assert store.resource("race/same", version=entry.version) == entry


# -- atomicity and errors ----------------------------------------------------------------------


def test_a_failing_batch_stores_nothing(store: PostgresStore) -> None:
    execution = ids.next()
    good = [
        Event(event_id=ids.next(), execution_id=execution, event_type=PLAYBOOK_STARTED, node_name="x"),
        Event(event_id=ids.next(), execution_id=execution, event_type=STEP_ENTER),
    ]
    # event_type is NOT NULL in the table: the last row of the batch fails in the database.
    bad = Event(event_id=ids.next(), execution_id=execution, event_type=None, context={"s": "x"})  # type: ignore[arg-type]

    with pytest.raises(StoreError) as caught:
        store.append([*good, bad])

    assert isinstance(caught.value.__cause__, psycopg.Error)
    assert store.read(execution) == []
    assert store.execution(execution) is None


def test_nul_characters_are_stored_escaped_not_lost(store: PostgresStore) -> None:
    """PostgreSQL refuses NUL in jsonb and text: such a value is stored escaped (as the six
    characters backslash-u-0000), so a step result is never lost."""
    execution = ids.next()
    events = [
        Event(event_id=ids.next(), execution_id=execution, event_type=PLAYBOOK_STARTED, node_name="x"),
        Event(
            event_id=ids.next(),
            execution_id=execution,
            event_type="call.done",
            node_name="a\x00b",
            context={"out": "before\x00after", "literal": "keep \\u0000 as text"},
        ),
    ]
    store.append(events)  # the one-statement path
    store.append(
        [Event(event_id=ids.next(), execution_id=execution, event_type=STEP_ENTER, context={"v": "\x00"})]
    )
    stored = store.read(execution)
    assert stored[1].context == {"out": "before\\u0000after", "literal": "keep \\u0000 as text"}
    assert stored[1].node_name == "a\\u0000b"
    assert stored[2].context == {"v": "\\u0000"}


def test_a_value_that_is_not_json_names_the_event(store: PostgresStore) -> None:
    event = Event(
        event_id=ids.next(), execution_id=ids.next(), event_type=STEP_ENTER, context={"x": object()}
    )

    with pytest.raises(StoreError, match=f"event {event.event_id}"):
        store.append([event])


def test_a_closed_store_raises_store_error(pg_dsn: str, schema: str) -> None:
    adapter = PostgresStore(pg_dsn, schema=schema)
    adapter.close()

    with pytest.raises(StoreError):
        adapter.read(ids.next())


# -- throughput --------------------------------------------------------------------------------


def test_append_throughput(store: PostgresStore) -> None:
    total, batch = 10_000, 500
    execution = ids.next()
    events = [
        Event(
            event_id=ids.next(),
            execution_id=execution,
            event_type="call.done",
            node_name=f"step_{n % 20}",
            status="COMPLETED",
            meta={"command_id": f"{execution}:step_{n % 20}:{n}"},
            result={
                "status": "COMPLETED",
                "context": {"command_id": f"c{n}", "result": {"n": n, "ok": True}},
            },
        )
        for n in range(total)
    ]

    started = time.perf_counter()
    for start in range(0, total, batch):
        store.append(events[start : start + batch])
    elapsed = time.perf_counter() - started

    print(f"\npostgres append: {total} events in batches of {batch}: {total / elapsed:,.0f} events/s")
    assert len(store.read(execution)) == total


def test_leadership_is_held_by_one_process_and_passes_on(pg_dsn: str, schema: str) -> None:
    first = PostgresStore(pg_dsn, schema=schema)
    second = PostgresStore(pg_dsn, schema=schema)
    try:
        assert first.try_leadership("recovery") is True
        assert first.try_leadership("recovery") is True  # kept
        assert second.try_leadership("recovery") is False
        assert second.try_leadership("other-role") is True
        first.close()  # the leader goes away: the role passes on
        assert second.try_leadership("recovery") is True
    finally:
        second.close()


def test_execution_lock_serialises_across_stores(pg_dsn: str, schema: str) -> None:
    stores = [PostgresStore(pg_dsn, schema=schema) for _ in range(2)]
    inside: list[int] = []
    overlaps: list[int] = []

    def work(i: int) -> None:
        store = stores[i % 2]
        for _ in range(5):
            with store.execution_lock(42):
                inside.append(i)
                if len(inside) > 1:
                    overlaps.append(i)
                time.sleep(0.002)
                inside.remove(i)

    try:
        in_threads(4, work)
    finally:
        for store in stores:
            store.close()
    assert overlaps == []


def test_a_write_made_while_waiting_for_the_lock_makes_the_waiter_stale(pg_dsn: str, schema: str) -> None:
    """The write sequence read with the lock must be read after the lock is granted: a
    process that waited for it has to see the holder's write (else it orchestrates from a
    stale engine and loses that write; the chaos suite's two-server run caught this)."""
    holder, waiter = (PostgresStore(pg_dsn, schema=schema) for _ in range(2))
    execution = ids.next()
    try:
        holder.append(
            [Event(event_id=ids.next(), execution_id=execution, event_type=PLAYBOOK_STARTED, node_name="x")]
        )
        waiter.mark_current(execution)
        assert not waiter.is_stale(execution)
        granted = threading.Event()
        seen: list[bool] = []

        def wait_for_lock() -> None:
            with waiter.execution_lock(execution):
                granted.set()
                seen.append(waiter.is_stale(execution))

        with holder.execution_lock(execution):
            thread = threading.Thread(target=wait_for_lock)
            thread.start()
            time.sleep(0.3)  # the waiter's lock request is queued behind ours
            assert not granted.is_set()
            holder.append(
                [Event(event_id=ids.next(), execution_id=execution, event_type=STEP_ENTER)]
            )  # bumps it
        thread.join(10)
        assert seen == [True]
    finally:
        holder.close()
        waiter.close()


def _started(store: PostgresStore) -> int:
    execution = ids.next()
    store.append(
        [Event(event_id=ids.next(), execution_id=execution, event_type=PLAYBOOK_STARTED, node_name="x")]
    )
    return execution


def _step(execution: int) -> list[Event]:
    return [Event(event_id=ids.next(), execution_id=execution, event_type=STEP_ENTER)]


def test_a_kept_lock_passes_to_another_store_whose_write_makes_the_first_stale(
    pg_dsn: str, schema: str
) -> None:
    """A lock kept after its section (for the next report of the same execution) is given up
    when unused, to another process that waits for it; the first one then sees that write."""
    first, second = (PostgresStore(pg_dsn, schema=schema) for _ in range(2))
    try:
        execution = _started(first)
        with first.execution_lock(execution):
            first.append(_step(execution))
        assert not first.is_stale(execution)
        with second.execution_lock(execution):  # waits until the first one drops its lock
            second.append(_step(execution))
        with first.execution_lock(execution):
            assert first.is_stale(execution)
            assert len(first.unseen(execution) or []) == 1
    finally:
        first.close()
        second.close()


def test_a_kept_lock_whose_session_died_is_not_trusted(
    pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session holding a kept lock ends (a restarted database, a killed backend): another
    process takes the lock and writes; the first process's next write fails instead of
    landing on a stale view, and its lock after that sees the other write."""
    monkeypatch.setattr(postgres_locks, "IDLE_SECONDS", 30.0)  # kept until used again
    monkeypatch.setattr(postgres_locks, "LONGEST_SECONDS", 60.0)
    first, second = (PostgresStore(pg_dsn, schema=schema) for _ in range(2))
    try:
        execution = _started(first)
        with first.execution_lock(execution):
            first.append(_step(execution))
        killed = query(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
            " AND granted",
            (execution & 0x7FFFFFFF,),
        )
        assert killed == [(True,)]
        with second.execution_lock(execution):
            second.append(_step(execution))
        second.close()  # drops its kept lock
        with pytest.raises(StoreError), first.execution_lock(execution):
            first.append(_step(execution))
        with first.execution_lock(execution):
            assert first.is_stale(execution)
        rows = query(pg_dsn, f'SELECT count(*) FROM "{schema}".event WHERE execution_id = %s', (execution,))
        assert rows == [(3,)]
    finally:
        first.close()
        second.close()


def test_a_lock_is_not_kept_for_an_execution_another_store_writes_too(pg_dsn: str, schema: str) -> None:
    """Two servers sharing a run take turns: once each has seen the other's write, neither keeps
    the lock after its section (the other would wait for it to idle out)."""
    first, second = (PostgresStore(pg_dsn, schema=schema) for _ in range(2))
    try:
        execution = _started(first)
        held = []
        for turn in range(6):
            store = (first, second)[turn % 2]
            with store.execution_lock(execution):
                store.append(_step(execution))
            held.append(
                query(
                    pg_dsn,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
                    (execution & 0x7FFFFFFF,),
                )[0][0]
            )
        assert held[2:] == [0, 0, 0, 0]  # (the first two turns may keep theirs: not shared yet)
    finally:
        first.close()
        second.close()
