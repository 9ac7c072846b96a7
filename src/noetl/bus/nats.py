"""The NATS JetStream command bus.

Stream (created by whichever side connects first, kept as-is when it already exists):
`NOETL_COMMANDS`, subjects `<prefix>.>`, file storage, limits retention, max_age 10 min and
at most 512 MiB (oldest dropped first). A notification older than that is useless (unclaimed
commands are re-notified every 10 s, and polling and the lease reaper find them anyway);
notifications carry their command, so without the size cap a busy hour could keep gigabytes.
Limits retention (not work-queue) lets several durables read the same subjects.

Consumers: one durable pull consumer per pool (`noetl-worker-<pool>`, filter `<prefix>.<pool>.>`),
shared by every worker of that pool, so each notification goes to one of them. Explicit ack,
`ack_wait` 60 s by default, `max_deliver` 1000, deliver-all (a notification published before the
pool's first worker started is still delivered; a stale one costs one refused claim).

Driver errors become `BusError`; a plain fetch timeout is not an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from noetl.bus.ports import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DURABLE,
    DEFAULT_STREAM,
    DEFAULT_SUBJECT_PREFIX,
    Message,
    check_prefix,
    check_token,
    durable_name,
    pool_filter,
)
from noetl.errors import BusError
from noetl.secrets import redact_url

__all__ = ["NatsMessage", "NatsPublisher", "NatsSubscriber"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_AGE = 600.0  # seconds a notification is kept in the stream
DEFAULT_MAX_BYTES = 512 * 1024 * 1024  # the stream's size cap; the oldest notifications go first
DEFAULT_MAX_DELIVER = 1000
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PUBLISH_TIMEOUT = 2.0  # a PubAck takes milliseconds; the control plane must not stall on it
MULTI_POOL_SLICE = 0.25  # with several pools, how long one pool's pull waits before the next is asked
BATCH_TOP_UP_WAIT = 0.05  # after the first message, how long a pull waits for the rest of a batch
# (a latency-sensitive caller fetches one message at a time: then no top-up pull is made)


async def connect(url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT, name: str) -> Client:
    """Connect with reconnects enabled for the life of the connection, but fail fast (BusError)
    when the first attempt fails: the caller then runs without the bus and polls."""
    shown = redact_url(url)
    nc = Client()
    first_error: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    state = {"connected": False}

    async def on_error(exc: Exception) -> None:
        if not state["connected"]:
            if not first_error.done():
                first_error.set_result(exc)
        else:
            log.warning("NATS error on %s: %s", shown, exc)

    async def on_disconnected() -> None:
        if state["connected"] and not nc.is_closed:
            log.warning("NATS connection to %s lost; reconnecting", shown)

    async def on_reconnected() -> None:
        log.info("NATS connection to %s re-established", shown)

    attempt = asyncio.ensure_future(
        nc.connect(
            servers=[url],
            name=name,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=max(1, math.ceil(connect_timeout)),
        )
    )
    waiting: set[asyncio.Future[Any]] = {attempt, first_error}
    done, _ = await asyncio.wait(waiting, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED)
    if attempt in done and attempt.exception() is None:
        state["connected"] = True
        return nc
    reason: BaseException | str
    if first_error.done():
        reason = first_error.result()
    elif attempt.done() and attempt.exception() is not None:
        reason = attempt.exception() or "unknown error"
    else:
        reason = f"no answer within {connect_timeout:g} s"
    attempt.cancel()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await attempt
    with contextlib.suppress(Exception):
        await nc.close()
    detail = str(reason) or type(reason).__name__
    raise BusError(f"cannot connect to NATS at {shown}: {detail}")


async def ensure_stream(js: JetStreamContext, stream: str, subjects: Sequence[str], max_age: float) -> None:
    """Create the stream when missing; an existing stream of that name is kept unchanged."""
    try:
        await js.stream_info(stream)
        return
    except nats.js.errors.NotFoundError:
        pass
    except nats.errors.NoRespondersError as exc:
        raise BusError("JetStream is not enabled on the NATS server (start nats-server with -js)") from exc
    except nats.errors.Error as exc:
        raise BusError(f"cannot look up stream {stream}: {exc}") from exc
    config = StreamConfig(
        name=stream,
        subjects=list(subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=max_age,
        max_bytes=DEFAULT_MAX_BYTES,
    )
    try:
        await js.add_stream(config)
        log.info("created JetStream stream %s on %s", stream, ", ".join(subjects))
    except nats.js.errors.APIError as exc:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.stream_info(stream)  # someone else created it meanwhile: keep theirs
            return
        raise BusError(f"cannot create stream {stream} on {', '.join(subjects)}: {exc.description}") from exc
    except nats.errors.Error as exc:
        raise BusError(f"cannot create stream {stream}: {exc}") from exc


def _settle(done: concurrent.futures.Future[None], task: asyncio.Task[None]) -> None:
    if done.done():  # a synchronous `publish` gave up waiting and cancelled it
        return
    if task.cancelled():
        done.set_exception(BusError("publish cancelled (the publisher closed)"))
    elif (exc := task.exception()) is not None:
        done.set_exception(exc)
    else:
        done.set_result(None)


def _pending_after(msg: Msg) -> int:
    """How many messages the consumer still had waiting after this one (0 when unknown)."""
    try:
        return int(msg.metadata.num_pending or 0)
    except (ValueError, TypeError, AttributeError, nats.errors.Error):
        return 0


def _bus_error(action: str, exc: BaseException) -> BusError:
    if isinstance(exc, nats.js.errors.APIError):
        return BusError(f"{action}: {exc.description or exc} (code {exc.err_code})")
    return BusError(f"{action}: {exc or type(exc).__name__}")


# ---------------------------------------------------------------------------------- publisher


class NatsPublisher:
    """A thread-safe, synchronous `Publisher`. It runs its own event loop in a daemon thread, so
    `publish` can be called from any thread (but not from inside that loop)."""

    def __init__(
        self,
        url: str,
        stream: str = DEFAULT_STREAM,
        subjects: Sequence[str] | None = None,
        *,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        max_age: float = DEFAULT_MAX_AGE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
        name: str = "noetl-publisher",
    ) -> None:
        self.url = url
        self.stream = check_token(stream, "stream name")
        self.subject_prefix = check_prefix(subject_prefix)
        self.subjects = list(subjects) if subjects else [f"{subject_prefix}.>"]
        self.publish_timeout = publish_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._queued: list[tuple[str, bytes, concurrent.futures.Future[None]]] = []
        self._draining = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"noetl-bus-{stream}", daemon=True
        )
        self._thread.start()
        try:
            self._nc = self._call(
                connect(url, connect_timeout=connect_timeout, name=name), connect_timeout + 5
            )
            self._js = self._nc.jetstream()
            self._call(ensure_stream(self._js, self.stream, self.subjects, max_age), connect_timeout + 5)
        except BaseException:
            self._shutdown(None)
            raise

    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        if threading.current_thread() is self._thread:
            raise BusError("NatsPublisher.publish cannot be called from its own event loop")
        self._wait(self.publish_later(subject, payload), self.publish_timeout + 1.0, f"publish to {subject}")

    def publish_later(self, subject: str, payload: dict[str, Any]) -> concurrent.futures.Future[None]:
        """Queue the publish for the publisher's loop and return at once; the PubAck (or the
        `BusError`) settles the future. The control plane does not wait for the bus under its
        locks: a lost notification only delays the command until it is offered to polling.
        Publishes queued together (a fan-out's commands) cost the loop one wake-up."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            data = orjson.dumps(payload)
        except TypeError as exc:
            done.set_exception(
                BusError(f"notification payload for {subject} is not JSON-serialisable: {exc}")
            )
            return done
        with self._lock:
            if self._closed or not self._nc.is_connected:
                state = (
                    "closed"
                    if self._closed
                    else f"not connected to NATS at {redact_url(self.url)} (reconnecting)"
                )
                done.set_exception(BusError(f"the NATS publisher is {state}; {subject} not published"))
                return done
            self._queued.append((subject, data, done))
            if not self._draining:
                self._draining = True
                self._loop.call_soon_threadsafe(self._drain)
        return done

    def _drain(self) -> None:
        """On the loop: start every queued publish (in order)."""
        with self._lock:
            batch, self._queued = self._queued, []
            self._draining = False
        for subject, data, done in batch:
            task = self._loop.create_task(self._publish(subject, data))
            task.add_done_callback(functools.partial(_settle, done))

    async def _publish(self, subject: str, data: bytes) -> None:
        try:
            await self._js.publish(subject, data, timeout=self.publish_timeout, stream=self.stream)
        except nats.js.errors.NoStreamResponseError as exc:
            raise BusError(
                f"publish to {subject}: no JetStream stream captures it (stream {self.stream} "
                f"takes {', '.join(self.subjects)})"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise BusError(f"publish to {subject}: no PubAck within {self.publish_timeout:g} s") from exc
        except nats.errors.Error as exc:
            raise _bus_error(f"publish to {subject}", exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._shutdown(self._nc)

    def __enter__(self) -> NatsPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ loop plumbing

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return self._wait(asyncio.run_coroutine_threadsafe(coro, self._loop), timeout, "NATS call")

    @staticmethod
    def _wait(future: concurrent.futures.Future[T], timeout: float, what: str) -> T:
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise BusError(f"{what}: no answer within {timeout:g} s") from exc

    def _shutdown(self, nc: Client | None) -> None:
        self._closed = True
        if nc is not None:
            with contextlib.suppress(Exception):
                self._call(self._close_client(nc), 10.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._loop.close()

    @staticmethod
    async def _close_client(nc: Client) -> None:
        with contextlib.suppress(Exception):
            await nc.flush(timeout=2)
        await nc.close()


# ---------------------------------------------------------------------------------- subscriber


class NatsMessage:
    """A delivered JetStream message; settling it after the connection dropped raises BusError."""

    def __init__(self, msg: Msg, payload: dict[str, Any]) -> None:
        self._msg = msg
        self._payload = payload

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def payload(self) -> dict[str, Any]:
        return self._payload

    @property
    def delivery_count(self) -> int:
        try:
            return int(self._msg.metadata.num_delivered or 1)
        except (nats.errors.Error, ValueError, TypeError):
            return 1

    async def ack(self) -> None:
        try:
            await self._msg.ack()
        except nats.errors.Error as exc:
            raise _bus_error(f"ack {self.subject}", exc) from exc

    async def nak(self, delay: float | None = None) -> None:
        try:
            await self._msg.nak(delay=delay if delay and delay > 0 else None)
        except nats.errors.Error as exc:
            raise _bus_error(f"nak {self.subject}", exc) from exc

    async def in_progress(self) -> None:
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:
            raise _bus_error(f"in_progress {self.subject}", exc) from exc


class NatsSubscriber:
    """An async `Subscriber`: one durable pull consumer per pool. Create it in the event loop that
    will use it and `await open()` (or let the first `fetch` open it); `open_subscriber` does both.
    """

    def __init__(
        self,
        url: str,
        pools: Sequence[str],
        durable: str = DEFAULT_DURABLE,
        stream: str = DEFAULT_STREAM,
        *,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        ack_wait: float = DEFAULT_ACK_WAIT,
        max_deliver: int = DEFAULT_MAX_DELIVER,
        max_age: float = DEFAULT_MAX_AGE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        name: str = "noetl-worker",
    ) -> None:
        if not pools:
            raise ValueError("a subscriber needs at least one pool")
        if ack_wait <= 0:
            raise ValueError("ack_wait must be positive")
        self.url = url
        self.pools = [check_token(pool, "pool") for pool in dict.fromkeys(pools)]
        self.stream = check_token(stream, "stream name")
        self.subject_prefix = check_prefix(subject_prefix)
        self.durables = {pool: durable_name(durable, pool, len(self.pools)) for pool in self.pools}
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.max_age = max_age
        self.connect_timeout = connect_timeout
        self.name = name
        self._nc: Client | None = None
        self._subs: list[tuple[str, JetStreamContext.PullSubscription]] = []
        self._turn = 0
        self._closed = False

    async def open(self) -> NatsSubscriber:
        """Connect, ensure the stream and every pool's durable consumer, bind pull subscriptions."""
        if self._closed:
            raise BusError("the NATS subscriber is closed")
        if self._nc is None:
            self._nc = await connect(self.url, connect_timeout=self.connect_timeout, name=self.name)
        if not self._subs:
            try:
                js = self._nc.jetstream()
                await ensure_stream(js, self.stream, [f"{self.subject_prefix}.>"], self.max_age)
                self._subs = [(pool, await self._bind(js, pool)) for pool in self.pools]
            except BaseException:
                await self._unbind()
                nc, self._nc = self._nc, None
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
        return self

    async def _bind(self, js: JetStreamContext, pool: str) -> JetStreamContext.PullSubscription:
        name = self.durables[pool]
        config = ConsumerConfig(
            name=name,
            durable_name=name,
            filter_subject=pool_filter(pool, self.subject_prefix),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            deliver_policy=DeliverPolicy.ALL,
        )
        try:
            await js.add_consumer(self.stream, config)  # creates, or updates a compatible one
        except nats.js.errors.APIError as exc:
            try:
                await js.consumer_info(self.stream, name)
            except nats.errors.Error:
                raise _bus_error(f"cannot create consumer {name} on stream {self.stream}", exc) from exc
            log.warning("keeping existing consumer %s on %s as it is: %s", name, self.stream, exc.description)
        except nats.errors.Error as exc:
            raise _bus_error(f"cannot create consumer {name} on stream {self.stream}", exc) from exc
        try:
            return await js.pull_subscribe_bind(durable=name, stream=self.stream)
        except nats.errors.Error as exc:
            raise _bus_error(f"cannot bind to consumer {name}", exc) from exc

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if not self._subs:
            await self.open()
        nc = self._nc
        if self._closed or nc is None or nc.is_closed:
            raise BusError("the NATS subscriber is closed")
        if not nc.is_connected:
            raise BusError(f"not connected to NATS at {redact_url(self.url)} (reconnecting)")
        subs = self._subs[self._turn :] + self._subs[: self._turn]
        self._turn = (self._turn + 1) % len(self._subs)
        deadline = time.monotonic() + max(timeout, 0.0)
        taken: list[Message] = []
        while True:
            for _pool, sub in subs:
                remaining = deadline - time.monotonic()
                if taken:  # got something: only collect what the other pools already have
                    wait = BATCH_TOP_UP_WAIT
                else:
                    wait = remaining if len(subs) == 1 else min(remaining, MULTI_POOL_SLICE)
                taken.extend(await self._pull(sub, max_messages - len(taken), max(wait, 0.01)))
                if len(taken) >= max_messages:
                    return taken
            if taken or time.monotonic() >= deadline:
                return taken

    async def _pull(self, sub: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Message]:
        # A batch pull waits for the whole batch until it expires, so long-poll for one message
        # and then collect what else is waiting with a short second pull, made only when the
        # first message says more are pending (so a lone message is handed over at once).
        msgs = await self._pull_raw(sub, 1, wait)
        if msgs and batch > 1:
            more = _pending_after(msgs[-1])
            if more:
                msgs += await self._pull_raw(sub, min(batch - 1, more), BATCH_TOP_UP_WAIT)
        out: list[Message] = []
        for msg in msgs:
            try:
                payload = orjson.loads(msg.data)
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # a poison notification: drop it for good, never crash-loop
                log.warning("dropping undecodable notification on %s: %s", msg.subject, exc)
                with contextlib.suppress(nats.errors.Error):
                    await msg.term()
                continue
            out.append(NatsMessage(msg, payload))
        return out

    async def _pull_raw(self, sub: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
        try:
            return await sub.fetch(batch=batch, timeout=wait)
        except TimeoutError:  # nothing waiting (or a stale pull expired): not an error; nats-py
            # raises both its own TimeoutError and a bare asyncio one (the same class as this)
            return []
        except nats.js.errors.APIError as exc:  # e.g. the consumer was deleted: rebind next time
            await self._unbind()
            raise _bus_error("fetch", exc) from exc
        except nats.errors.Error as exc:
            raise _bus_error("fetch", exc) from exc

    async def _unbind(self) -> None:
        subs, self._subs = self._subs, []
        for _pool, sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._unbind()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)  # let pending acks reach the server
            with contextlib.suppress(Exception):
                await nc.close()

    async def __aenter__(self) -> NatsSubscriber:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
