"""The trigger work a server does for its lifetime: the scheduler loop, and the subscription
consumers when a NATS bus is configured (without one, subscriptions wait for a server that has)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from noetl.runtime.control import ControlPlane
from noetl.triggers.consumer import SubscriptionManager
from noetl.triggers.scheduler import DEFAULT_GRACE, DEFAULT_INTERVAL, Scheduler

log = logging.getLogger(__name__)


class TriggerRunner:
    def __init__(
        self,
        control: ControlPlane,
        *,
        bus_url: str | None = None,
        grace: float = DEFAULT_GRACE,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.scheduler = Scheduler(control, grace=grace, interval=interval)
        nats = bool(bus_url) and str(bus_url).startswith(("nats://", "tls://"))
        self.subscriptions = SubscriptionManager(control, str(bus_url)) if nats else None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the loops in the running event loop."""
        self._tasks.append(asyncio.create_task(self.scheduler.run(), name="noetl-scheduler"))
        if self.subscriptions is not None:
            self._tasks.append(asyncio.create_task(self.subscriptions.run(), name="noetl-subscriptions"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
