"""The contract every command-bus adapter keeps. Add an adapter by adding a param to `bus`.

The bus is at-least-once: what matters is that a published notification reaches one subscriber
of its pool, that ack settles it, and that nak or a lapsed ack wait brings it back.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from noetl.bus import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DURABLE,
    Message,
    Publisher,
    Subscriber,
    open_publisher,
    open_subscriber,
)
from noetl.errors import BusError


@dataclass
class Bus:
    kind: str
    url: str
    stream: str
    prefix: str
    publisher: Publisher
    _open: list[Subscriber] = field(default_factory=list)

    def subject(self, pool: str, execution_id: int) -> str:
        return f"{self.prefix}.{pool}.{execution_id}"

    def publish(self, pool: str, event_id: int, execution_id: int = 1) -> dict[str, Any]:
        payload = note(event_id, execution_id)
        self.publisher.publish(self.subject(pool, execution_id), payload)
        return payload

    async def subscriber(
        self, pools: Sequence[str], *, ack_wait: float = DEFAULT_ACK_WAIT, durable: str = DEFAULT_DURABLE
    ) -> Subscriber:
        sub = await open_subscriber(
            self.url,
            pools,
            durable=durable,
            stream=self.stream,
            subject_prefix=self.prefix,
            ack_wait=ack_wait,
        )
        self._open.append(sub)
        return sub

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run one async scenario; the subscribers it opened are closed afterwards."""

        async def scenario() -> None:
            try:
                await main()
            finally:
                for sub in self._open:
                    await sub.close()
                self._open.clear()

        asyncio.run(scenario())


def note(event_id: int, execution_id: int = 1) -> dict[str, Any]:
    """A notification shaped like the control plane's."""
    return {
        "execution_id": execution_id,
        "event_id": event_id,
        "command_id": f"{execution_id}:step:{event_id}",
        "step": "step",
        "server_url": "http://127.0.0.1:8082",
    }


async def _delete_stream(url: str, stream: str) -> None:
    import nats
    import nats.js.errors

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


