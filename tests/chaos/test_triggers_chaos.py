"""Subscriptions across a NATS restart (issue 14): messages keep coming while the shared NATS server
is stopped and started again in the middle of the stream; every message id starts exactly one run.

It stops the machine's NATS server, so it runs only under `make chaos`. Two control planes share
one PostgreSQL schema (as two servers would) and run the real `SubscriptionManager`; the publisher
retries each message until JetStream acknowledges it, with a `Nats-Msg-Id` header, so JetStream
drops a retried publish and the subscription dedups on the same id.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest

from noetl.triggers import subscriptions
from tests.support.cluster import NatsControl, port_open, wait_for
from tests.support.subscriptions import Servers, audit_of, runs_of, unique

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.nats]

MESSAGES = 300


@pytest.fixture
def nats_control(nats_url: str) -> Iterator[NatsControl]:
    """Stops NATS on request; whatever happens, NATS is listening again after the test."""
    control = NatsControl()
    reason = control.unusable()
    if reason:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"{reason} (CI=true: the NATS restart test must run)")
        pytest.skip(reason)
    try:
        yield control
    finally:
        control.start()


@pytest.fixture
def schema(pg_dsn: str) -> Iterator[str]:
    name = f"noetl_subchaos_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_nats_restarted_mid_stream_loses_no_message(
    nats_control: NatsControl, nats_url: str, pg_dsn: str, schema: str
) -> None:
    servers = Servers(pg_dsn, schema, nats_url)
    stream = ""
    try:
        subject = unique("trig_chaos_") + ".events"
        sub_id = servers.subscribe(unique("chaos-"), subject=subject, deliver="all", ack_wait=5.0)
        servers.start()
        stream = f"NOETL_SUB_{sub_id}"
        wait_for(lambda: servers.consuming() >= 2, 30, "both servers to consume")
        wait_for(lambda: servers.stream_exists(stream), 30, f"stream {stream}")

        published: dict[str, int] = {}

        def publisher() -> None:
            items = [({"n": i}, f"chaos-{i}") for i in range(MESSAGES)]
            for start in range(0, MESSAGES, 10):  # paced, so the restart falls mid-stream
                published["retries"] = published.get("retries", 0) + servers.publish(
                    subject, items[start : start + 10]
                )
                published["count"] = start + 10
                time.sleep(0.1)

        thread = threading.Thread(target=publisher, name="chaos-publisher")
        thread.start()
        wait_for(lambda: len(runs_of(pg_dsn, schema, sub_id)) >= 60, 60, "60 runs before the restart")
        nats_control.stop()
        stopped_at = len(runs_of(pg_dsn, schema, sub_id))
        time.sleep(3.0)
        nats_control.start()
        assert port_open("127.0.0.1", 4222)
        thread.join(180)
        assert not thread.is_alive(), "the publisher did not finish"
        assert published["count"] == MESSAGES
        wait_for(
            lambda: len({key for key, _, _ in runs_of(pg_dsn, schema, sub_id)}) >= MESSAGES,
            180,
            f"{MESSAGES} distinct messages to run",
            interval=0.5,
        )
        time.sleep(2.0)
        runs = runs_of(pg_dsn, schema, sub_id)
        per_key = Counter(key for key, _, _ in runs)
        deduplicated = audit_of(pg_dsn, schema, sub_id, subscriptions.DEDUPLICATED)
        print(
            f"NATS restart: {stopped_at} runs at the stop, {len(runs)} runs in all, "
            f"{published.get('retries', 0)} publish retries, {len(deduplicated)} deduplicated deliveries"
        )
        assert stopped_at < MESSAGES, "the stream ended before NATS was stopped"
        assert set(per_key) == {f"chaos-{i}" for i in range(MESSAGES)}  # no message lost
        assert max(per_key.values()) == 1  # none ran twice
    finally:
        nats_control.start()
        if stream:
            servers.delete_stream(stream)
        servers.close()
