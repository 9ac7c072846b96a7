"""What kind of failure a tool hit, so policy rules can tell a rate limit from a bad password.

Every failed `ToolResult` carries an `error_kind` (one of `KINDS`); `output.error.kind` and
`output.error.retryable` in `tool.spec.policy.rules` come from it:

| kind | when | retryable |
|---|---|---|
| `server_error` | HTTP 5xx; a database failing on its side (deadlock, serialization, out of resources) | yes |
| `rate_limit` | HTTP 429 | yes |
| `auth` | HTTP 401/403; a database refusing the login or the privilege | no |
| `not_found` | HTTP 404; a database that does not exist | no |
| `client_error` | any other HTTP 4xx | no |
| `timeout` | the call ran past its time limit (HTTP 408 too) | yes |
| `connection` | refused, DNS failure, reset, unreachable | yes |
| `tool` | an error in the step's own code, SQL, command or configuration | no |

`classify_exception` reads an exception raised by user code (the python tool): HTTP client
errors that carry a status (requests, httpx, urllib), database errors that carry a SQLSTATE
(psycopg, psycopg2), timeouts and connection errors keep their meaning; anything else is `tool`.
"""

from __future__ import annotations

import socket
from typing import Final

SERVER_ERROR: Final = "server_error"
RATE_LIMIT: Final = "rate_limit"
AUTH: Final = "auth"
NOT_FOUND: Final = "not_found"
CLIENT_ERROR: Final = "client_error"
TIMEOUT: Final = "timeout"
CONNECTION: Final = "connection"
TOOL: Final = "tool"

KINDS: Final = frozenset({SERVER_ERROR, RATE_LIMIT, AUTH, NOT_FOUND, CLIENT_ERROR, TIMEOUT, CONNECTION, TOOL})
RETRYABLE_KINDS: Final = frozenset({SERVER_ERROR, RATE_LIMIT, TIMEOUT, CONNECTION})


def is_retryable(kind: str | None) -> bool:
    return kind in RETRYABLE_KINDS


def http_kind(status: int) -> str | None:
    """The kind of an HTTP response status; None for a success (1xx-3xx)."""
    if status >= 500:
        return SERVER_ERROR
    if status == 429:
        return RATE_LIMIT
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status == 408:
        return TIMEOUT
    if status >= 400:
        return CLIENT_ERROR
    return None


# SQLSTATE (PostgreSQL and compatible) -> kind; the first matching prefix wins.
_SQLSTATE_KINDS: Final = (
    ("57014", TIMEOUT),  # query_canceled: statement_timeout
    ("42501", AUTH),  # insufficient_privilege
    ("3D000", NOT_FOUND),  # invalid_catalog_name: the database does not exist
    ("08", CONNECTION),
    ("28", AUTH),
    ("40001", SERVER_ERROR),  # serialization_failure
    ("40P01", SERVER_ERROR),  # deadlock_detected
    ("55P03", SERVER_ERROR),  # lock_not_available
    ("53", SERVER_ERROR),  # insufficient resources (too many connections, disk full)
    ("57P", SERVER_ERROR),  # operator intervention (shutdown, cannot connect now)
    ("58", SERVER_ERROR),  # system error
    ("XX", SERVER_ERROR),  # internal error
)


def sqlstate_kind(sqlstate: str | None) -> str:
    """The kind of a database error by its SQLSTATE; errors in the SQL itself are `tool`."""
    if sqlstate:
        for prefix, kind in _SQLSTATE_KINDS:
            if sqlstate.startswith(prefix):
                return kind
    return TOOL


_AUTH_MARKERS: Final = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "authentication failed",
    "permission denied",
    "access denied",
)
_CONNECTION_MARKERS: Final = (
    "connection refused",
    "could not connect",
    "could not translate host name",
    "name or service not known",
    "temporary failure in name resolution",
    "connection reset",
    "network is unreachable",
    "server closed the connection",
)


def message_kind(text: str) -> str | None:
    """The kind a driver's error message names (auth, timeout, connection), else None."""
    low = text.lower()
    if any(marker in low for marker in _AUTH_MARKERS):
        return AUTH
    if "timeout expired" in low or "timed out" in low:
        return TIMEOUT
    if any(marker in low for marker in _CONNECTION_MARKERS):
        return CONNECTION
    return None


_TIMEOUT_NAMES: Final = ("timeout", "timedout")
_CONNECTION_NAMES: Final = ("connecterror", "connectionerror", "connectionrefused", "connectionreset")


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (requests/httpx `.response`, urllib `.code`, ...)."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status", "code"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
                return value
    return None


def classify_exception(exc: BaseException) -> str:
    """The kind of an exception raised by user code (explicit causes, `raise ... from e`, count too)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        status = _status_of(current)
        if status is not None:
            return http_kind(status) or TOOL
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:  # psycopg / psycopg2 database errors
            return sqlstate_kind(sqlstate)
        if isinstance(current, TimeoutError):
            return TIMEOUT
        if isinstance(current, (ConnectionError, socket.gaierror)):
            return CONNECTION
        names = [cls.__name__.lower() for cls in type(current).__mro__]
        if any(n.endswith(_TIMEOUT_NAMES) for n in names):
            return TIMEOUT
        if any(n.startswith(_CONNECTION_NAMES) or n.endswith(_CONNECTION_NAMES) for n in names):
            return CONNECTION
        if "operationalerror" in names:  # a DB-API driver that could not reach or log in to the server
            return message_kind(str(current)) or CONNECTION
        reason = getattr(current, "reason", None)  # urllib's URLError keeps the cause there
        current = reason if isinstance(reason, BaseException) else current.__cause__
    return TOOL
