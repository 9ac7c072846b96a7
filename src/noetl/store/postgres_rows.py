"""Rows of the PostgreSQL store: events, executions, catalog entries and tokens to and from
their columns, and the connection settings every pooled connection gets."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from noetl.engine.events import COLUMNS, Event
from noetl.errors import StoreError
from noetl.store.codec import dump_json, row_event, utc_ms
from noetl.store.ports import CatalogEntry, ExecutionSummary, TokenRecord

Connection = psycopg.Connection[TupleRow]
TOKEN_COLUMNS = "name, scope, token_hash, created_at, revoked_at"


def configure(conn: Connection) -> None:
    """Every connection reads and writes timestamps in UTC."""
    conn.execute("SET TIME ZONE 'UTC'")


def as_is(text: Any) -> str:
    return str(text)


def jsonb(value: Any, event: Event) -> Jsonb | None:
    """`value` as JSONB, encoded here (compact, non-ASCII kept) so errors name the event."""
    try:
        text = dump_json(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"event {event.event_id} ({event.event_type}) holds a value that is not JSON: {exc}"
        ) from exc
    return None if text is None else Jsonb(escape_nul(text), dumps=as_is)


_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def escape_nul(text: str) -> str:
    """JSON text with every NUL character (`\\u0000`, which PostgreSQL's jsonb refuses) written
    as the six characters `\\u0000`: the value is stored, escaped, instead of being lost."""
    return _NUL.sub(r"\1\\\\u0000", text) if "\\u0000" in text else text


def text_value(value: Any) -> Any:
    """A text column's value; NUL characters (which PostgreSQL's text refuses) escaped."""
    return value.replace("\x00", "\\u0000") if isinstance(value, str) and "\x00" in value else value


def events_document(events: Sequence[Event]) -> str | None:
    """The events as one JSON array of rows (column name -> value), or None when orjson
    refuses a value (integers beyond 64 bits, non-JSON values): the row-by-row path then
    stores them or names the offending event."""
    rows = [
        {**{column: getattr(e, column) for column in COLUMNS}, "created_at": utc_ms(e.created_at)}
        for e in events
    ]
    try:
        return escape_nul(orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode())
    except TypeError:
        return None


def event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.event_id,
        event.execution_id,
        event.parent_event_id,
        event.parent_execution_id,
        event.catalog_id,
        text_value(event.event_type),
        text_value(event.node_id),
        text_value(event.node_name),
        text_value(event.node_type),
        text_value(event.status),
        jsonb(event.context, event),
        jsonb(event.meta, event),
        jsonb(event.result, event),
        text_value(event.worker_id),
        utc_ms(event.created_at),
    )


def event_of(row: tuple[Any, ...]) -> Event:
    """psycopg returns JSONB as Python values and TIMESTAMPTZ as datetimes."""
    return row_event(row, load=as_value, when=utc)


def as_value(value: Any) -> Any:
    return value


def execution_of(row: tuple[Any, ...]) -> ExecutionSummary:
    execution_id, path, catalog_id, status, started_at, completed_at, parent_execution_id, error = row
    return ExecutionSummary(
        execution_id=execution_id,
        path=path,
        catalog_id=catalog_id,
        status=status,
        started_at=utc(started_at),
        completed_at=None if completed_at is None else utc(completed_at),
        parent_execution_id=parent_execution_id,
        error=error,
    )


def token_of(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        name=row[0],
        scope=row[1],
        token_hash=row[2],
        created_at=utc(row[3]),
        revoked_at=utc(row[4]) if row[4] else None,
    )


def catalog_entry_of(row: tuple[Any, ...]) -> CatalogEntry:
    catalog_id, path, version, kind, content, created_at, meta = row
    return CatalogEntry(
        catalog_id=catalog_id,
        path=path,
        version=version,
        kind=kind,
        content=content,
        created_at=utc(created_at),
        meta=meta or {},
    )


def utc(moment: datetime) -> datetime:
    """A TIMESTAMPTZ value with `datetime.UTC` as its zone (psycopg gives the session's zone)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
