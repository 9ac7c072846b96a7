"""What the CLI commands share: exit codes and error exits, JSON output, `--set`/`--payload`
workloads, the options every command spells the same way, and the edge where a command reads
the settings (`noetl.settings`) and opens the store or the server client from them.

Only the standard library is imported here (the typer option types are in `noetl.cli.options`);
the store, the HTTP client and logging are imported inside the helpers that need them, so
`noetl run` pays for none of what it does not use.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from noetl.errors import ArgumentError, ConfigError, NoetlError
from noetl.settings import Settings, as_log_level, settings

if TYPE_CHECKING:
    from noetl.cli.options import JsonOption as JsonOption
    from noetl.cli.options import LogLevelOption as LogLevelOption
    from noetl.cli.options import ServerOption as ServerOption
    from noetl.cli.options import StoreOption as StoreOption
    from noetl.client import ServerClient
    from noetl.store import Store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def __getattr__(name: str) -> Any:
    """The typer option types (`StoreOption`, ...) live in `noetl.cli.options`, imported on first
    use, so a command that needs no typer (the fast `noetl run`) does not import it."""
    if name in _OPTIONS:
        from noetl.cli import options

        return getattr(options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_OPTIONS = frozenset({"StoreOption", "ServerOption", "JsonOption", "LogLevelOption"})


def die(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """Print `error: message` on stderr and exit (2, "invalid", unless told otherwise)."""
    sys.stdout.flush()
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def fail(exc: NoetlError, *, invalid: tuple[type[Exception], ...] = ()) -> NoReturn:
    """Report a server error; exit 2 for the error types that mean "bad arguments", else 1."""
    die(str(exc), EXIT_INVALID if invalid and isinstance(exc, invalid) else EXIT_FAILED)


def print_json(value: Any) -> None:
    """One line of JSON on stdout (values JSON does not know are written as their text)."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


# ---------------------------------------------------------------------- settings at the edge


def load_settings() -> Settings:
    """The process's settings; a variable with an unusable value ends the command (exit 2)."""
    try:
        return settings()
    except ConfigError as exc:
        die(str(exc))


def setup_logging(flag: str | None, default: str) -> str:
    """Configure logging from `--log-level`, else NOETL_LOG_LEVEL, else the command's `default`,
    in NOETL_LOG_FORMAT; returns the level."""
    from noetl import logs

    config = load_settings()
    try:
        level = as_log_level("--log-level", flag) if flag else config.log_level or default
    except ConfigError as exc:
        die(str(exc))
    logs.setup(level, as_json=config.log_format == "json")
    return level


def open_store(url: str | None) -> Store:
    """The store `--store` names, else NOETL_STORE_URL's, else the default file."""
    from noetl import store

    try:
        return store.open_store(url)
    except NoetlError as exc:
        die(str(exc))


def server_client(url: str | None) -> ServerClient:
    """A client for `--server`, else NOETL_SERVER_URL, else http://localhost:8082, sending the
    API token: NOETL_API_TOKEN, else the token file a server on this machine wrote."""
    from noetl.client import ServerClient
    from noetl.tokens import client_token

    config = load_settings()
    return ServerClient(url or config.server_url, token=client_token(config.api_token, config.token_file))


def fork_tool_zygote() -> None:
    """Fork the python-tool fork server now, while this process has no other thread (a fork is
    cheap and safe then; later, the first python step would start a new interpreter)."""
    from noetl.tools.pyprocess import pool

    pool.zygote.fork_early()


# ---------------------------------------------------------------------- workloads


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """`--set k=v` values: JSON when the text parses as JSON, else the text itself."""
    from noetl import sdk

    try:
        return sdk.parse_assignments(pairs)
    except ArgumentError as exc:
        die(str(exc))


def build_workload(payload: str | None, assignments: list[str]) -> dict[str, Any]:
    """`--payload` (a JSON object) overlaid by the `--set` values (as `noetl.run` merges them)."""
    from noetl import sdk

    try:
        return sdk.merge_workload(sdk.parse_payload(payload) if payload else None, assignments)
    except ArgumentError as exc:
        die(str(exc))
