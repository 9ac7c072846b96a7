"""Commands on offer: the control plane's index of issued commands nobody has claimed yet, and
their notifications on the bus.

A command is offered when its `command.issued` is committed: it enters the pending index of its
pool and a notification is published. A first notification carries the command itself (see
`noetl.bus.ports`), so the worker it reaches can run it at once; such a command is *held* for
the bus for BUS_HOLD_SECONDS before polling workers are offered it. Claimed or ended commands
leave the index; unclaimed ones are notified again every `republish_after` seconds.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from noetl.bus.ports import DIRECT_RUN_WINDOW, MAX_INLINE_COMMAND_BYTES
from noetl.engine.events import Event
from noetl.engine.machine import Engine
from noetl.errors import NoetlError
from noetl.store.ports import Store, WorkerRecord
from noetl.worker.command import command_body

log = logging.getLogger(__name__)

DEFAULT_REPUBLISH_SECONDS = 10.0
# A command notified with its body is left to the bus this long before polling workers are
# offered it: a worker may be running it from its notification (see noetl.bus.ports) without a
# claim yet. Bodies are sent only to pools whose live workers all listen on the bus.
BUS_HOLD_SECONDS = DIRECT_RUN_WINDOW + 3.0
WORKER_VIEW_SECONDS = 1.0  # how long the registry's view of the pools' workers is reused

# Publishes one command notification. It may return a Future (a publish still under way): its
# failure then makes the command available to polling workers at once.
Notifier = Callable[[str, dict[str, Any]], "concurrent.futures.Future[None] | None"]


class Offers:
    def __init__(
        self,
        store: Store,
        *,
        notify: Notifier | None,
        server_url: str,
        live_workers: Callable[[], list[WorkerRecord]],
        republish_after: float = DEFAULT_REPUBLISH_SECONDS,
    ) -> None:
        self.store = store
        self.notify = notify
        self.server_url = server_url
        self.republish_after = republish_after
        # Notifications carry their command, for workers to run at once (noetl.bus.ports). Off
        # when this server also runs commands itself from `pending` (an in-process worker).
        self.direct_run = True
        self._live_workers = live_workers
        self._pending: dict[str, dict[int, Event]] = {}  # pool -> command event_id -> command.issued
        self._ids: dict[str, tuple[str, int]] = {}  # command_id -> (pool, its event_id)
        self._published: dict[int, float] = {}  # command event_id -> when last notified
        self._held: dict[int, float] = {}  # command event_id -> when notified with its body
        self._guard = threading.Lock()
        self._bus_pools: tuple[float, frozenset[str]] = (-math.inf, frozenset())

    # ------------------------------------------------------------------ the index

    def offer(self, event: Event, *, again: bool = False, engine: Engine | None = None) -> None:
        """Put a `command.issued` on offer and notify its pool."""
        meta = event.meta or {}
        pool = str(meta.get("pool") or "shared")
        with self._guard:
            self._pending.setdefault(pool, {})[event.event_id] = event
            self._ids[str(meta.get("command_id"))] = (pool, event.event_id)
            self._published[event.event_id] = time.monotonic()
        self._notify(event, again=again, engine=engine)

    def withdraw(self, command_id: str | None) -> None:
        """The command was claimed or ended: it is not on offer any more."""
        with self._guard:
            found = self._ids.get(str(command_id))
            if found is not None:
                self._forget_locked(*found)

    def withdraw_event(self, event_id: int) -> None:
        with self._guard:
            found = self._find_locked(event_id)
            if found is not None:
                self._forget_locked(found[0], event_id)

    def withdraw_execution(self, execution_id: int) -> None:
        with self._guard:
            for pool, commands in self._pending.items():
                for event_id in [k for k, v in commands.items() if v.execution_id == execution_id]:
                    self._forget_locked(pool, event_id)

    def find(self, event_id: int) -> Event | None:
        """A command on offer, by the event id of its `command.issued`."""
        with self._guard:
            found = self._find_locked(event_id)
        return found[1] if found is not None else None

    def all(self) -> list[Event]:
        with self._guard:
            return [event for commands in self._pending.values() for event in commands.values()]

    def available(self, pools: list[str] | None, limit: int) -> list[Event]:
        """The oldest commands on offer to polling workers (not held for the bus)."""
        held_since = time.monotonic() - BUS_HOLD_SECONDS
        found: list[Event] = []
        with self._guard:
            for pool, commands in self._pending.items():
                if pools and pool not in pools:
                    continue
                found.extend(
                    e for e in commands.values() if self._held.get(e.event_id, -math.inf) < held_since
                )
        found.sort(key=lambda e: e.event_id)
        return found[:limit]

    def _find_locked(self, event_id: int) -> tuple[str, Event] | None:
        for pool, commands in self._pending.items():
            event = commands.get(event_id)
            if event is not None:
                return pool, event
        return None

    def _forget_locked(self, pool: str, event_id: int) -> None:
        issued = self._pending.get(pool, {}).pop(event_id, None)
        if issued is not None:
            self._ids.pop(str((issued.meta or {}).get("command_id")), None)
        self._published.pop(event_id, None)
        self._held.pop(event_id, None)

    # ------------------------------------------------------------------ notifications

    def _notify(self, event: Event, *, again: bool = False, engine: Engine | None = None) -> None:
        """Publish a command notification (without waiting for the bus). A first notification
        carries the command itself; one sent again (re-notified, or after a restart) is marked
        so, and its worker claims it first."""
        if self.notify is None:
            return
        meta = event.meta or {}
        pool = str(meta.get("pool") or "shared")
        payload: dict[str, Any] = {
            "execution_id": event.execution_id,
            "event_id": event.event_id,
            "command_id": meta.get("command_id"),
            "step": event.node_name,
            "server_url": self.server_url,
            "issued_at": time.time(),
        }
        if meta.get("trace"):
            payload["trace"] = meta["trace"]
        if again:
            payload["again"] = True
        elif self.direct_run and pool in self._bus_only_pools():
            self._inline(event, payload, engine)
        try:
            pending = self.notify(f"noetl.commands.{pool}.{event.execution_id}", payload)
        except Exception:  # NATS is only a wake-up signal; polling still finds the command
            self._notify_failed(event.event_id, None)
            return
        if pending is not None:
            pending.add_done_callback(functools.partial(self._notified, event.event_id))

    def _inline(self, event: Event, payload: dict[str, Any], engine: Engine | None) -> None:
        body = command_body(event)
        if _json_size(body) > MAX_INLINE_COMMAND_BYTES:
            return
        payload["command"] = body
        with self._guard:
            if event.event_id in self._published:
                self._held[event.event_id] = time.monotonic()
        if engine is not None:  # a failing run now waits for this command's report
            engine.hand_over(str((event.meta or {}).get("command_id")))

    def forget_worker_view(self) -> None:
        """Read the registry again at the next notification (its view is reused for a second)."""
        self._bus_pools = (-math.inf, frozenset())

    def _bus_only_pools(self) -> frozenset[str]:
        """Pools with live workers that all listen on the bus (registered with label bus=nats):
        only their notifications carry the command. A polling-only worker on a pool gets its
        commands without the bus hold instead."""
        checked, pools = self._bus_pools
        now = time.monotonic()
        if now - checked < WORKER_VIEW_SECONDS:
            return pools
        listening: set[str] = set()
        polling: set[str] = set()
        try:
            workers = self._live_workers()
        except NoetlError:
            workers = []
        for worker in workers:
            if worker.kind != "worker_pool":
                continue
            labels = worker.info.get("labels")
            labels = labels if isinstance(labels, Mapping) else {}
            names = [p.strip() for p in str(labels.get("pools") or "shared").split(",") if p.strip()]
            (listening if labels.get("bus") == "nats" else polling).update(names)
        pools = frozenset(listening - polling)
        self._bus_pools = (now, pools)
        return pools

    def _notified(self, event_id: int, done: concurrent.futures.Future[None]) -> None:
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            self._notify_failed(event_id, exc)

    def _notify_failed(self, event_id: int, exc: BaseException | None) -> None:
        """Offer the command to polling workers at once, and re-notify it at the next reap (which
        also takes back a hand-over: no worker got this notification)."""
        with self._guard:
            if event_id in self._held:
                self._held[event_id] = -math.inf
            if event_id in self._published:
                self._published[event_id] = -math.inf
        log.warning(
            "command notification failed; polling workers will find it",
            extra={"event_id": event_id},
            exc_info=exc if exc is not None else True,
        )

    def expired_holds(self, now: float) -> list[Event]:
        """Commands notified with their body that no worker claimed within the hold: polling
        workers may have them now (and a failing run stops waiting for them)."""
        with self._guard:
            due = [event_id for event_id, held in self._held.items() if now - held >= BUS_HOLD_SECONDS]
            taken: list[Event] = []
            for event_id in due:
                del self._held[event_id]
                found = self._find_locked(event_id)
                if found is not None:
                    taken.append(found[1])
        return taken

    def renotify_stale(self, now: float) -> int:
        """Notify again the commands nobody claimed within `republish_after`."""
        with self._guard:
            stale = [
                e
                for commands in self._pending.values()
                for e in commands.values()
                if now - self._published.get(e.event_id, 0.0) >= self.republish_after
            ]
            for event in stale:
                self._published[event.event_id] = now
        for event in stale:
            self._notify(event, again=True)
        return len(stale)


def _json_size(body: Mapping[str, Any]) -> int:
    try:
        return len(orjson.dumps(body, default=str))
    except TypeError:
        return MAX_INLINE_COMMAND_BYTES + 1
