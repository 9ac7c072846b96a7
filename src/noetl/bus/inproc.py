"""The in-process command bus, for tests and single-process modes.

One thread-safe queue per pool (subject prefix `<prefix>.<pool>.`). A delivered message stays
"in flight" until it is acked; it becomes ready again when its subscriber naks it (after the nak
delay), closes, or lets its ack wait run out, so delivery is at-least-once as with JetStream. All
subscribers of a pool share its queue (as if they shared one durable consumer); the `durable`
argument is accepted for parity with the NATS adapter and otherwise ignored.

Messages wait in their pool's queue until a subscriber takes them, so a notification published
before the first worker of its pool starts is not lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.bus.ports import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DURABLE,
    DEFAULT_SUBJECT_PREFIX,
    Message,
    check_prefix,
    check_token,
)
from noetl.errors import BusError

__all__ = ["InprocBus", "InprocMessage", "InprocSubscriber", "named_bus"]


@dataclass(eq=False)
class _Entry:
    seq: int
    subject: str
    data: bytes
    deliveries: int = 0
    token: int = 0  # changes with every delivery; settling an older delivery is a no-op
    due: float = 0.0  # while pending: when it becomes ready again (ack wait or nak delay)
    holder: int | None = None  # id() of the subscriber holding the current delivery


@dataclass(eq=False)
class _PoolQueue:
    ready: deque[_Entry] = field(default_factory=deque)
    pending: dict[int, _Entry] = field(default_factory=dict)  # seq -> entry, in flight or delayed

    def release_due(self, now: float) -> None:
        due = sorted((e for e in self.pending.values() if e.due <= now), key=lambda e: e.seq, reverse=True)
        for entry in due:  # redeliveries go first, oldest at the head
            del self.pending[entry.seq]
            entry.holder = None
            self.ready.appendleft(entry)

    def next_due(self) -> float | None:
        return min((e.due for e in self.pending.values()), default=None)


class InprocBus:
    """Implements `Publisher`; `subscriber(pools)` returns a `Subscriber` on the same queues."""

    def __init__(self, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX) -> None:
        self.subject_prefix = check_prefix(subject_prefix)
        self._lock = threading.Lock()
        self._queues: dict[str, _PoolQueue] = {}
        self._seq = itertools.count(1)
        self._waiters: set[InprocSubscriber] = set()
        self._closed = False
        self._on_close: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ Publisher

    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        pool = self._pool_of(subject)
        try:
            data = json.dumps(payload, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise BusError(f"notification payload for {subject} is not JSON-serialisable: {exc}") from exc
        with self._lock:
            self._check_open()
            self._queue(pool).ready.append(_Entry(next(self._seq), subject, data))
            self._wake_all()

    def publish_later(self, subject: str, payload: dict[str, Any]) -> concurrent.futures.Future[None]:
        """`publish`, with its outcome in an (already settled) future: queueing is immediate."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self.publish(subject, payload)
        except BusError as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)
        return done

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake_all()
            callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ Subscriber side

    def subscriber(
        self,
        pools: Sequence[str],
        *,
        durable: str = DEFAULT_DURABLE,
        ack_wait: float = DEFAULT_ACK_WAIT,
    ) -> InprocSubscriber:
        return InprocSubscriber(self, pools, ack_wait=ack_wait)

    def depth(self, pool: str) -> tuple[int, int]:
        """(ready, pending) message counts of one pool; for tests and diagnostics."""
        with self._lock:
            queue = self._queues.get(pool)
            return (len(queue.ready), len(queue.pending)) if queue else (0, 0)

    # ------------------------------------------------------------------ internals (lock held)

    def _pool_of(self, subject: str) -> str:
        head = self.subject_prefix + "."
        parts = subject[len(head) :].split(".") if subject.startswith(head) else []
        if len(parts) < 2 or not all(parts) or any(ch in subject for ch in "*> \t\r\n"):
            raise BusError(
                f"subject {subject!r} is not a command subject: expected '{head}<pool>.<execution_id>'"
            )
        return parts[0]

    def _queue(self, pool: str) -> _PoolQueue:
        queue = self._queues.get(pool)
        if queue is None:
            queue = self._queues[pool] = _PoolQueue()
        return queue

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the in-process bus is closed")

    def _wake_all(self) -> None:
        for waiter in list(self._waiters):
            waiter._wake()

    def _take(
        self, subscriber: InprocSubscriber, pools: Sequence[str], max_messages: int
    ) -> tuple[list[Message], float | None]:
        """Deliver up to `max_messages`, one pool at a time in turn; also return the earliest
        time a pending message of these pools becomes ready again."""
        now = time.monotonic()
        queues = [self._queue(pool) for pool in pools]
        for queue in queues:
            queue.release_due(now)
        taken: list[Message] = []
        while len(taken) < max_messages and any(q.ready for q in queues):
            for queue in queues:
                if queue.ready and len(taken) < max_messages:
                    entry = queue.ready.popleft()
                    entry.deliveries += 1
                    entry.token += 1
                    entry.due = now + subscriber.ack_wait
                    entry.holder = id(subscriber)
                    queue.pending[entry.seq] = entry
                    taken.append(InprocMessage(self, queue, entry, entry.token, subscriber.ack_wait))
        next_due = min((d for q in queues if (d := q.next_due()) is not None), default=None)
        return taken, next_due

    def _settle(self, message: InprocMessage, action: str, delay: float = 0.0) -> None:
        with self._lock:
            entry, queue = message._entry, message._queue
            current = queue.pending.get(entry.seq) is entry and entry.token == message._token
            if action == "ack":
                if current:
                    del queue.pending[entry.seq]
                elif entry.token == message._token and entry in queue.ready:
                    # its ack wait ran out but nobody took it again: still ours to ack
                    queue.ready.remove(entry)
            elif current and action == "nak":
                entry.due = time.monotonic() + max(delay, 0.0)
                entry.holder = None
                self._wake_all()
            elif current and action == "in_progress":
                entry.due = time.monotonic() + message._ack_wait

    def _release_holder(self, subscriber: InprocSubscriber) -> None:
        with self._lock:
            now = time.monotonic()
            for queue in self._queues.values():
                for entry in queue.pending.values():
                    if entry.holder == id(subscriber):
                        entry.due = now
                        entry.holder = None
            self._waiters.discard(subscriber)
            self._wake_all()


