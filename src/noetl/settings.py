"""Process settings: every `NOETL_*` environment variable NoETL reads (and the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`), parsed and checked here.

Only the edges read them: the CLI commands (`noetl run`, `server start`, `worker start`, ...),
`serve`, and the factories that build the process's configured objects (`open_store`,
`noetl.ids.default_ids`, the credential cipher). Library classes take explicit parameters. A
command-line flag wins over the environment, the environment over the default; an unset or blank
variable means the default.

Adding a setting is one field of `Settings`: `name: type = _var("NOETL_NAME", parser, default,
"what it is")`. Only the standard library is imported, so every command can afford this module.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from noetl.errors import ConfigError

DEFAULT_SERVER_URL = "http://localhost:8082"
SQLITE_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")
LOG_FORMATS = ("text", "json")
# Variables read here: NoETL's own, and the standard OpenTelemetry exporter variable.
STANDARD_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT",)
_PREFIXES = ("NOETL_", "OTEL_")

Parser = Callable[[str, str], Any]
"""(the variable's name, its stripped non-empty value) -> the typed value, or `ConfigError`."""


# ---------------------------------------------------------------------------------- parsers


def as_text(name: str, raw: str) -> str:
    return raw


def as_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None


def as_positive_int(name: str, raw: str) -> int:
    value = as_int(name, raw)
    if value < 1:
        raise ConfigError(f"{name}={raw!r}: expected a positive integer")
    return value


def as_port(name: str, raw: str) -> int:
    value = as_int(name, raw)
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}={raw!r}: expected a port number from 1 to 65535")
    return value


def as_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds greater than 0")
    return value


def one_of(options: tuple[str, ...], *, upper: bool = True) -> Parser:
    """A parser accepting one of `options`, compared case-insensitively."""

    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(options)}")
        return value

    return parse


as_log_level = one_of(LOG_LEVELS)
"""`NOETL_LOG_LEVEL` and the `--log-level` flags: a `logging` level name, upper-cased."""


def _var(env: str, parse: Parser, default: Any, doc: str, *, secret: bool = False) -> Any:
    """A `Settings` field read from `env`; a secret one is left out of the repr."""
    return field(default=default, repr=not secret, metadata={"env": env, "parse": parse, "doc": doc})


