"""The slots of a command runner: how many commands run their tools at once."""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """A counting slot pool where a released slot goes first to a task waiting to resume (a
    command whose child playbook ended), before new work may use it."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("concurrency must be at least 1")
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        if self._waiters:
            return 0
        return max(0, self.size - self.used)

    def try_take(self) -> bool:
        if self.free <= 0:
            return False
        self.used += 1
        return True

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over; `used` stays the same
                return
        self.used = max(0, self.used - 1)
        self.freed.set()


class Hold:
    """One command's hold on a slot; it lets the slot go while the command only waits (for a
    child playbook) and takes one again before it goes on."""

    def __init__(self, slots: Slots, *, holding: bool) -> None:
        self.slots = slots
        self.holding = holding

    async def take(self) -> None:
        if not self.holding:
            await self.slots.take()
            self.holding = True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            self.slots.release()

    async def __aenter__(self) -> Hold:
        """Waiting: the slot is free for others until the block ends."""
        self.release()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.take()
