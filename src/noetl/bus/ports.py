"""Command-bus ports. Every adapter (NATS JetStream today) implements `Publisher` and `Subscriber` and
passes the shared contract suite in `tests/contract/test_bus_contract.py`.

The bus is only a wake-up signal: a notification says "command <event_id> of execution <id> is
waiting on <server_url>". The event log is the source of truth, and workers poll when the bus is
absent. The bus is at-least-once: a message that is not acked in time is delivered again, and
duplicates are resolved by the claim.

A command's first notification also carries the command itself (`command`, the claim body, when
it is under MAX_INLINE_COMMAND_BYTES) and when it was issued (`issued_at`, epoch seconds). A
worker that receives it on first delivery within DIRECT_RUN_WINDOW seconds runs it at once and
reports `command.claimed` with its outcome (or after 0.5 s, if it is still running): that report
is the claim, checked by the server like a claim request, and a refused one stops the command.
This saves the claim round trip on the common path. Everything else (a redelivery, a stale or
repeated notification marked `again`, one without `command`) is claimed over HTTP first; the
server offers a notified command to polling workers only after the window has passed, so a
command is never handed to two workers at once.

Subjects are `<prefix>.<pool>.<execution_id>` with prefix `noetl.commands` by default. A
subscriber for pool `p` sees exactly the subjects under `<prefix>.<p>.`; every subscriber of the
same pool (and durable name) shares one queue, so each message goes to one of them.

`Publisher` is synchronous and thread-safe (the control plane calls it from server threads);
`Subscriber` is async and belongs to the event loop it was opened in (the worker's).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Protocol

DEFAULT_SUBJECT_PREFIX = "noetl.commands"
DEFAULT_STREAM = "NOETL_COMMANDS"
DEFAULT_ACK_WAIT = 60.0  # seconds a delivered message may stay unacked before it is redelivered
DEFAULT_DURABLE = "noetl-worker-{pool}"
DIRECT_RUN_WINDOW = 2.0  # seconds after issue a first notification may be run without a claim
MAX_INLINE_COMMAND_BYTES = 256 * 1024  # larger commands are notified by id only

_FORBIDDEN_IN_TOKEN = frozenset(".*> \t\r\n")


class Message(Protocol):
    """One delivered notification. Settle it exactly once with `ack` or `nak`."""

    @property
    def subject(self) -> str: ...

    @property
    def payload(self) -> dict[str, Any]: ...

    @property
    def delivery_count(self) -> int:
        """1 on first delivery, 2 on the first redelivery, and so on."""
        ...

    async def ack(self) -> None:
        """Done with this message: it is never delivered again."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Give the message back: it is redelivered (to any subscriber of the pool) after `delay`
        seconds, or as soon as possible when `delay` is None or 0."""
        ...

    async def in_progress(self) -> None:
        """Still working on it: restart the ack-wait clock so it is not redelivered yet."""
        ...


class Publisher(Protocol):
    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        """Publish one notification durably (returns once the bus has stored it).
        Thread-safe. Raises `BusError` when the bus cannot take it; the caller logs that and
        relies on polling."""
        ...

    def publish_later(self, subject: str, payload: dict[str, Any]) -> concurrent.futures.Future[None]:
        """Start publishing one notification and return at once: the future is done when the bus
        has stored it, or holds the `BusError`. Thread-safe; notifications published from one
        thread are stored in the order they were published."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent; `publish` raises `BusError` afterwards."""
        ...


class Subscriber(Protocol):
    async def fetch(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages` waiting messages of this subscriber's pools, waiting at most
        `timeout` seconds for the first one. Returns [] when nothing arrived in time (a timeout is
        not an error). Raises `BusError` when the bus is unreachable, so the caller can poll."""
        ...

    async def close(self) -> None:
        """Stop receiving. Idempotent; unacked messages are redelivered to other subscribers."""
        ...


def command_subject(pool: str, execution_id: int | str, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """`<prefix>.<pool>.<execution_id>`, the subject a command notification is published on."""
    return f"{prefix}.{check_token(pool, 'pool')}.{execution_id}"


def pool_filter(pool: str, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """The subject filter of one pool: `<prefix>.<pool>.>`."""
    return f"{prefix}.{check_token(pool, 'pool')}.>"


def check_token(value: str, what: str) -> str:
    """A single subject token (a pool name, a durable name): non-empty, no dots, wildcards or
    whitespace. Raises ValueError otherwise."""
    if not value or any(ch in _FORBIDDEN_IN_TOKEN for ch in value):
        raise ValueError(f"invalid {what} {value!r}: it must be non-empty, without '.', '*', '>' or spaces")
    return value


def check_prefix(prefix: str) -> str:
    """A subject prefix such as `noetl.commands`: dot-separated tokens, no wildcards."""
    for token in prefix.split("."):
        check_token(token, "subject prefix token")
    return prefix


def durable_name(template: str, pool: str, pools_count: int) -> str:
    """The durable consumer name of `pool`: `template` with `{pool}` filled in; a template without
    `{pool}` is used as-is for a single pool and suffixed `-<pool>` when there are several."""
    if "{pool}" in template:
        name = template.replace("{pool}", pool)
    elif pools_count == 1:
        name = template
    else:
        name = f"{template}-{pool}"
    return check_token(name, "durable name")