# ---------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Every setting, typed, with its default. `None` means "not configured": the code that uses
    the setting then picks (the per-user data dir, the process id, the command's own level)."""

    store_url: str | None = _var(
        "NOETL_STORE_URL", as_text, None, "Store URL; unset: a SQLite file in the per-user data dir."
    )
    sqlite_sync: str = _var(
        "NOETL_SQLITE_SYNC", one_of(SQLITE_SYNC_MODES), "NORMAL", "SQLite `PRAGMA synchronous` mode."
    )
    encryption_key: str | None = _var(
        "NOETL_ENCRYPTION_KEY",
        as_text,
        None,
        "Credential master key (base64 of 32 bytes, or a passphrase); unset: the key file.",
        secret=True,
    )
    server_url: str = _var(
        "NOETL_SERVER_URL", as_text, DEFAULT_SERVER_URL, "Server the CLI and workers talk to."
    )
    public_server_url: str | None = _var(
        "NOETL_PUBLIC_SERVER_URL", as_text, None, "URL workers reach this server at; unset: host:port."
    )
    host: str = _var("NOETL_HOST", as_text, "127.0.0.1", "Address `noetl server start` binds.")
    port: int = _var("NOETL_PORT", as_port, 8082, "Port `noetl server start` listens on.")
    bus_url: str | None = _var(
        "NOETL_BUS_URL", as_text, None, "Command bus (nats://host:4222); unset: workers poll the server."
    )
    lease_seconds: float = _var(
        "NOETL_LEASE_SECONDS",
        as_seconds,
        30.0,
        "Seconds a claimed command stays claimed without a heartbeat.",
    )
    snowflake_node_id: int | None = _var(
        "NOETL_SNOWFLAKE_NODE_ID", as_int, None, "Node bits of generated ids (mod 1024); unset: the pid."
    )
    log_level: str | None = _var(
        "NOETL_LOG_LEVEL", as_log_level, None, "Log level; unset: WARNING (INFO for `worker start`)."
    )
    log_format: str = _var("NOETL_LOG_FORMAT", one_of(LOG_FORMATS, upper=False), "text", "text or json.")
    api_token: str | None = _var(
        "NOETL_API_TOKEN",
        as_text,
        None,
        "The admin token (servers accept it; workers and the CLI send it); unset: the token file.",
        secret=True,
    )
    token_file: str | None = _var(
        "NOETL_TOKEN_FILE",
        as_text,
        None,
        "File holding the admin token when NOETL_API_TOKEN is unset; unset: api-token in the data dir.",
    )
    result_store_dir: str | None = _var(
        "NOETL_RESULT_STORE_DIR",
        as_text,
        None,
        "Folder of externalised large results (`result_ref`); unset: results in the data dir.",
    )
    result_inline_max_bytes: int = _var(
        "NOETL_RESULT_INLINE_MAX_BYTES",
        as_positive_int,
        10 * 1024 * 1024,
        "Results larger than this are stored aside and referenced (`_ref`).",
    )
    tool_timeout_seconds: float = _var(
        "NOETL_TOOL_TIMEOUT_SECONDS",
        as_seconds,
        3600.0,
        "Time limit of a tool call without a `timeout` of its own.",
    )
    tool_memory_mb: int = _var(
        "NOETL_TOOL_MEMORY_MB",
        as_positive_int,
        2048,
        "Address-space limit of a python step's process, in MiB; `spec.max_memory_mb` on the tool"
        " overrides it (and sets one for a shell step).",
    )
    loop_window: int = _var(
        "NOETL_LOOP_WINDOW",
        as_positive_int,
        1000,
        "Iterations a parallel loop without max_in_flight keeps issued at once.",
    )
    max_body_bytes: int = _var(
        "NOETL_MAX_BODY_BYTES", as_positive_int, 10 * 1024 * 1024, "Largest request body the API takes."
    )
    max_batch_body_bytes: int = _var(
        "NOETL_MAX_BATCH_BODY_BYTES",
        as_positive_int,
        64 * 1024 * 1024,
        "Largest body of `POST /api/events/batch` (a worker's outcomes).",
    )

    schedule_grace_seconds: float = _var(
        "NOETL_SCHEDULE_GRACE_SECONDS",
        as_seconds,
        5.0,
        "How late a schedule tick may start and still count as on time (older ones follow `catchup`).",
    )
    scheduler_interval: float = _var(
        "NOETL_SCHEDULER_INTERVAL", as_seconds, 0.25, "Seconds between the scheduler's passes."
    )
    worker_metrics_port: int | None = _var(
        "NOETL_WORKER_METRICS_PORT",
        as_port,
        None,
        "Port a worker serves Prometheus `/metrics` on; unset: no metrics endpoint on workers.",
    )
    worker_metrics_host: str = _var(
        "NOETL_WORKER_METRICS_HOST",
        as_text,
        "127.0.0.1",
        "Address a worker's `/metrics` binds (off loopback it needs a `read` token).",
    )
    otlp_endpoint: str | None = _var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        as_text,
        None,
        "OTLP/HTTP collector base URL; set: spans are exported (`/v1/traces`); unset: no tracing.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings `environ` gives. A value that cannot be used raises `ConfigError` naming
        its variable."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = spec.metadata["env"]
            raw = environ.get(name, "").strip()
            if raw:
                values[spec.name] = spec.metadata["parse"](name, raw)
        return cls(**values)


def settings() -> Settings:
    """This process's settings, for the edges. Parsed once per distinct set of `NOETL_*`
    variables: repeated calls are cheap, and a changed environment (a test, a CLI runner) is seen."""
    return _parsed(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_PREFIXES))))


def explicit_server_url() -> str | None:
    """NOETL_SERVER_URL when it is set: commands that act on the local store unless told
    otherwise (`noetl credential ...`) act on that server then."""
    return settings().server_url if os.environ.get("NOETL_SERVER_URL", "").strip() else None


def forget() -> None:
    """Drop the settings parsed so far (a process that removed variables from its environment)."""
    _parsed.cache_clear()


@functools.lru_cache(maxsize=8)
def _parsed(snapshot: tuple[tuple[str, str], ...]) -> Settings:
    return Settings.from_env(dict(snapshot))


__all__ = [
    "DEFAULT_SERVER_URL",
    "STANDARD_VARIABLES",
    "ConfigError",
    "Settings",
    "as_log_level",
    "explicit_server_url",
    "forget",
    "settings",
]
