"""The NATS JetStream bus against a live server: what it creates, and how it fails."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from noetl.bus import open_publisher, open_subscriber
from noetl.errors import BusError

REFUSED = "nats://127.0.0.1:1"


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"NOETL_T_{tag}", f"noetl.t{tag}.commands"


@asynccontextmanager
async def jetstream(url: str, stream: str) -> AsyncIterator[Any]:
    """A plain nats-py JetStream context; deletes `stream` on the way out."""
    import nats
    import nats.js.errors

    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
    js = nc.jetstream()
    try:
        yield js
    finally:
        try:
            await js.delete_stream(stream)
        except nats.js.errors.NotFoundError:
            pass
        await nc.close()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


# ---------------------------------------------------------------------------------- stream / consumers


@pytest.mark.nats
def test_the_publisher_creates_the_stream(nats_url: str) -> None:
    from nats.js.api import RetentionPolicy, StorageType

    stream, prefix = _names()

    async def main() -> None:
        async with jetstream(nats_url, stream) as js:
            publisher = await asyncio.to_thread(
                open_publisher, nats_url, stream=stream, subject_prefix=prefix
            )
            try:
                info = await js.stream_info(stream)
                assert info.config.subjects == [f"{prefix}.>"]
                assert info.config.storage == StorageType.FILE
                assert info.config.retention == RetentionPolicy.LIMITS
                assert info.config.max_age == 600
                assert info.config.max_bytes == 512 * 1024 * 1024
                await asyncio.to_thread(publisher.publish, f"{prefix}.shared.1", {"event_id": 1})
                assert (await js.stream_info(stream)).state.messages == 1
            finally:
                await asyncio.to_thread(publisher.close)

    run(main)


@pytest.mark.nats
def test_an_existing_stream_is_kept_as_it_is(nats_url: str) -> None:
    from nats.js.api import StorageType

    stream, prefix = _names()

    async def main() -> None:
        async with jetstream(nats_url, stream) as js:
            await js.add_stream(
                name=stream, subjects=[f"{prefix}.>"], storage=StorageType.MEMORY, max_age=120
            )
            publisher = await asyncio.to_thread(
                open_publisher, nats_url, stream=stream, subject_prefix=prefix
            )
            try:
                info = await js.stream_info(stream)
                assert info.config.storage == StorageType.MEMORY
                assert info.config.max_age == 120
                await asyncio.to_thread(publisher.publish, f"{prefix}.shared.1", {"event_id": 1})
            finally:
                await asyncio.to_thread(publisher.close)

    run(main)


@pytest.mark.nats
def test_the_subscriber_creates_the_stream_and_one_durable_per_pool(nats_url: str) -> None:
    from nats.js.api import AckPolicy, DeliverPolicy

    stream, prefix = _names()

    async def main() -> None:
        async with jetstream(nats_url, stream) as js:
            sub = await open_subscriber(
                nats_url, ["shared", "system"], stream=stream, subject_prefix=prefix, ack_wait=42
            )
            try:
                assert (await js.stream_info(stream)).config.subjects == [f"{prefix}.>"]
                for pool in ("shared", "system"):
                    config = (await js.consumer_info(stream, f"noetl-worker-{pool}")).config
                    assert config.durable_name == f"noetl-worker-{pool}"
                    assert config.filter_subject == f"{prefix}.{pool}.>"
                    assert config.ack_policy == AckPolicy.EXPLICIT
                    assert config.ack_wait == 42
                    assert config.max_deliver == 1000
                    assert config.deliver_policy == DeliverPolicy.ALL
            finally:
                await sub.close()

    run(main)


@pytest.mark.nats
def test_an_undecodable_notification_is_dropped_not_redelivered(nats_url: str) -> None:
    stream, prefix = _names()

    async def main() -> None:
        async with jetstream(nats_url, stream) as js:
            sub = await open_subscriber(
                nats_url, ["shared"], stream=stream, subject_prefix=prefix, ack_wait=1
            )
            try:
                await js.publish(f"{prefix}.shared.1", b"not json")
                await js.publish(f"{prefix}.shared.2", b"[1, 2]")
                assert await sub.fetch(10, 1.0) == []
                assert await sub.fetch(10, 2.0) == []  # terminated, so not back after the ack wait
            finally:
                await sub.close()

    run(main)


# ---------------------------------------------------------------------------------- failures


def test_open_subscriber_fails_fast_when_nats_refuses_the_connection() -> None:
    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(BusError) as caught:
            await open_subscriber(REFUSED, ["shared"])
        assert time.monotonic() - started < 5.0
        message = str(caught.value)
        assert "cannot connect to NATS at nats://127.0.0.1:1" in message
        assert "refused" in message.lower() or "connect call failed" in message.lower()

    run(main)


def test_open_publisher_fails_fast_when_nats_refuses_the_connection() -> None:
    started = time.monotonic()
    with pytest.raises(BusError, match=r"cannot connect to NATS at nats://127\.0\.0\.1:1"):
        open_publisher(REFUSED)
    assert time.monotonic() - started < 5.0


def test_connection_errors_do_not_show_the_password() -> None:
    async def main() -> None:
        with pytest.raises(BusError) as caught:
            await open_subscriber("nats://worker:s3cret@127.0.0.1:1", ["shared"])
        assert "s3cret" not in str(caught.value)
        assert "worker:***@127.0.0.1:1" in str(caught.value)

    run(main)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379", "127.0.0.1:4222", "http://nats", "nats://"])
def test_an_unsupported_bus_url_names_the_accepted_schemes(url: str) -> None:
    with pytest.raises(BusError, match=r"inproc://.*nats://|nats://host:port"):
        open_publisher(url)

    async def main() -> None:
        with pytest.raises(BusError, match=r"nats://"):
            await open_subscriber(url, ["shared"])

    run(main)
