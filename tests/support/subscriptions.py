"""Subscription tests' plumbing: control planes on one PostgreSQL schema standing for servers, each
running the real `SubscriptionManager` in a background event loop, a JetStream publisher that
retries until the server acknowledges, and SQL counts of what happened."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import nats
import nats.errors
import orjson
import psycopg

from noetl.runtime.control import ControlPlane
from noetl.store.postgres import PostgresStore
from noetl.triggers.consumer import SubscriptionManager
from noetl.triggers.registry import Subscriptions

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: on-message, path: tests/on-message}
workload: {message: null}
workflow:
  - step: start
    tool: {kind: python, input: {message: "{{ workload.message }}"}, code: "result = {'got': message}"}
"""


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Servers:
    """`count` control planes on `schema`, each with a SubscriptionManager on `nats_url`."""

    def __init__(self, dsn: str, schema: str, nats_url: str, count: int = 2, refresh: float = 0.2) -> None:
        self.stores = [PostgresStore(dsn, schema=schema) for _ in range(count)]
        self.planes = [ControlPlane(store) for store in self.stores]
        self.planes[0].register(PLAYBOOK)
        self.nats_url = nats_url
        self.managers = [SubscriptionManager(plane, nats_url, refresh=refresh) for plane in self.planes]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="subscription-servers", daemon=True)
        self.thread.start()
        self.tasks: list[asyncio.Task[None]] = []

    def subscribe(self, name: str, **spec: Any) -> str:
        record = Subscriptions(self.planes[0]).create(name, "tests/on-message", spec)
        return str(record.subscription_id)

    def start(self) -> Servers:
        async def spawn() -> list[asyncio.Task[None]]:
            return [asyncio.create_task(m.run()) for m in self.managers]

        self.tasks = self.call(spawn())
        return self

    def consuming(self) -> int:
        """How many consumer tasks run (over all servers)."""
        return sum(len(m.consumers) for m in self.managers)

    def call(self, coro: Any, timeout: float = 300) -> Any:
        """Run a coroutine on the servers' loop (NATS clients of the test live there too)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def publish(
        self, subject: str, items: Iterable[tuple[dict[str, Any], str | None]], timeout: float = 120
    ) -> int:
        return int(
            self.call(_publish(self.nats_url, subject, list(items), time.monotonic() + timeout), timeout + 30)
        )

    def stream_exists(self, name: str) -> bool:
        return bool(self.call(_stream_exists(self.nats_url, name), 30))

    def delete_stream(self, name: str) -> None:
        self.call(_delete_stream(self.nats_url, name), 30)

    def close(self) -> None:
        async def stop() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self.call(stop(), 60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        for store in self.stores:
            store.close()


async def _publish(
    url: str, subject: str, items: Iterable[tuple[dict[str, Any], str | None]], deadline: float
) -> int:
    """Publish every item (payload, Nats-Msg-Id or None), retrying each until JetStream acks it
    (across a NATS restart: nats-py reconnects); returns how many retries it took."""
    retries = 0
    while True:  # NATS may be down right now (the restart test): wait for it
        try:
            nc = await nats.connect(
                url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2
            )
            break
        except (nats.errors.Error, OSError):
            if time.monotonic() > deadline:
                raise
            retries += 1
            await asyncio.sleep(0.5)
    js = nc.jetstream()
    try:
        for payload, msg_id in items:
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            while True:
                try:
                    await js.publish(subject, orjson.dumps(payload), headers=headers, timeout=2)
                    break
                except (nats.errors.Error, OSError):
                    if time.monotonic() > deadline:
                        raise
                    retries += 1
                    await asyncio.sleep(0.2)
    finally:
        await nc.close()
    return retries


def publish(
    url: str, subject: str, items: Iterable[tuple[dict[str, Any], str | None]], timeout: float = 120
) -> int:
    return asyncio.run(_publish(url, subject, list(items), time.monotonic() + timeout))


async def _stream_exists(url: str, name: str) -> bool:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        await nc.jetstream().stream_info(name)
        return True
    except nats.errors.Error:
        return False
    finally:
        await nc.close()


async def _delete_stream(url: str, name: str) -> None:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        await nc.jetstream().delete_stream(name)
    except nats.errors.Error:
        pass
    finally:
        await nc.close()


def runs_of(dsn: str, schema: str, sub_id: str) -> list[tuple[str, int, Any]]:
    """(message_id, execution_id, workload) of every run the subscription started."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT meta->>'message_id', execution_id, context FROM \"{schema}\".event"
            " WHERE event_type = 'playbook_started' AND meta->>'subscription_id' = %s",
            (sub_id,),
        ).fetchall()
    return [(str(key), int(execution_id), context) for key, execution_id, context in rows]


def audit_of(dsn: str, schema: str, sub_id: str, event_type: str) -> list[dict[str, Any]]:
    """The `result.context` of the subscription's audit events of one type."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT result->'context' FROM \"{schema}\".event WHERE execution_id = %s AND event_type = %s",
            (int(sub_id), event_type),
        ).fetchall()
    return [dict(row[0]) for row in rows]


def claims_of(dsn: str, schema: str, sub_id: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT message_key, execution_id FROM "{schema}".subscription_message WHERE subscription_id = %s',
            (int(sub_id),),
        ).fetchall()
    return {str(key): int(execution_id) for key, execution_id in rows}