@pytest.fixture(params=[pytest.param("nats", marks=pytest.mark.nats)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """Every adapter under test is built here. Each param gets a stream and subject prefix of its
    own, so tests never see each other's messages; a NATS stream is deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    stream, prefix = f"NOETL_T_{tag}", f"noetl.t{tag}.commands"
    url = request.getfixturevalue("nats_url")
    publisher = open_publisher(url, stream=stream, subject_prefix=prefix)
    try:
        yield Bus(request.param, url, stream, prefix, publisher)
    finally:
        publisher.close()
        if request.param == "nats":
            asyncio.run(_delete_stream(url, stream))


async def drain(sub: Subscriber, *, expect: int, timeout: float = 10.0, ack: bool = True) -> list[Message]:
    """Fetch until `expect` messages arrived or `timeout` passed."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        batch = await sub.fetch(50, min(1.0, max(deadline - time.monotonic(), 0.05)))
        for message in batch:
            if ack:
                await message.ack()
        got += batch
    return got


def event_ids(messages: Sequence[Message]) -> list[int]:
    return [int(m.payload["event_id"]) for m in messages]


# ---------------------------------------------------------------------------------- delivery


def test_publish_then_fetch_returns_the_same_payload(bus: Bus) -> None:
    payload = {
        **note(11, execution_id=7),
        "trace": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "text": "ünïcödé ✓",
    }

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        bus.publisher.publish(bus.subject("shared", 7), payload)
        messages = await sub.fetch(10, 5.0)
        assert len(messages) == 1
        assert messages[0].subject == bus.subject("shared", 7)
        assert messages[0].payload == payload
        assert messages[0].delivery_count == 1
        await messages[0].ack()

    bus.run(main)


def test_publish_later_delivers_in_order_and_settles(bus: Bus) -> None:
    """The control plane's non-blocking publish: every future settles once the bus has the
    message, a burst arrives in publish order, and an impossible publish fails its future."""
    futures = [
        bus.publisher.publish_later(bus.subject("shared", 3), note(i, execution_id=3)) for i in range(20)
    ]
    for future in futures:
        assert future.result(10) is None

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        assert event_ids(await drain(sub, expect=20)) == list(range(20))

    bus.run(main)
    stray = bus.publisher.publish_later(f"noetl.x{uuid.uuid4().hex[:8]}.other.1", note(1))
    with pytest.raises(BusError):
        stray.result(10)
    bus.publisher.close()
    with pytest.raises(BusError):
        bus.publisher.publish_later(bus.subject("shared", 3), note(99)).result(10)


def test_a_notification_published_before_any_subscriber_is_delivered(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        assert event_ids(await drain(sub, expect=1)) == [1]

    bus.run(main)


def test_fetch_returns_empty_on_timeout(bus: Bus) -> None:
    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        started = time.monotonic()
        assert await sub.fetch(5, 0.3) == []
        assert 0.2 <= time.monotonic() - started < 3.0

    bus.run(main)


def test_fetch_respects_max_messages(bus: Bus) -> None:
    for event_id in range(1, 6):
        bus.publish("shared", event_id)

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        first = await sub.fetch(2, 5.0)
        assert 1 <= len(first) <= 2
        for message in first:
            await message.ack()
        rest = await drain(sub, expect=5 - len(first))
        assert sorted(event_ids(first) + event_ids(rest)) == [1, 2, 3, 4, 5]

    bus.run(main)


def test_a_subscriber_sees_only_its_pools(bus: Bus) -> None:
    bus.publish("system", 1)
    bus.publish("shared", 2)

    async def main() -> None:
        shared = await bus.subscriber(["shared"])
        system = await bus.subscriber(["system"])
        assert event_ids(await drain(shared, expect=1)) == [2]
        assert await shared.fetch(10, 0.5) == []  # the system command never reaches it
        got = await drain(system, expect=1)
        assert event_ids(got) == [1]
        assert got[0].subject == bus.subject("system", 1)

    bus.run(main)


def test_a_subscriber_on_several_pools_sees_all_of_them(bus: Bus) -> None:
    for event_id in (1, 2, 3):
        bus.publish("shared", event_id)
    for event_id in (4, 5, 6):
        bus.publish("system", event_id)
    bus.publish("other", 7)

    async def main() -> None:
        sub = await bus.subscriber(["shared", "system"])
        got = await drain(sub, expect=6)
        assert sorted(event_ids(got)) == [1, 2, 3, 4, 5, 6]
        assert await sub.fetch(10, 0.5) == []

    bus.run(main)


# ---------------------------------------------------------------------------------- ack / nak


def test_an_acked_message_is_not_redelivered(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        sub = await bus.subscriber(["shared"], ack_wait=1.0)
        got = await drain(sub, expect=1)
        assert event_ids(got) == [1]
        assert await sub.fetch(10, 2.0) == []  # twice the ack wait

    bus.run(main)


def test_a_nakked_message_is_redelivered(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        first = await drain(sub, expect=1, ack=False)
        await first[0].nak()
        again = await drain(sub, expect=1, timeout=5.0)
        assert event_ids(again) == [1]
        assert again[0].payload == first[0].payload
        assert again[0].delivery_count == 2

    bus.run(main)


def test_a_nak_with_delay_redelivers_after_the_delay(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        first = await drain(sub, expect=1, ack=False)
        nakked = time.monotonic()
        await first[0].nak(delay=1.0)
        assert await sub.fetch(10, 0.3) == []
        again = await drain(sub, expect=1, timeout=5.0)
        assert event_ids(again) == [1]
        assert time.monotonic() - nakked >= 0.8

    bus.run(main)


def test_a_message_not_acked_within_ack_wait_is_redelivered(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        sub = await bus.subscriber(["shared"], ack_wait=1.0)
        first = await drain(sub, expect=1, ack=False)
        assert first[0].delivery_count == 1
        again = await drain(sub, expect=1, timeout=6.0)  # the worker "died": nothing settled it
        assert event_ids(again) == [1]
        assert again[0].delivery_count == 2

    bus.run(main)


def test_in_progress_postpones_redelivery(bus: Bus) -> None:
    bus.publish("shared", 1)

    async def main() -> None:
        busy = await bus.subscriber(["shared"], ack_wait=1.0)
        idle = await bus.subscriber(["shared"], ack_wait=1.0)
        held = await drain(busy, expect=1, ack=False)
        for _ in range(6):  # about twice the ack wait
            await held[0].in_progress()
            assert await idle.fetch(1, 0.3) == []
        await held[0].ack()
        assert await idle.fetch(1, 1.5) == []

    bus.run(main)


# ---------------------------------------------------------------------------------- sharing


def test_subscribers_on_one_durable_share_the_work(bus: Bus) -> None:
    for event_id in range(1, 11):
        bus.publish("shared", event_id)

    async def main() -> None:
        a = await bus.subscriber(["shared"])
        b = await bus.subscriber(["shared"])
        taken: dict[str, list[int]] = {"a": [], "b": []}
        for _ in range(5):  # in turn: each fetch gets the next message, never one the other holds
            for name, sub in (("a", a), ("b", b)):
                got = await sub.fetch(1, 5.0)
                assert len(got) == 1
                await got[0].ack()
                taken[name] += event_ids(got)
        assert len(taken["a"]) == len(taken["b"]) == 5
        assert sorted(taken["a"] + taken["b"]) == list(range(1, 11))

        for event_id in range(11, 41):
            bus.publish("shared", event_id)

        async def worker(sub: Subscriber) -> list[int]:
            ids: list[int] = []
            while got := await sub.fetch(1, 1.0):
                await got[0].ack()
                ids += event_ids(got)
            return ids

        from_a, from_b = await asyncio.gather(worker(a), worker(b))
        assert sorted(from_a + from_b) == list(range(11, 41))  # each exactly once

    bus.run(main)


def test_publish_from_several_threads_at_once(bus: Bus) -> None:
    threads, per_thread = 8, 25
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def publish_some(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                bus.publish("shared", t * 1000 + i, execution_id=t)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=publish_some, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert not errors

    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        got = await drain(sub, expect=threads * per_thread, timeout=20.0)
        expected = sorted(t * 1000 + i for t in range(threads) for i in range(per_thread))
        assert sorted(event_ids(got)) == expected

    bus.run(main)


# ---------------------------------------------------------------------------------- errors


def test_publish_outside_the_subject_prefix_raises_bus_error(bus: Bus) -> None:
    stray = f"noetl.x{uuid.uuid4().hex[:8]}.other.1"
    with pytest.raises(BusError):
        bus.publisher.publish(stray, note(1))


def test_a_closed_publisher_raises_bus_error(bus: Bus) -> None:
    bus.publisher.close()
    bus.publisher.close()  # idempotent
    with pytest.raises(BusError):
        bus.publish("shared", 1)


def test_a_closed_subscriber_raises_bus_error(bus: Bus) -> None:
    async def main() -> None:
        sub = await bus.subscriber(["shared"])
        await sub.close()
        await sub.close()  # idempotent
        with pytest.raises(BusError):
            await sub.fetch(1, 0.1)

    bus.run(main)
