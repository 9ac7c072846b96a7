"""Subscriptions on NATS JetStream: every server runs one consumer task per enabled subscription,
all bound to the subscription's one durable pull consumer, so each message goes to one server at a
time (and again, after `ack_wait`, when that server did not ack it).

The stream is the subscription's `stream`, else the stream that already captures its subject,
else a file-backed stream `NOETL_SUB_<id>` created for it. The durable (`noetl-sub-<id>` unless
named) starts at the subscription's creation time (`deliver: new`) or at the stream's first
message (`deliver: all`); explicit acks, unlimited redeliveries. A message is acked after
`Intake.take` recorded its run or its audit event; on a store error it is nak'ed and comes back.

`SubscriptionManager` follows the store: every `refresh` seconds it starts the consumers of new or
changed enabled subscriptions and stops those of deleted or paused ones; it reconnects to NATS by
itself (nats-py) and keeps retrying when NATS is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from noetl.bus.nats import connect
from noetl.errors import BusError, NoetlError
from noetl.runtime.control import ControlPlane
from noetl.store.trigger_ports import SubscriptionRecord
from noetl.triggers.subscriptions import Delivery, Intake

log = logging.getLogger(__name__)

REFRESH_SECONDS = 2.0
FETCH_BATCH = 32
FETCH_WAIT = 1.0
RETRY_SECONDS = 1.0


def durable_of(record: SubscriptionRecord, intake: Intake) -> str:
    return intake.spec.durable or f"noetl-sub-{record.subscription_id}"


async def stream_for(js: JetStreamContext, record: SubscriptionRecord, intake: Intake) -> str:
    """The stream holding the subscription's subject (created when none does)."""
    spec = intake.spec
    if spec.stream:
        return spec.stream
    with contextlib.suppress(nats.js.errors.NotFoundError):
        found: str = await js.find_stream_name_by_subject(spec.subject)
        return found
    name = f"NOETL_SUB_{record.subscription_id}"
    with contextlib.suppress(nats.js.errors.BadRequestError):  # exists already (another server)
        await js.add_stream(StreamConfig(name=name, subjects=[spec.subject], storage=StorageType.FILE))
    return name


class SubscriptionConsumer:
    """Pulls one subscription's messages and hands them to its `Intake`, until cancelled."""

    def __init__(self, nc: Client, control: ControlPlane, record: SubscriptionRecord) -> None:
        self.nc = nc
        self.record = record
        self.intake = Intake(control, record)
        self.taken = 0

    async def bind(self) -> JetStreamContext.PullSubscription:
        js = self.nc.jetstream()
        stream = await stream_for(js, self.record, self.intake)
        durable = durable_of(self.record, self.intake)
        spec = self.intake.spec
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=spec.subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            max_deliver=-1,
        )
        if spec.deliver == "all" or self.record.created_at is None:
            config.deliver_policy = DeliverPolicy.ALL
        else:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = self.record.created_at.astimezone(UTC)
        try:
            await js.add_consumer(stream, config)
        except nats.js.errors.APIError:
            await js.consumer_info(stream, durable)  # created by another server: use it as it is
        return await js.pull_subscribe_bind(durable=durable, stream=stream)

    async def run(self) -> None:
        sub: JetStreamContext.PullSubscription | None = None
        while True:
            try:
                if sub is None:
                    sub = await self.bind()
                msgs = await sub.fetch(batch=FETCH_BATCH, timeout=FETCH_WAIT)
            except TimeoutError:
                continue
            except nats.js.errors.APIError as exc:  # e.g. the consumer was deleted: bind again
                log.warning("subscription %s: %s", self.record.name, exc)
                sub = None
                await asyncio.sleep(RETRY_SECONDS)
                continue
            except (nats.errors.Error, BusError, OSError) as exc:  # NATS down: nats-py reconnects
                log.debug("subscription %s: fetch failed: %s", self.record.name, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for msg in msgs:
                await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        delivery = _delivery(msg)
        try:
            outcome = await asyncio.to_thread(self.intake.take, delivery)
        except NoetlError as exc:
            log.warning(
                "subscription %s: message %s not taken (it comes again): %s",
                self.record.name,
                delivery.stream_seq,
                exc,
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=RETRY_SECONDS)
            return
        self.taken += 1
        if outcome.status == "failed":
            log.warning(
                "subscription %s: message %s cannot run: %s", self.record.name, outcome.key, outcome.error
            )
        try:
            await msg.ack()
        except nats.errors.Error as exc:  # redelivered later, and then recognised as a duplicate
            log.info("subscription %s: ack of %s failed: %s", self.record.name, outcome.key, exc)


def _delivery(msg: Msg) -> Delivery:
    try:
        meta = msg.metadata
        stream, seq, delivered = meta.stream, int(meta.sequence.stream), int(meta.num_delivered or 1)
    except (nats.errors.Error, AttributeError, TypeError, ValueError):
        stream, seq, delivered = "", 0, 1
    headers = {str(k): str(v) for k, v in (msg.headers or {}).items()}
    return Delivery(msg.subject, msg.data, headers, stream, seq, delivered)


class SubscriptionManager:
    """Runs the consumers of the enabled subscriptions in the store, following its changes."""

    def __init__(self, control: ControlPlane, bus_url: str, *, refresh: float = REFRESH_SECONDS) -> None:
        self.control = control
        self.bus_url = bus_url
        self.refresh = refresh
        self.consumers: dict[int, tuple[SubscriptionRecord, SubscriptionConsumer, asyncio.Task[None]]] = {}
        self._nc: Client | None = None

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.sync()
                except (NoetlError, nats.errors.Error, OSError) as exc:
                    log.warning("subscriptions: %s", exc)
                await asyncio.sleep(self.refresh)
        finally:
            await self.close()

    async def sync(self) -> None:
        records = await asyncio.to_thread(self.control.store.subscriptions)
        wanted = {r.subscription_id: r for r in records if r.enabled}
        for sub_id, (record, _, task) in list(self.consumers.items()):
            current = wanted.get(sub_id)
            if current is None or current.updated_at != record.updated_at or task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                del self.consumers[sub_id]
        missing = [r for sub_id, r in wanted.items() if sub_id not in self.consumers]
        if not missing:
            return
        if self._nc is None:
            self._nc = await connect(self.bus_url, name="noetl-subscriptions")
        for record in missing:
            consumer = SubscriptionConsumer(self._nc, self.control, record)
            task = asyncio.create_task(consumer.run(), name=f"noetl-subscription-{record.subscription_id}")
            self.consumers[record.subscription_id] = (record, consumer, task)

    async def close(self) -> None:
        for _, _, task in self.consumers.values():
            task.cancel()
        for _, _, task in self.consumers.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.consumers.clear()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()
