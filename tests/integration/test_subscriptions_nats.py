"""Subscriptions on the local NATS JetStream with two control planes ("servers") sharing one
PostgreSQL schema (issue 14): 1,000 messages with 100 duplicate ids start exactly 900 runs and
record 100 `subscription.message.deduplicated` events; a server that fails between claiming a
message and recording its run gets the message again and runs it once, under the claimed id.
Every subject, stream, durable and schema is unique to the test. The NATS-restart test is in
tests/chaos (it stops the shared NATS server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from tests.support.cluster import wait_for
from tests.support.subscriptions import (
    Servers,
    audit_of,
    claims_of,
    runs_of,
    unique,
)

from noetl.errors import StoreError
from noetl.triggers import subscriptions

pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.slow]


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_subs_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def servers(pg_dsn: str, schema: str, nats_url: str) -> Iterator[Servers]:
    running = Servers(pg_dsn, schema, nats_url)
    try:
        yield running
    finally:
        running.close()


def ready(servers: Servers, nats_url: str, sub_id: str, consumers: int = 2) -> str:
    """Start the servers; wait until both consume and the subscription's stream exists."""
    servers.start()
    stream = f"NOETL_SUB_{sub_id}"
    wait_for(lambda: servers.consuming() >= consumers, 30, "both servers to consume")
    wait_for(lambda: servers.stream_exists(stream), 30, f"stream {stream}")
    return stream


def test_a_thousand_messages_with_a_hundred_duplicate_ids_start_nine_hundred_runs(
    servers: Servers, nats_url: str, pg_dsn: str, schema: str
) -> None:
    subject = unique("trig_") + ".orders"
    sub_id = servers.subscribe(unique("orders-"), subject=subject, deliver="all", dedup={"field": "id"})
    stream = ready(servers, nats_url, sub_id)
    try:
        messages = [({"id": f"order-{i}", "n": i}, None) for i in range(900)]
        duplicates = [({"id": f"order-{i}", "n": -i}, None) for i in range(0, 900, 9)]  # 100 ids again
        assert len(duplicates) == 100
        batch = messages[:450] + duplicates[:50] + messages[450:] + duplicates[50:]
        servers.publish(subject, batch)

        def settled() -> bool:
            return (
                len(runs_of(pg_dsn, schema, sub_id)) >= 900
                and len(audit_of(pg_dsn, schema, sub_id, subscriptions.DEDUPLICATED)) >= 100
            )

        wait_for(settled, 240, "900 runs and 100 deduplicated events", interval=0.5)
        time.sleep(2.0)  # anything extra would show up now
        runs = runs_of(pg_dsn, schema, sub_id)
        audit = audit_of(pg_dsn, schema, sub_id, subscriptions.DEDUPLICATED)
        print(f"1,000 messages: {len(runs)} runs, {len(audit)} deduplicated events")
        assert len(runs) == 900
        assert len({key for key, _, _ in runs}) == 900
        assert len(audit) == 100
        assert {a["dedup_key"] for a in audit} == {f"order-{i}" for i in range(0, 900, 9)}
        by_key = {key: execution_id for key, execution_id, _ in runs}
        assert all(by_key[a["dedup_key"]] == int(a["original_execution_id"]) for a in audit)
        # the first message of each id ran (its `n` is not negative), with the default workload
        assert all(workload["workload"]["message"]["n"] >= 0 for _, _, workload in runs)
    finally:
        servers.delete_stream(stream)


def test_a_failure_between_claim_and_record_redelivers_and_runs_once_under_the_claimed_id(
    servers: Servers, nats_url: str, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_launch = subscriptions.launch
    failed: set[str] = set()

    def crashing_launch(control, path, workload, *, execution_id, metadata, execution_pool=None):  # type: ignore[no-untyped-def]
        key = metadata["message_id"]
        if key not in failed:  # the first attempt of each message dies after the claim
            failed.add(key)
            raise StoreError("simulated crash after the claim, before the run is recorded")
        return real_launch(
            control,
            path,
            workload,
            execution_id=execution_id,
            metadata=metadata,
            execution_pool=execution_pool,
        )

    monkeypatch.setattr(subscriptions, "launch", crashing_launch)
    subject = unique("trig_") + ".events"
    sub_id = servers.subscribe(
        unique("crash-"),
        subject=subject,
        deliver="all",
        ack_wait=2.0,
        workload={"order": "{{ message.data.order }}", "key": "{{ message.id }}"},
    )
    stream = ready(servers, nats_url, sub_id)
    try:
        servers.publish(subject, [({"order": i}, f"msg-{i}") for i in range(20)])
        wait_for(lambda: len(runs_of(pg_dsn, schema, sub_id)) >= 20, 90, "20 runs", interval=0.3)
        time.sleep(1.5)
        runs = runs_of(pg_dsn, schema, sub_id)
        claims = claims_of(pg_dsn, schema, sub_id)
        print(f"crash between claim and record: {len(failed)} failed attempts, {len(runs)} runs")
        assert failed == {f"msg-{i}" for i in range(20)}  # keys from the Nats-Msg-Id header
        assert len(runs) == 20
        assert {key: execution_id for key, execution_id, _ in runs} == claims  # the claimed ids ran
        workloads = {context["workload"]["key"]: context["workload"]["order"] for _, _, context in runs}
        assert workloads == {f"msg-{i}": i for i in range(20)}  # typed: the order stays an int
        assert audit_of(pg_dsn, schema, sub_id, subscriptions.DEDUPLICATED) == []
    finally:
        servers.delete_stream(stream)
