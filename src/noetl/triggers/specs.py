"""What a schedule or a subscription says, checked: the `spec` JSON the store keeps, read into
typed values with errors that name the field (`ValidationFailed`, HTTP 422).

Schedule spec: `cron` or `every`, `timezone` (IANA, default UTC), `payload` (the workload of each
run), `catchup` (skip | one | all, default one), `max_active` (optional) with `overlap` (skip |
queue, default skip: what a tick does while `max_active` runs of the schedule are running), and
`execution_pool` (optional).

Subscription spec: `subject` (NATS), `stream` (optional: else the stream that captures the
subject, else one created for it), `durable` (default `noetl-sub-<id>`), `workload` (optional
templates rendered against `message`; default `{message: <the decoded payload>}`),
`execution_pool` (default `subscription`), `dedup` (`field`: a dotted path into the JSON payload,
else the `header` (default `Nats-Msg-Id`), else the stream sequence; `window_secs`, default 300),
`deliver` (`new`, the default: messages published since the subscription was created; or `all`),
`ack_wait` (seconds, default 30).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noetl.errors import ValidationFailed
from noetl.triggers.timing import CATCHUP_POLICIES, Timing, check_cron, parse_interval, zone_of

OVERLAP_POLICIES = ("skip", "queue")
DEFAULT_CATCHUP = "one"
DEFAULT_SUBSCRIPTION_POOL = "subscription"
DEFAULT_DEDUP_HEADER = "Nats-Msg-Id"
DEFAULT_DEDUP_WINDOW = 300.0
DEFAULT_ACK_WAIT = 30.0
SCHEDULE_KEYS = frozenset(
    {"cron", "every", "timezone", "payload", "catchup", "max_active", "overlap", "execution_pool"}
)
SUBSCRIPTION_KEYS = frozenset(
    {"subject", "stream", "durable", "workload", "execution_pool", "dedup", "deliver", "ack_wait"}
)

MAX_ACTIVE = 1_000_000  # runs of one schedule at once (the API's bound too)


@dataclass(frozen=True)
class ScheduleSpec:
    timing: Timing
    payload: dict[str, Any] = field(default_factory=dict)
    catchup: str = DEFAULT_CATCHUP
    max_active: int | None = None
    overlap: str = "skip"
    execution_pool: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "timezone": self.timing.timezone,
            "payload": self.payload,
            "catchup": self.catchup,
            "max_active": self.max_active,
            "overlap": self.overlap,
            "execution_pool": self.execution_pool,
        }
        if self.timing.cron is not None:
            body["cron"] = self.timing.cron
        else:
            body["every"] = self.timing.every
        return body


def schedule_spec(raw: Mapping[str, Any]) -> ScheduleSpec:
    """A schedule spec from its JSON (a request, a playbook's `schedules:` entry, a stored row)."""
    unknown = sorted(set(raw) - SCHEDULE_KEYS)
    if unknown:
        raise ValidationFailed(
            f"unknown schedule field(s) {', '.join(unknown)}; known: {', '.join(sorted(SCHEDULE_KEYS))}"
        )
    cron, every = raw.get("cron"), raw.get("every")
    if (cron is None) == (every is None):
        raise ValidationFailed(
            "a schedule needs exactly one of 'cron' (an expression) and 'every' (an interval)"
        )
    timezone = raw.get("timezone") or "UTC"
    zone_of(timezone)
    timing = Timing(
        cron=check_cron(cron) if cron is not None else None,
        every=parse_interval(every) if every is not None else None,
        timezone=str(timezone).strip(),
    )
    return ScheduleSpec(
        timing=timing,
        payload=_mapping(raw.get("payload"), "payload"),
        catchup=_choice(raw.get("catchup"), "catchup", CATCHUP_POLICIES, DEFAULT_CATCHUP),
        max_active=_positive(raw.get("max_active"), "max_active"),
        overlap=_choice(raw.get("overlap"), "overlap", OVERLAP_POLICIES, "skip"),
        execution_pool=_text(raw.get("execution_pool"), "execution_pool"),
    )


@dataclass(frozen=True)
class SubscriptionSpec:
    subject: str
    stream: str | None = None
    durable: str | None = None
    workload: dict[str, Any] | None = None
    execution_pool: str = DEFAULT_SUBSCRIPTION_POOL
    dedup_field: str | None = None
    dedup_header: str = DEFAULT_DEDUP_HEADER
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    deliver: str = "new"
    ack_wait: float = DEFAULT_ACK_WAIT

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "stream": self.stream,
            "durable": self.durable,
            "workload": self.workload,
            "execution_pool": self.execution_pool,
            "dedup": {
                "field": self.dedup_field,
                "header": self.dedup_header,
                "window_secs": self.dedup_window,
            },
            "deliver": self.deliver,
            "ack_wait": self.ack_wait,
        }


def subscription_spec(raw: Mapping[str, Any]) -> SubscriptionSpec:
    unknown = sorted(set(raw) - SUBSCRIPTION_KEYS)
    if unknown:
        raise ValidationFailed(
            f"unknown subscription field(s) {', '.join(unknown)}; known: {', '.join(sorted(SUBSCRIPTION_KEYS))}"
        )
    subject = _text(raw.get("subject"), "subject")
    if not subject or any(c in subject for c in " \t\r\n"):
        raise ValidationFailed("subject: a NATS subject is required (e.g. 'orders.created')")
    dedup = _mapping(raw.get("dedup"), "dedup")
    workload = raw.get("workload")
    return SubscriptionSpec(
        subject=subject,
        stream=_text(raw.get("stream"), "stream"),
        durable=_text(raw.get("durable"), "durable"),
        workload=_mapping(workload, "workload") if workload is not None else None,
        execution_pool=_text(raw.get("execution_pool"), "execution_pool") or DEFAULT_SUBSCRIPTION_POOL,
        dedup_field=_text(dedup.get("field"), "dedup.field"),
        dedup_header=_text(dedup.get("header"), "dedup.header") or DEFAULT_DEDUP_HEADER,
        dedup_window=_seconds(dedup.get("window_secs"), "dedup.window_secs", DEFAULT_DEDUP_WINDOW),
        deliver=_choice(raw.get("deliver"), "deliver", ("new", "all"), "new"),
        ack_wait=_seconds(raw.get("ack_wait"), "ack_wait", DEFAULT_ACK_WAIT),
    )


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationFailed(f"{name}: expected a JSON object, got {type(value).__name__}")
    return dict(value)


def _text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{name}: expected a string, got {type(value).__name__}")
    return value.strip()


def _choice(value: Any, name: str, options: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value.strip().lower() not in options:
        raise ValidationFailed(f"{name}: expected one of {', '.join(options)}, got {value!r}")
    return value.strip().lower()


def _positive(value: Any, name: str, most: int = MAX_ACTIVE) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValidationFailed(f"{name}: expected an integer from 1 to {most:,}, got {value!r}")
    return value


def _seconds(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValidationFailed(f"{name}: expected a number of seconds greater than 0, got {value!r}")
    return float(value)
