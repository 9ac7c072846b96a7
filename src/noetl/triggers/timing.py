"""When a schedule ticks: pure tick arithmetic on a given clock (no I/O, no sleeping), so every
rule is unit-tested with a fake clock.

* `cron`: 5 fields (`min hour day month weekday`), or 6 with **seconds first**
  (`sec min hour day month weekday`), or an alias (`@hourly`, `@daily`, ...), read by croniter in
  the schedule's IANA time zone. Daylight saving time: a time the spring-forward gap skips runs
  once, at the end of the gap (a daily 02:30 in America/New_York runs at 03:00 EDT that day);
  wildcard jobs simply have no tick in the gap (croniter's rule). In the repeated hour of the
  fall-back, a job with a fixed hour and minute (no `*` in either field) runs once, in the first
  occurrence (as Vixie cron does); wildcard jobs tick by the clock through both.
* `every`: a fixed interval of real time (`30s`, `5m`, `1h30m`, `1d`, or a number of seconds),
  aligned to the Unix epoch, so all servers agree on the ticks; time zones do not matter.

Catch-up: the ticks that came due since the schedule's cursor are split into *missed* ones (due
more than `grace` seconds ago: no server ran the scheduler then) and *timely* ones. `all` runs
every tick, `one` runs the timely ones plus the latest missed one (the missed ticks collapse into
one run), `skip` runs only the timely ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from noetl.errors import ValidationFailed

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CATCHUP_POLICIES = ("skip", "one", "all")
MAX_INTERVAL = 366 * 86400  # a year: a longer interval is a mistake (and overflows dates)
MAX_DUE_TICKS = 10_000  # `all` after a long outage runs at most this many ticks at once
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_interval(value: object) -> float:
    """Seconds of an `every` value: a number of seconds, or text like `30s`, `5m`, `1h30m`, `1d`."""
    if isinstance(value, bool):
        raise ValidationFailed(f"every: expected an interval like '30s', '5m' or '1h', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = list(_PART.finditer(text))
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif parts and "".join(p.group(0) for p in parts) == text:
            seconds = sum(float(p.group(1)) * _UNITS[p.group(2)] for p in parts)
        else:
            raise ValidationFailed(
                f"every: expected an interval like '30s', '5m', '1h30m' or '1d', got {value!r}"
            )
    else:
        raise ValidationFailed(f"every: expected an interval like '30s', '5m' or '1h', got {value!r}")
    if not seconds >= 0.1:
        raise ValidationFailed(f"every: the interval must be at least 0.1 s, got {value!r}")
    if not seconds <= MAX_INTERVAL:
        raise ValidationFailed(
            f"every: the interval must be at most {MAX_INTERVAL} s (a year), got {value!r}"
        )
    return seconds


def zone_of(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed(
            f"timezone: expected an IANA time zone name (e.g. 'Europe/Paris'), got {name!r}"
        )
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a directory, too long
        raise ValidationFailed(f"timezone: unknown IANA time zone {name!r}") from exc


def check_cron(expr: object) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise ValidationFailed(f"cron: expected a cron expression like '*/5 * * * *', got {expr!r}")
    text = " ".join(expr.split())
    fields = len(text.split(" "))
    if not text.startswith("@") and fields not in (5, 6):
        raise ValidationFailed(
            f"cron: expected 5 fields (min hour day month weekday) or 6 with seconds first, got {fields} in {expr!r}"
        )
    if not croniter.is_valid(text, second_at_beginning=fields == 6):
        raise ValidationFailed(f"cron: {expr!r} is not a valid cron expression")
    try:  # valid, yet a date no year has (`0 0 31 2 *`) never comes
        croniter(text, EPOCH, second_at_beginning=fields == 6).get_next(datetime)
    except CroniterError as exc:
        raise ValidationFailed(f"cron: {expr!r} never ticks ({exc})") from exc
    return text


@dataclass(frozen=True)
class Timing:
    """The tick rule of one schedule: a cron expression in a zone, or an interval."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValidationFailed("a schedule needs exactly one of 'cron' and 'every'")

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (UTC, millisecond precision)."""
        moment = moment.astimezone(UTC)
        if self.every is not None:
            step = max(1, round(self.every * 1000))
            elapsed = (moment - EPOCH) // timedelta(milliseconds=1)
            return EPOCH + timedelta(milliseconds=(elapsed // step + 1) * step)
        return next(self._cron_ticks(moment))

    def ticks(self, first: datetime, until: datetime, limit: int = MAX_DUE_TICKS) -> list[datetime]:
        """The ticks in [first, until], oldest first, at most `limit` (the latest ones kept)."""
        found: list[datetime] = []
        tick = self.next_after(first - timedelta(milliseconds=1))
        while tick <= until:
            found.append(tick)
            if len(found) > limit:
                del found[0]
            tick = self.next_after(tick)
        return found

    def last_before(self, moment: datetime) -> datetime:
        """The last tick strictly before `moment`."""
        moment = moment.astimezone(UTC)
        if self.every is not None:
            step = max(1, round(self.every * 1000))
            elapsed = (moment - EPOCH) // timedelta(milliseconds=1)
            return EPOCH + timedelta(milliseconds=((elapsed - 1) // step) * step)
        return next(self._cron_ticks(moment, backwards=True))

    def _cron_ticks(self, moment: datetime, *, backwards: bool = False) -> Iterator[datetime]:
        assert self.cron is not None
        zone = self.zone
        six = not self.cron.startswith("@") and len(self.cron.split(" ")) == 6
        fixed = self._fixed_time(six)
        it = croniter(self.cron, moment.astimezone(zone), second_at_beginning=six)
        while True:
            found = it.get_prev(datetime) if backwards else it.get_next(datetime)
            local = found.astimezone(UTC).astimezone(zone)
            if fixed and _repeated(local):
                continue  # the fall-back's second pass through this wall time: ran already
            yield local.astimezone(UTC)

    def _fixed_time(self, six: bool) -> bool:
        assert self.cron is not None
        if self.cron.startswith("@"):
            return self.cron.lower() != "@hourly"
        fields = self.cron.split(" ")
        minute, hour = (fields[1], fields[2]) if six else (fields[0], fields[1])
        return "*" not in minute and "*" not in hour


def _repeated(local: datetime) -> bool:
    """Whether `local` is the second occurrence of a wall time the fall-back repeats."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def due_ticks(timing: Timing, cursor: datetime, now: datetime, catchup: str, grace: float) -> list[datetime]:
    """The ticks to run now, of those due in [cursor, now], under the catch-up policy."""
    if catchup == "all":
        return timing.ticks(cursor, now)
    cutoff = now - timedelta(seconds=grace)
    timely = timing.ticks(max(cursor, cutoff), now)
    if catchup == "one" and cursor < cutoff:
        latest_missed = timing.last_before(cutoff)
        if latest_missed >= cursor:
            return [latest_missed, *timely]
    return timely
