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
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from noetl.bus import Message, Subscriber, open_subscriber
from noetl.bus.ports import DIRECT_RUN_WINDOW
from noetl.client import ServerClient
from noetl.engine import events as ev
from noetl.engine.events import Event
from noetl.errors import BusError, NoetlError, NotFound
from noetl.ids import Snowflake
from noetl.status import FAILED, TERMINAL
from noetl.tools.base import ChildRequest, ChildResult
from noetl.tools.resources import close_tool_resources
from noetl.worker.command import Command, child_metadata, command_from_body
from noetl.worker.credentials import ServerCredentials
from noetl.worker.outbox import REFUSED, STORED, UNSENT, Outbox
from noetl.worker.runner import CommandRunner
from noetl.worker.slots import Hold

log = logging.getLogger(__name__)

T = TypeVar("T")

STARTED_REPORT_DELAY = 0.5  # a command still running after this reports command.started at once
BUS_RETRY_SECONDS = 5.0
BUS_POLL_EVERY = 1.0  # with NATS up, seconds between safety-net polls of the server
MAX_IDLE_INTERVAL = 1.0  # seconds between polls when nothing is pending
DEFAULT_GRACE_PERIOD = 30.0  # seconds in-flight commands get to finish on stop
CREDENTIAL_TTL = 60.0  # seconds a resolved credential is reused
_CHILD_POLL_START, _CHILD_POLL_MAX = 0.2, 2.0


