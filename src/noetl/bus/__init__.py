"""The command bus: the wake-up signal telling workers that a command is waiting.

It is never the source of truth (the event log is): a worker that gets a notification claims
the command (over HTTP, or with its report when the notification carried the command: see
`noetl.bus.ports`), and workers poll when the bus is absent or failing.

    publisher = open_publisher("nats://127.0.0.1:4222")       # sync, thread-safe
    control = ControlPlane(store, notify=publisher.publish_later)

    subscriber = await open_subscriber("nats://127.0.0.1:4222", ["shared"])   # in the worker's loop
    for message in await subscriber.fetch(1, timeout=5.0):
        ...  # claim message.payload["event_id"], then await message.ack() (or nak)

URL: `nats://[user:password@]host:port` (JetStream; nats-py is imported only then). Without a bus
(`inproc://`, the default), a server signals its in-process worker directly and remote workers
poll; there is no in-process bus adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from noetl.bus.ports import (
    DEFAULT_ACK_WAIT,
    DEFAULT_DURABLE,
    DEFAULT_STREAM,
    DEFAULT_SUBJECT_PREFIX,
    Message,
    Publisher,
    Subscriber,
    command_subject,
)
from noetl.errors import BusError

__all__ = [
    "DEFAULT_ACK_WAIT",
    "DEFAULT_DURABLE",
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT_PREFIX",
    "Message",
    "Publisher",
    "Subscriber",
    "command_subject",
    "open_publisher",
    "open_subscriber",
]

ACCEPTED = "nats://host:port"


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme == "nats":
        if not urlsplit(url).hostname:
            raise BusError(f"bus URL {url!r} names no host: expected nats://host:port")
        return scheme
    raise BusError(f"unsupported bus URL {url!r}: expected {ACCEPTED}")


def open_publisher(
    url: str,
    *,
    stream: str = DEFAULT_STREAM,
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
    connect_timeout: float = 5.0,
) -> Publisher:
    """A connected publisher for `url`. Raises BusError when the bus cannot be reached."""
    _scheme(url)
    try:
        from noetl.bus.nats import NatsPublisher
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise BusError("nats:// needs nats-py: pip install 'noetl[nats]'") from exc
    return NatsPublisher(url, stream, subject_prefix=subject_prefix, connect_timeout=connect_timeout)


async def open_subscriber(
    url: str,
    pools: Sequence[str],
    *,
    durable: str = DEFAULT_DURABLE,
    stream: str = DEFAULT_STREAM,
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
    ack_wait: float = DEFAULT_ACK_WAIT,
    connect_timeout: float = 5.0,
) -> Subscriber:
    """A subscriber on `pools`, bound to the running event loop. Raises BusError when the bus
    cannot be reached (the worker then polls)."""
    _scheme(url)
    try:
        from noetl.bus.nats import NatsSubscriber
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise BusError("nats:// needs nats-py: pip install 'noetl[nats]'") from exc
    subscriber = NatsSubscriber(
        url,
        pools,
        durable,
        stream,
        subject_prefix=subject_prefix,
        ack_wait=ack_wait,
        connect_timeout=connect_timeout,
    )
    return await subscriber.open()
