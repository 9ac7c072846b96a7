"""How a remote worker reports: command outcomes go out in batches (one request carries the
outcomes of many commands), each retried until the server stores it. Posting is idempotent on
`event_id`, so a retried batch never doubles an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from noetl.client import ServerClient
from noetl.engine.events import Event
from noetl.errors import Forbidden, NoetlError, NotFound, ValidationFailed
from noetl.secrets import masked

log = logging.getLogger(__name__)

REPORT_BATCH = 100  # command outcomes posted in one request at most
REPORT_LINGER = 0.003  # seconds an outcome waits for company while other commands are running
_POST_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # on top of the client's own quick retries

# What became of posted events.
STORED, REFUSED, UNSENT = "stored", "refused", "unsent"


class Outbox:
    def __init__(self, client: ServerClient, worker_id: str, *, busy: Callable[[], bool]) -> None:
        self.client = client
        self.worker_id = worker_id
        self.busy = busy  # whether other commands are running their tools (worth lingering for)
        self._queue: asyncio.Queue[tuple[list[Event], asyncio.Future[str]]] | None = None

    async def run(self) -> None:
        """Post queued outcomes until cancelled."""
        queue: asyncio.Queue[tuple[list[Event], asyncio.Future[str]]] = asyncio.Queue()
        self._queue = queue
        while True:
            batch = [await queue.get()]
            if self.busy():
                # Other commands are running their tools here: let those about to finish share
                # the request (a fan-out's outcomes cost one post per burst, not one per command).
                await asyncio.sleep(REPORT_LINGER)
            while not queue.empty() and len(batch) < REPORT_BATCH:
                batch.append(queue.get_nowait())
            events = [event for item, _ in batch for event in item]
            fate, rejected = await self.post(events, f"{len(batch)} command(s)")
            for item, done in batch:
                if not done.done():
                    mine = any(e.command_id in rejected for e in item)
                    done.set_result(REFUSED if mine else fate)

    async def report(self, events: list[Event]) -> str:
        """A command's events, posted with other commands' outcomes: STORED, REFUSED (the server
        would not take them) or UNSENT."""
        queue = self._queue
        if queue is None:
            fate, rejected = await self.post(events, None)
            return REFUSED if rejected else fate
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        queue.put_nowait((events, done))
        return await done

    async def post(
        self, events: list[Event], command_id: Any, *, attempts: int | None = None
    ) -> tuple[str, set[str]]:
        """Post events (masked), retrying until stored: (STORED, the commands whose events the
        server refused), (REFUSED, set()) for events it will never take, (UNSENT, set()) when
        given up."""
        batch = [masked(e) for e in events]
        delays = _POST_RETRY_DELAYS if attempts is None else _POST_RETRY_DELAYS[: max(0, attempts - 1)]
        for attempt in range(len(delays) + 1):
            try:
                _, rejected = await self.client.report_events_async(batch, worker_id=self.worker_id)
                return STORED, rejected
            except (NotFound, ValidationFailed, Forbidden) as exc:  # never taken, however often sent
                log.error("the server refused the events: %s", exc, extra={"command_id": command_id})
                return REFUSED, set()
            except NoetlError as exc:
                if attempt >= len(delays):
                    log.error("could not post events: %s", exc, extra={"command_id": command_id})
                    return UNSENT, set()
                log.warning(
                    "posting events failed, retrying in %.1fs: %s",
                    delays[attempt],
                    exc,
                    extra={"command_id": command_id},
                )
                await asyncio.sleep(delays[attempt])
        return UNSENT, set()