class RemoteWorker:
    def __init__(
        self,
        client: ServerClient,
        *,
        worker_id: str,
        pools: Sequence[str] = ("shared",),
        concurrency: int = 4,
        poll_interval: float = 0.2,
        heartbeat_interval: float = 5,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        max_idle_interval: float = MAX_IDLE_INTERVAL,
        ids: Callable[[], int] | None = None,
        bus_url: str | None = None,
        leased_node: bool = True,
    ) -> None:
        """`leased_node`: take the snowflake node the server leases at registration (off when
        NOETL_SNOWFLAKE_NODE_ID pins one)."""
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
        self.leased_node = leased_node
        self.credentials = ServerCredentials(client, worker_id)
        self.runner = CommandRunner(
            concurrency=concurrency, ids=self.ids, worker_id=worker_id, children=self._run_child
        )
        self.outbox = Outbox(client, worker_id, busy=lambda: self.runner.executing > 0)
        self.completed = 0  # commands whose outcome was posted
        self._poll_failing = False
        self._refused: set[str] = set()  # commands stopped because the server refused their claim
        self._last_poll = 0.0
        self._batch_claims = True  # until the server turns out to have no POST /api/commands/claim
        self.bus_url = bus_url if bus_url and bus_url.startswith("nats") else None
        self._subscriber: Subscriber | None = None
        self._bus_retry_at = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Register, poll and run commands until `stop` is set; then drain and deregister."""
        await self._register()
        heartbeat = asyncio.create_task(self._heartbeat(stop), name="noetl-worker-heartbeat")
        reporter = asyncio.create_task(self.outbox.run(), name="noetl-worker-reporter")
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
            await close_tool_resources()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _register(self) -> None:
        try:
            answer = await self._call(
                self.client.worker_register,
                self.worker_id,
                capacity=self.concurrency,
                # bus=nats: this worker runs commands from their notifications; the server
                # sends command bodies only to pools whose workers all do (noetl.bus.ports).
                labels={"pools": ",".join(self.pools), **({"bus": "nats"} if self.bus_url else {})},
                hostname=socket.gethostname(),
                runtime={"kind": "python", "pid": os.getpid()},
            )
            node = str(answer.get("node_id") or "")  # a string (ids are, in answers)
            if self.leased_node and isinstance(self.ids, Snowflake) and node.isdigit():
                self.ids.use_node(int(node))
            log.info("worker registered", extra={"worker_id": self.worker_id, "server": self.client.base_url})
        except NoetlError as exc:
            log.warning(
                "worker registration failed; polling anyway: %s", exc, extra={"worker_id": self.worker_id}
            )

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        while not await _wait(stop, self.heartbeat_interval):
            try:
                answer = await self._call(
                    self.client.worker_heartbeat, self.worker_id, self.runner.running_ids()
                )
                for command_id in answer.get("stop") or ():
                    if self.runner.stop_command(str(command_id)):
                        log.info(
                            "stopping a command of a cancelled execution", extra={"command_id": command_id}
                        )
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
        if self.runner.active:
            log.info(
                "waiting for %d command(s) in flight", self.runner.active, extra={"worker_id": self.worker_id}
            )
        late = await self.runner.drain(self.grace_period)
        if late:
            log.warning(
                "%d command(s) did not finish within the %.0fs grace period; the server re-issues them "
                "when their lease expires",
                late,
                self.grace_period,
                extra={"worker_id": self.worker_id},
            )

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
        slots = self.runner.slots
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
            return await self._idle(stop, idle)
        if self._batch_claims:
            started = await self._claim_batch(stop, free)
            if started is None:
                return idle
        else:
            started = await self._claim_pending(stop, free)
            if started is None:
                return idle
        if started:
            return self.poll_interval
        return await self._idle(stop, idle)

    async def _idle(self, stop: asyncio.Event, idle: float) -> float:
        if await self._wait_for_work(stop, idle):
            return self.poll_interval
        return min(idle * 2, self.max_idle_interval)

    def _poll_failed(self, what: str, exc: NoetlError) -> None:
        if not self._poll_failing:  # say it once, not on every poll
            log.warning("%s failed: %s", what, exc, extra={"worker_id": self.worker_id})
            self._poll_failing = True

    def _poll_works(self) -> None:
        if self._poll_failing:
            log.info("polling works again", extra={"worker_id": self.worker_id})
            self._poll_failing = False

    async def _claim_batch(self, stop: asyncio.Event, free: int) -> bool | None:
        """Claim up to `free` pending commands in one request and start them: whether any
        started, None when the request failed."""
        self._last_poll = time.monotonic()
        try:
            claimed = await self._call(self.client.claim_many, self.worker_id, pools=self.pools, limit=free)
        except NoetlError as exc:
            self._poll_failed("claiming commands", exc)
            await _wait(stop, self.max_idle_interval)
            return None
        if claimed is None:
            self._batch_claims = False  # an older server: ask for pending commands, claim each
            return False
        self._poll_works()
        for body in claimed:
            self._start(body, None, taken=self.runner.slots.try_take())
        return bool(claimed)

    async def _claim_pending(self, stop: asyncio.Event, free: int) -> bool | None:
        """Ask for pending commands, then claim and start them one by one (an older server)."""
        try:
            pending = await self._call(self.client.pending, self.pools, free)
        except NoetlError as exc:
            self._poll_failed("polling for commands", exc)
            await _wait(stop, self.max_idle_interval)
            return None
        self._poll_works()
        slots = self.runner.slots
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
        return taken > 0

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
        slots = self.runner.slots
        if subscriber is None or slots.free <= 0:
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
            return await self._take_notified(messages)
        return await self._claim_each(stop, messages)

    async def _take_notified(self, messages: list[Message]) -> bool:
        """Run the commands notifications carry at once; claim the others in one request."""
        started = False
        to_claim: list[Message] = []
        for message in messages:
            body = _direct_command(message)
            if body is None:
                to_claim.append(message)
            else:
                self._start(body, message, taken=self.runner.slots.try_take(), direct=True)
                started = True
        if to_claim:
            started = await self._claim_notified(to_claim) or started
        return started

    async def _claim_each(self, stop: asyncio.Event, messages: list[Message]) -> bool:
        """Claim notified commands one by one (an older server)."""
        slots = self.runner.slots
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
        won = {str(body.get("event_id")): body for body in claimed or []}
        for event_id, message in by_event.items():
            body = won.get(event_id)
            if body is None:
                with contextlib.suppress(Exception):
                    await message.ack()  # not ours (claimed elsewhere, ended, cancelled)
            else:
                self._start(body, message, taken=self.runner.slots.try_take())
        return bool(won)

    def _start(
        self, body: Mapping[str, Any], message: Message | None, *, taken: bool, direct: bool = False
    ) -> None:
        """Run a claimed command in a task (`direct`: one from its notification, claimed with
        its report). A claim won beyond the free slots still runs (it is ours now); it only
        waits for a slot first. A command already running here (a repeated notification, a
        redelivery) is not started again."""
        meta = body.get("meta")
        command_id = str(meta.get("command_id")) if isinstance(meta, Mapping) else ""
        execution_id = int(body.get("execution_id") or 0)

        async def work(hold: Hold) -> None:
            await self._run_claimed(body, hold, message, direct=direct)

        if self.runner.launch(command_id, execution_id, work, holding=taken) is None:
            if taken:
                self.runner.slots.release()
            if message is not None:
                self.runner.spawn(message.ack())

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
        if self.runner.running(str(claimed_id)):
            return False  # already running here (the same worker's claim is idempotent)
        self._start(body, message, taken=True)
        return True

    # ------------------------------------------------------------------ one command

    async def _run_claimed(
        self, body: Mapping[str, Any], hold: Hold, message: Message | None = None, *, direct: bool = False
    ) -> None:
        command_id = ""
        try:
            command = command_from_body(body)
            command_id = command.command_id
            executor = self.runner.executor(command, hold, credentials=self.credentials.for_command(command))
            opening = [executor.events.claimed(command)] if direct else []
            opening.append(executor.events.started(command))
            # Long commands say they started (and, when run from a notification, that this
            # worker claimed them); short ones only report it with their outcome.
            early = asyncio.get_running_loop().call_later(
                STARTED_REPORT_DELAY, self._report_started, opening, command_id, message
            )
            try:
                outcome = await self.runner.execute(executor, command)
            finally:
                early.cancel()
            await self._settle(command_id, await self.outbox.report([*opening, *outcome]), message)
        except asyncio.CancelledError:
            if command_id in self._refused:  # its claim was refused: stopped, nothing to say
                self._refused.discard(command_id)
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

    async def _settle(self, command_id: str, fate: str, message: Message | None) -> None:
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

    def _report_started(self, opening: list[Event], command_id: str, message: Message | None) -> None:
        """The command is still running after STARTED_REPORT_DELAY (a timer, so short commands
        cost no task): report its claim/start."""
        self.runner.spawn(self._post_started(opening, command_id, message))

    async def _post_started(self, opening: list[Event], command_id: str, message: Message | None) -> None:
        """Report a still-running command's claim/start (best effort; re-sent with the outcome).
        Once stored, its notification is acknowledged: the lease protects the command now. A
        refused claim stops the command."""
        fate, rejected = await self.outbox.post(opening, command_id, attempts=1)
        if fate == REFUSED or rejected:
            if self.runner.stop_command(command_id):
                self._refused.add(command_id)
        elif fate == STORED and message is not None and opening[0].event_type == ev.COMMAND_CLAIMED:
            with contextlib.suppress(Exception):
                await message.ack()

    async def _run_child(self, request: ChildRequest, command: Command) -> ChildResult:
        try:
            started = await self._call(
                self.client.execute,
                request.path,
                request.workload,
                catalog_id=request.catalog_id,
                parent_execution_id=command.execution_id,
                metadata=child_metadata(command, request),
            )
            child_id = int(started["execution_id"])
        except (NoetlError, KeyError, TypeError, ValueError) as exc:
            return ChildResult(
                execution_id=0, status=FAILED, result=None, error=f"cannot start child playbook: {exc}"
            )
        return await self._wait_child(child_id, request)

    async def _wait_child(self, child_id: int, request: ChildRequest) -> ChildResult:
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
                        child_id, FAILED, None, f"lost track of child execution {child_id}: {exc}"
                    )
                body = {}
            status = str(body.get("status") or "").upper()
            if status in TERMINAL:
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


__all__ = ["RemoteWorker", "default_worker_id"]