@dataclass(eq=False)
class InprocMessage:
    _bus: InprocBus
    _queue: _PoolQueue
    _entry: _Entry
    _token: int
    _ack_wait: float
    _payload: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self._payload = json.loads(self._entry.data)

    @property
    def subject(self) -> str:
        return self._entry.subject

    @property
    def payload(self) -> dict[str, Any]:
        return self._payload

    @property
    def delivery_count(self) -> int:
        return self._token

    async def ack(self) -> None:
        self._bus._settle(self, "ack")

    async def nak(self, delay: float | None = None) -> None:
        self._bus._settle(self, "nak", delay or 0.0)

    async def in_progress(self) -> None:
        self._bus._settle(self, "in_progress")


class InprocSubscriber:
    """A `Subscriber` on an `InprocBus`. Use it from one event loop."""

    def __init__(self, bus: InprocBus, pools: Sequence[str], *, ack_wait: float = DEFAULT_ACK_WAIT) -> None:
        if not pools:
            raise ValueError("a subscriber needs at least one pool")
        if ack_wait <= 0:
            raise ValueError("ack_wait must be positive")
        self.pools = [check_token(pool, "pool") for pool in dict.fromkeys(pools)]
        self.ack_wait = ack_wait
        self._bus = bus
        self._turn = 0
        self._closed = False
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self._event is None:
            self._event, self._loop = asyncio.Event(), asyncio.get_running_loop()
        event = self._event
        deadline = time.monotonic() + max(timeout, 0.0)
        order = self.pools[self._turn :] + self.pools[: self._turn]
        self._turn = (self._turn + 1) % len(self.pools)
        bus = self._bus
        try:
            while True:
                with bus._lock:
                    bus._check_open()
                    if self._closed:
                        raise BusError("the subscriber is closed")
                    messages, next_due = bus._take(self, order, max_messages)
                    if messages:
                        return messages
                    event.clear()
                    bus._waiters.add(self)
                now = time.monotonic()
                if now >= deadline:
                    return []
                wait = deadline - now if next_due is None else min(deadline, next_due) - now
                try:
                    await asyncio.wait_for(event.wait(), max(wait, 0.0))
                except TimeoutError:
                    pass
        finally:
            with bus._lock:
                bus._waiters.discard(self)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._release_holder(self)

    def _wake(self) -> None:  # called with the bus lock held, from any thread
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop closed meanwhile
            pass


_registry: dict[str, InprocBus] = {}
_registry_lock = threading.Lock()


def named_bus(name: str, *, subject_prefix: str = DEFAULT_SUBJECT_PREFIX) -> InprocBus:
    """The process-wide bus called `name` (`inproc://<name>`), created on first use. Closing it
    forgets the name, so the next use starts an empty bus."""
    with _registry_lock:
        bus = _registry.get(name)
        if bus is not None and not bus.closed:
            if bus.subject_prefix != subject_prefix:
                raise BusError(
                    f"inproc://{name} already exists with subject prefix {bus.subject_prefix!r}, "
                    f"not {subject_prefix!r}"
                )
            return bus
        bus = _registry[name] = InprocBus(subject_prefix=subject_prefix)

    def forget() -> None:
        with _registry_lock:
            if _registry.get(name) is bus:
                del _registry[name]

    bus._on_close.append(forget)
    return bus
