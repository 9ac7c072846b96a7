"""The remote worker process: poll the control plane for commands, claim them, run them with the
same `Executor` the local runtime uses, and report the events back over HTTP.

    worker = RemoteWorker(ServerClient(url), worker_id="w1", pools=["shared"], concurrency=4)
    await worker.run(stop)          # returns after `stop` is set and in-flight work drained

Delivery: a command is claimed before it runs (the server refuses a second claimer): over HTTP,
or, for a fresh first notification that carries the command (see `noetl.bus.ports`), by the
`command.claimed` event posted with its outcome (or after 0.5 s if it is still running); a
refused claim stops the command. Its outcome (`command.started`, intermediate events, then `call.done`/`command.completed` or
`call.error`/`command.failed`) is posted as one batch per command, retried until the server
stores it; posting is idempotent on `event_id`, so a retried batch never doubles an event.
A notification is acknowledged once the claim is recorded with the outcome, or earlier
when the command outlives the early report (its lease then protects it). A nested playbook (a `kind: playbook`
task of a pipeline) is started through the API and polled; the worker slot is released while
it waits, as in the local runtime.

The HTTP client is synchronous; every call runs in a thread so the event loop keeps serving the
commands in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from noetl.bus import Message, Subscriber, open_subscriber
from noetl.bus.ports import DIRECT_RUN_WINDOW
from noetl.client import TERMINAL_STATUSES, ServerClient
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.errors import BusError, CredentialError, NoetlError, NotFound, ValidationFailed
from noetl.ids import Snowflake
from noetl.secrets import masked, masker
from noetl.tools.base import ChildRequest, ChildResult
from noetl.worker.credentials import _PUBLIC_FIELDS
from noetl.worker.executor import Command, Executor

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTED_REPORT_DELAY = 0.5  # a command still running after this reports command.started at once
REPORT_BATCH = 100  # command outcomes posted in one request at most
REPORT_LINGER = 0.003  # seconds an outcome waits for company while other commands are running
BUS_RETRY_SECONDS = 5.0
BUS_POLL_EVERY = 1.0  # with NATS up, seconds between safety-net polls of the server
MAX_IDLE_INTERVAL = 1.0  # seconds between polls when nothing is pending
DEFAULT_GRACE_PERIOD = 30.0  # seconds in-flight commands get to finish on stop
CREDENTIAL_TTL = 60.0  # seconds a resolved credential is reused
_CHILD_POLL_START, _CHILD_POLL_MAX = 0.2, 2.0
_POST_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # on top of the client's own quick retries

# What became of posted events.
STORED, REFUSED, UNSENT = "stored", "refused", "unsent"


class ServerCredentials:
    """A `CredentialResolver` that asks the server (`GET /api/credentials/{name}?include_data=true`).

    Every secret value is registered with the masker before a tool sees it, so it never reaches
    an event or a log line in clear text; host/port/db/user-like fields stay readable.
    """

    def __init__(self, client: ServerClient, *, ttl: float = CREDENTIAL_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Mapping[str, Any]]] = {}

    def resolve(self, alias: str) -> Mapping[str, Any]:
        cached = self._cache.get(alias)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            body = self.client.get_credential(alias)
        except NotFound as exc:
            raise CredentialError(
                f"credential '{alias}' not found on the server {self.client.base_url}; "
                f"add it with POST /api/credentials or `noetl credential add` on the server's store"
            ) from exc
        except NoetlError as exc:
            raise CredentialError(f"credential '{alias}' could not be fetched: {exc}") from exc
        data = body.get("data")
        if not isinstance(data, Mapping):
            raise CredentialError(f"credential '{alias}' came back without its data (include_data=true)")
        for key, value in data.items():
            if key not in _PUBLIC_FIELDS:
                masker.add(value)
        resolved = {
            "name": str(body.get("name") or alias),
            "type": str(body.get("type") or ""),
            "data": dict(data),
        }
        self._cache[alias] = (now, resolved)
        return resolved


class _Slots:
    """A counting slot pool where a released slot goes first to a task waiting to resume (a
    command whose child playbook ended), before the poll loop may use it for new work."""

    def __init__(self, size: int) -> None:
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


class RemoteWorker:
    def __init__(
        self,
        client: ServerClient,
        *,
        worker_id: str,
        pools: Sequence[str] = ("shared",),
        concurrency: int = 4,
        poll_interval: float = 0.2,
        heartbeat_interval: float = 15,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        max_idle_interval: float = MAX_IDLE_INTERVAL,
        ids: Callable[[], int] | None = None,
        bus_url: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.worker_id = worker_id
        self.pools = list(pools) or ["shared"]
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_idle_interval = max(max_idle_interval, poll_interval)
        self.ids: Callable[[], int] = ids or Snowflake()
        self.credentials = ServerCredentials(client)
        self.completed = 0  # commands whose outcome was posted
        self._slots: _Slots | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poll_failing = False
        self._outbox: asyncio.Queue[tuple[list[Event], asyncio.Future[str]]] | None = None
        self._refused: set[str] = set()  # commands stopped because the server refused their claim
        self._running: set[str] = set()  # command ids in flight here: never started twice
        self._running_tasks: dict[str, asyncio.Task[None]] = {}
        self._executing: dict[str, asyncio.Task[None]] = {}  # running their tool (stoppable)
        self._last_poll = 0.0
        self._batch_claims = True  # until the server turns out to have no POST /api/commands/claim
        self.bus_url = bus_url if bus_url and bus_url.startswith("nats") else None
        self._subscriber: Subscriber | None = None
        self._bus_retry_at = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Register, poll and run commands until `stop` is set; then drain and deregister."""
        self._slots = _Slots(self.concurrency)
        self._outbox = asyncio.Queue()
        await self._register()
        heartbeat = asyncio.create_task(self._heartbeat(stop), name="noetl-worker-heartbeat")
        reporter = asyncio.create_task(self._reporter(), name="noetl-worker-reporter")
        try:
            await self._poll(stop)
        finally:
            await self._drain()
            heartbeat.cancel()
            reporter.cancel()
            await asyncio.gather(heartbeat, reporter, return_exceptions=True)
            await self._deregister()
            if self._subscriber is not None:
                await self._subscriber.close()
            await _close_tool_resources()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _register(self) -> None:
        try:
            await self._call(
                self.client.worker_register,
                self.worker_id,
                capacity=self.concurrency,
                # bus=nats: this worker runs commands from their notifications; the server
                # sends command bodies only to pools whose workers all do (noetl.bus.ports).
                labels={"pools": ",".join(self.pools), **({"bus": "nats"} if self.bus_url else {})},
                hostname=socket.gethostname(),
                runtime={"kind": "python", "pid": os.getpid()},
            )
            log.info("worker registered", extra={"worker_id": self.worker_id, "server": self.client.base_url})
        except NoetlError as exc:
            log.warning(
                "worker registration failed; polling anyway: %s", exc, extra={"worker_id": self.worker_id}
            )

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not await _wait(stop, self.heartbeat_interval):
            try:
                answer = await self._call(self.client.worker_heartbeat, self.worker_id, sorted(self._running))
                for command_id in answer.get("stop") or ():
                    task = self._executing.get(str(command_id))
                    if task is not None and not task.done():
                        log.info(
                            "stopping a command of a cancelled execution", extra={"command_id": command_id}
                        )
                        task.cancel()
            except NotFound:  # the server forgot us (restart): register again
                await self._register()
            except Exception as exc:  # only logged: the heartbeat goes on
                log.warning("heartbeat failed: %s", exc, extra={"worker_id": self.worker_id})

    async def _deregister(self) -> None:
        try:
            await self._call(self.client.worker_deregister, self.worker_id)
            log.info("worker deregistered", extra={"worker_id": self.worker_id})
        except NoetlError as exc:
            log.warning("deregistration failed: %s", exc, extra={"worker_id": self.worker_id})

    async def _drain(self) -> None:
        """Let in-flight commands finish (up to the grace period), then cancel the rest."""
        if not self._tasks:
            return
        log.info("waiting for %d command(s) in flight", len(self._tasks), extra={"worker_id": self.worker_id})
        _, late = await asyncio.wait(set(self._tasks), timeout=self.grace_period)
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "%d command(s) did not finish within the %.0fs grace period; the server re-issues them "
                "when their lease expires",
                len(late),
                self.grace_period,
                extra={"worker_id": self.worker_id},
            )
            await asyncio.gather(*late, return_exceptions=True)

    # ------------------------------------------------------------------ the poll loop

    async def _poll(self, stop: asyncio.Event) -> None:
        idle = self.poll_interval
        while not stop.is_set():
            try:
                idle = await self._poll_once(stop, idle)
            except Exception:  # a surprise (bad answer, bug) must not end the loop
                log.exception("polling loop error", extra={"worker_id": self.worker_id})
                await _wait(stop, self.max_idle_interval)

    async def _poll_once(self, stop: asyncio.Event, idle: float) -> float:
        """One round: ask for as many commands as there are free slots, claim and start them.
        Returns the idle interval for the next round."""
        slots = self._slots
        assert slots is not None
        slots.freed.clear()
        free = slots.free
        if free <= 0:
            await _wait_any(stop, slots.freed, timeout=self.max_idle_interval)
            return idle
        if (
            self._batch_claims
            and self._subscriber is not None
            and time.monotonic() - self._last_poll < BUS_POLL_EVERY
        ):
            # NATS is up: notifications bring the work; polling is only the safety net, and
            # runs right after a notification to claim the rest of a burst in one request.
            if await self._wait_for_work(stop, idle):
                return self.poll_interval
            return min(idle * 2, self.max_idle_interval)
        if self._batch_claims:
            self._last_poll = time.monotonic()
            try:
                claimed = await self._call(
                    self.client.claim_many, self.worker_id, pools=self.pools, limit=free
                )
            except NoetlError as exc:
                claimed = []
                if not self._poll_failing:
                    log.warning("claiming commands failed: %s", exc, extra={"worker_id": self.worker_id})
                    self._poll_failing = True
                await _wait(stop, self.max_idle_interval)
                return idle
            if claimed is None:
                self._batch_claims = False  # an older server: ask for pending commands, claim each
            else:
                self._poll_failing = False
                for body in claimed:
                    self._start(body, None, taken=slots.try_take())
                if claimed:
                    return self.poll_interval
                if await self._wait_for_work(stop, idle):
                    return self.poll_interval
                return min(idle * 2, self.max_idle_interval)
        try:
            pending = await self._call(self.client.pending, self.pools, free)
        except NoetlError as exc:
            if not self._poll_failing:  # say it once, not on every poll
                log.warning("polling for commands failed: %s", exc, extra={"worker_id": self.worker_id})
                self._poll_failing = True
            await _wait(stop, self.max_idle_interval)
            return idle
        if self._poll_failing:
            log.info("polling works again", extra={"worker_id": self.worker_id})
            self._poll_failing = False
        taken = 0
        for item in pending:
            if stop.is_set() or not slots.try_take():
                break
            try:
                started = await self._claim_and_start(item)
            except BaseException:
                slots.release()
                raise
            if started:
                taken += 1
            else:
                slots.release()
        if taken:
            return self.poll_interval
        if await self._wait_for_work(stop, idle):
            return self.poll_interval
        return min(idle * 2, self.max_idle_interval)

    # ------------------------------------------------------------------ the bus (a wake-up signal)

    async def _subscriber_or_none(self) -> Subscriber | None:
        if self.bus_url is None or self._subscriber is not None or time.monotonic() < self._bus_retry_at:
            return self._subscriber
        try:
            self._subscriber = await open_subscriber(self.bus_url, self.pools)
            log.info("listening for commands on %s", self.bus_url, extra={"worker_id": self.worker_id})
        except BusError as exc:
            self._bus_retry_at = time.monotonic() + BUS_RETRY_SECONDS
            log.warning(
                "the bus is unavailable, polling instead: %s", exc, extra={"worker_id": self.worker_id}
            )
        return self._subscriber

    async def _wait_for_work(self, stop: asyncio.Event, idle: float) -> bool:
        """Wait until a notification arrives (NATS) or the idle interval passes (polling). Claims
        and starts the notified commands; True when it started any."""
        subscriber = await self._subscriber_or_none()
        slots = self._slots
        if subscriber is None or slots is None or slots.free <= 0:
            await _wait(stop, idle)
            return False
        try:
            # As many as there are free slots: the first is handed over the moment it arrives,
            # the rest only when they are waiting already (the subscriber does not linger).
            messages = await subscriber.fetch(slots.free, timeout=self.max_idle_interval)
        except BusError as exc:
            log.warning("lost the bus, polling instead: %s", exc, extra={"worker_id": self.worker_id})
            self._subscriber = None
            self._bus_retry_at = time.monotonic() + BUS_RETRY_SECONDS
            with contextlib.suppress(Exception):
                await subscriber.close()
            return False
        if self._batch_claims and messages:
            started = False
            to_claim: list[Message] = []
            for message in messages:
                body = _direct_command(message)
                if body is None:
                    to_claim.append(message)
                else:
                    self._start(body, message, taken=slots.try_take(), direct=True)
                    started = True
            if to_claim:
                started = await self._claim_notified(to_claim) or started
            return started
        started = False
        for message in messages:
            if stop.is_set() or not slots.try_take():
                with contextlib.suppress(Exception):
                    await message.nak()
                continue
            try:
                ok = await self._claim_and_start(message.payload, message)
            except BaseException:
                slots.release()
                raise
            if ok:
                started = True
            else:
                slots.release()
                with contextlib.suppress(Exception):
                    await message.ack()  # not ours (claimed elsewhere, ended, cancelled)
        return started

    async def _claim_notified(self, messages: list[Message]) -> bool:
        """Claim the notified commands in one request; a message is acknowledged once its
        command's outcome is recorded, or at once when the command was not ours."""
        by_event: dict[str, Message] = {}
        for message in messages:
            event_id = message.payload.get("event_id")
            if event_id is None:
                with contextlib.suppress(Exception):
                    await message.ack()
                continue
            by_event[str(event_id)] = message
        try:
            claimed = await self._call(
                self.client.claim_many, self.worker_id, limit=len(by_event), event_ids=list(by_event)
            )
        except NoetlError as exc:
            log.warning("claiming notified commands failed: %s", exc, extra={"worker_id": self.worker_id})
            for message in by_event.values():
                with contextlib.suppress(Exception):
                    await message.nak()
            return False
        slots = self._slots
        assert slots is not None
        won = {str(body.get("event_id")): body for body in claimed or []}
        for event_id, message in by_event.items():
            body = won.get(event_id)
            if body is None:
                with contextlib.suppress(Exception):
                    await message.ack()  # not ours (claimed elsewhere, ended, cancelled)
            else:
                self._start(body, message, taken=slots.try_take())
        return bool(won)

    def _forget_task(self, command_id: str, _task: asyncio.Task[None]) -> None:
        self._running_tasks.pop(command_id, None)

    def _start(
        self, body: Mapping[str, Any], message: Message | None, *, taken: bool, direct: bool = False
    ) -> None:
        """Run a claimed command in a task (`direct`: one from its notification, claimed with
        its report). A claim won beyond the free slots still runs (it is ours now); it only
        waits for a slot first. A command already running here (a repeated notification, a
        redelivery) is not started again."""
        meta = body.get("meta")
        command_id = meta.get("command_id") if isinstance(meta, Mapping) else None
        if command_id is not None and str(command_id) in self._running:
            if taken and self._slots is not None:
                self._slots.release()
            if message is not None:
                self._spawn(message.ack())
            return
        if command_id is not None:
            self._running.add(str(command_id))
        task = self._spawn(
            self._run_claimed(body, message, holding=taken, direct=direct), f"noetl-command-{command_id}"
        )
        if command_id is not None:
            self._running_tasks[str(command_id)] = task
            task.add_done_callback(functools.partial(self._forget_task, str(command_id)))

    async def _claim_and_start(self, item: Mapping[str, Any], message: Message | None = None) -> bool:
        """Claim one pending command and start running it; False when it was not ours."""
        event_id = item.get("event_id")
        command_id = item.get("command_id")
        if event_id is None:
            log.warning("pending command without an event_id: %r", item)
            return False
        try:
            body = await self._call(self.client.claim, str(event_id), self.worker_id)
        except NotFound:
            log.info("command vanished before the claim", extra={"command_id": command_id})
            return False
        except NoetlError as exc:
            log.warning("claim failed: %s", exc, extra={"command_id": command_id, "event_id": event_id})
            return False
        if body is None:  # 409: someone else has it, it ended, or the execution was cancelled
            return False
        meta = body.get("meta")
        claimed_id = meta.get("command_id") if isinstance(meta, Mapping) else command_id
        if str(claimed_id) in self._running:
            return False  # already running here (the same worker's claim is idempotent)
        self._start(body, message, taken=True)
        return True

    # ------------------------------------------------------------------ one command

    async def _run_claimed(
        self,
        body: Mapping[str, Any],
        message: Message | None = None,
        *,
        holding: bool = True,
        direct: bool = False,
    ) -> None:
        slots = self._slots
        assert slots is not None
        meta = body.get("meta")
        command_id: Any = meta.get("command_id") if isinstance(meta, Mapping) else None
        if not holding:  # claimed beyond the free slots: wait for one
            await slots.take()
            holding = True

        async def run_child(request: ChildRequest) -> ChildResult:
            nonlocal holding
            slots.release()  # waiting for a child must not hold a worker slot
            holding = False
            try:
                return await self._run_child(request, command)
            finally:
                await slots.take()
                holding = True

        try:
            command = command_from_claim(body)
            command_id = command.command_id
            executor = Executor(
                ids=self.ids, worker_id=self.worker_id, credentials=self.credentials, run_child=run_child
            )
            opening = [executor.claimed(command)] if direct else []
            opening.append(executor.started(command))
            # Long commands say they started (and, when run from a notification, that this
            # worker claimed them); short ones only report it with their outcome.
            early = asyncio.get_running_loop().call_later(
                STARTED_REPORT_DELAY, self._report_started, opening, command_id, message
            )
            current = asyncio.current_task()
            if current is not None:
                self._executing[command_id] = current
            try:
                outcome = await executor.execute(command)
            finally:
                self._executing.pop(command_id, None)
                early.cancel()
            fate = await self._report([*opening, *outcome])
            if fate == STORED:
                self.completed += 1
            if fate == REFUSED:
                log.info(
                    "the server refused this command's outcome (claimed elsewhere, or its run ended)",
                    extra={"command_id": command_id},
                )
            if message is not None:  # acknowledged once the outcome is recorded (or refused)
                with contextlib.suppress(Exception):
                    await (message.nak() if fate == UNSENT else message.ack())
        except asyncio.CancelledError:
            if str(command_id) in self._refused:  # its claim was refused: stopped, nothing to say
                self._refused.discard(str(command_id))
                log.info("command stopped: the server refused its claim", extra={"command_id": command_id})
                if message is not None:
                    with contextlib.suppress(Exception):
                        await message.ack()
                return
            log.warning(
                "command stopped (cancelled, or abandoned at shutdown)", extra={"command_id": command_id}
            )
            raise
        except Exception:  # one bad command must never take the worker down
            log.exception("command crashed in the worker", extra={"command_id": command_id})
        finally:
            self._running.discard(str(command_id))
            if holding:
                slots.release()

    def _spawn(self, work: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """A task the worker keeps track of (drained or cancelled on stop)."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _report_started(self, opening: list[Event], command_id: Any, message: Message | None) -> None:
        """The command is still running after STARTED_REPORT_DELAY (a timer, so short commands
        cost no task): report its claim/start."""
        self._spawn(self._post_started(opening, command_id, message))

    async def _post_started(self, opening: list[Event], command_id: Any, message: Message | None) -> None:
        """Report a still-running command's claim/start (best effort; re-sent with the outcome).
        Once stored, its notification is acknowledged: the lease protects the command now. A
        refused claim stops the command."""
        fate, rejected = await self._post(opening, command_id, attempts=1)
        if fate == REFUSED or rejected:
            task = self._executing.get(str(command_id))
            if task is not None and not task.done():
                self._refused.add(str(command_id))
                task.cancel()
        elif fate == STORED and message is not None and opening[0].event_type == ev.COMMAND_CLAIMED:
            with contextlib.suppress(Exception):
                await message.ack()

    async def _report(self, events: list[Event]) -> str:
        """Hand a command's events to the reporter, which posts the outcomes of many commands in
        one request; STORED, REFUSED (the server would not take them) or UNSENT."""
        outbox = self._outbox
        if outbox is None:
            fate, rejected = await self._post(events, None)
            return REFUSED if rejected else fate
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        outbox.put_nowait((events, done))
        return await done

    async def _reporter(self) -> None:
        outbox = self._outbox
        assert outbox is not None
        while True:
            batch = [await outbox.get()]
            if self._executing:
                # Other commands are running their tools here: let those about to finish share
                # the request (a fan-out's outcomes cost one post per burst, not one per
                # command). Commands only waiting for their own post do not count.
                await asyncio.sleep(REPORT_LINGER)
            while not outbox.empty() and len(batch) < REPORT_BATCH:
                batch.append(outbox.get_nowait())
            events = [event for item, _ in batch for event in item]
            fate, rejected = await self._post(events, f"{len(batch)} command(s)")
            for item, done in batch:
                if not done.done():
                    mine = any(e.command_id in rejected for e in item)
                    done.set_result(REFUSED if mine else fate)

    async def _post(
        self, events: list[Event], command_id: Any, *, attempts: int | None = None
    ) -> tuple[str, set[str]]:
        """Post events (masked), retrying until stored: (STORED, the commands whose events the
        server refused), (REFUSED, set()) for events it will never take, (UNSENT, set()) when
        given up."""
        batch = [masked(e) for e in events]
        delays = _POST_RETRY_DELAYS if attempts is None else _POST_RETRY_DELAYS[: max(0, attempts - 1)]
        for attempt in range(len(delays) + 1):
            try:
                _, rejected = await self._call(self.client.report_events, batch, worker_id=self.worker_id)
                return STORED, rejected
            except (NotFound, ValidationFailed) as exc:  # the server will never take these
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

    async def _run_child(self, request: ChildRequest, command: Command) -> ChildResult:
        try:
            started = await self._call(
                self.client.execute,
                request.path,
                request.workload,
                catalog_id=request.catalog_id,
                parent_execution_id=command.execution_id,
                metadata=_child_metadata(command, request),
            )
            child_id = int(started["execution_id"])
        except (NoetlError, KeyError, TypeError, ValueError) as exc:
            return ChildResult(
                execution_id=0, status="FAILED", result=None, error=f"cannot start child playbook: {exc}"
            )
        delay = _CHILD_POLL_START
        failures = 0
        while True:
            try:
                body = await self._call(self.client.status, child_id)
                failures = 0
            except NoetlError as exc:
                failures += 1
                if isinstance(exc, NotFound) or failures > 10:
                    return ChildResult(
                        child_id, "FAILED", None, f"lost track of child execution {child_id}: {exc}"
                    )
                body = {}
            status = str(body.get("status") or "").upper()
            if status in TERMINAL_STATUSES:
                error = body.get("error")
                result = body.get("result")
                steps = body.get("steps")
                if request.return_step and isinstance(steps, Mapping):
                    chosen = steps.get(request.return_step)
                    result = chosen.get("result") if isinstance(chosen, Mapping) else None
                return ChildResult(
                    execution_id=child_id,
                    status=status,
                    result=result,
                    error=str(error) if error else None,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _CHILD_POLL_MAX)


def _child_metadata(command: Command, request: ChildRequest) -> dict[str, Any]:
    """What the child's playbook_started records about where it came from (seed 000)."""
    meta = command.meta
    metadata: dict[str, Any] = {"parent_step": command.step, "parent_command_id": command.command_id}
    if request.return_step:
        metadata["return_step"] = request.return_step
    if "iteration_index" in meta:
        metadata["iterator_index"] = meta["iteration_index"]
        metadata["iterator_count"] = meta.get("iteration_total")
        metadata["iterator_item"] = meta.get("iterator_item")
    return metadata


def _direct_command(message: Message) -> Mapping[str, Any] | None:
    """The command a notification carries, when this worker may run it without claiming it
    first: a first delivery, not a repeated notification, issued within DIRECT_RUN_WINDOW."""
    payload = message.payload
    body = payload.get("command")
    issued_at = payload.get("issued_at")
    if not isinstance(body, Mapping) or payload.get("again") or not isinstance(issued_at, (int, float)):
        return None
    try:
        if message.delivery_count != 1:
            return None
    except Exception:  # metadata unavailable: claim it to be safe
        return None
    if not 0 <= time.time() - issued_at < DIRECT_RUN_WINDOW:
        return None
    return body


def command_from_claim(body: Mapping[str, Any]) -> Command:
    """The `Command` a claim answer describes (`{event_id, execution_id, node_name, action, context, meta}`)."""
    node_name = body.get("node_name") or body.get("node_id")
    context = body.get("context")
    meta = body.get("meta")
    event = Event(
        event_id=int(body["event_id"]),
        execution_id=int(body["execution_id"]),
        event_type=ev.COMMAND_ISSUED,
        node_name=str(node_name) if node_name is not None else None,
        node_id=str(node_name) if node_name is not None else None,
        node_type=str(body["action"]) if body.get("action") else None,
        context=dict(context) if isinstance(context, Mapping) else {},
        meta=dict(meta) if isinstance(meta, Mapping) else {},
    )
    return Command.from_event(event)


def default_worker_id() -> str:
    return f"worker-{socket.gethostname()}-{os.getpid()}"


async def _wait(stop: asyncio.Event, timeout: float) -> bool:
    """Sleep up to `timeout`; True as soon as `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _close_tool_resources() -> None:
    from noetl.runtime.local import _close_tool_resources as close

    await close()


__all__ = ["RemoteWorker", "ServerCredentials", "command_from_claim", "default_worker_id"]
