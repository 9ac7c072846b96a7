"""`kind: transfer`: copy rows from a source to a target table in chunks.

    tool:
      kind: transfer
      source:                       # type (alias kind, tool): postgres | duckdb | http
        type: postgres
        auth: pg_local              # postgres: a credential or `connection`; duckdb: `database`
        query: SELECT id, name FROM src
      # source: {type: http, url: ..., method: GET, headers: {...}, data_path: data.items}
      target:                       # type: postgres | duckdb
        type: postgres
        auth: pg_local
        table: public.dst           # or `query`: an INSERT with one placeholder per column
        mapping: {dst_col: source_field}   # optional; dotted paths reach into JSON records
        key: [id]                   # upsert conflict columns (default: the primary key)
      mode: append                  # append | replace (empty the table first) | upsert
      chunk_size: 1000

Rows are read and written `chunk_size` at a time (a PostgreSQL source streams through a
server-side cursor), all in one target transaction: a failure leaves the target as it was.
Without `mapping` the target columns are the source's (for HTTP, the keys of the records).

Result data: `{rows_transferred, chunks_processed, target_table, columns, mode, source_type,
target_type, direction}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from noetl.errors import CredentialError
from noetl.secrets import masker
from noetl.tools import failure
from noetl.tools.base import ToolContext, ToolResult, elapsed_ms, failed, timeout_seconds
from noetl.tools.transfer_sources import SOURCE_TYPES, SourceError, pick_path, reader_for
from noetl.tools.transfer_targets import MODES, TARGET_TYPES, TargetError, writer_for

__all__ = ["TransferTool"]

DEFAULT_CHUNK_SIZE = 1000
_MODE_ALIASES = {"insert": "append", "truncate": "replace", "overwrite": "replace", "merge": "upsert"}


class TransferConfigError(Exception):
    pass


def _section(config: Mapping[str, Any], name: str, kinds: tuple[str, ...]) -> tuple[str, Mapping[str, Any]]:
    section = config.get(name)
    if not isinstance(section, Mapping):
        raise TransferConfigError(f"'{name}' is required: a mapping with type ({' | '.join(kinds)})")
    kind = str(section.get("type") or section.get("kind") or section.get("tool") or "").lower()
    kind = {"postgresql": "postgres", "pg": "postgres", "https": "http"}.get(kind, kind)
    if kind not in kinds:
        raise TransferConfigError(
            f"{name}.type must be one of {', '.join(kinds)} (got {kind or 'nothing'!r})"
        )
    return kind, section


def _mode(config: Mapping[str, Any]) -> str:
    mode = str(config.get("mode") or "append").lower()
    mode = _MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise TransferConfigError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    return mode


def _chunk_size(config: Mapping[str, Any]) -> int:
    raw = config.get("chunk_size", config.get("batch_size", DEFAULT_CHUNK_SIZE))
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise TransferConfigError(f"chunk_size must be a positive integer (got {raw!r})") from None
    if size < 1:
        raise TransferConfigError(f"chunk_size must be a positive integer (got {raw!r})")
    return size


def _mapping(target: Mapping[str, Any]) -> dict[str, str] | None:
    mapping = target.get("mapping") or target.get("columns_mapping")
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping) or not mapping:
        raise TransferConfigError("target.mapping must be a map {target_column: source_field}")
    return {str(k): str(v) for k, v in mapping.items()}


class TransferTool:
    kind = "transfer"

    async def run(self, config: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()
        limit = timeout_seconds(config, ctx)
        try:
            work = self._transfer(config, ctx)
            result = await (work if limit is None else asyncio.wait_for(work, limit))
        except TimeoutError:
            result = failed(failure.TIMEOUT, f"transfer timed out after {limit:g} s (rolled back)")
        except (TransferConfigError, ValueError, CredentialError) as exc:
            result = failed(failure.TOOL, f"transfer: {exc}")
        except (SourceError, TargetError) as exc:
            result = failed(exc.kind, f"transfer: {exc}")
        except Exception as exc:  # a driver error while writing, or a bug: report, never raise
            result = failed(_write_kind(exc), f"transfer: {type(exc).__name__}: {_first_line(exc)}")
        if result.error:
            result.error = masker.mask_text(result.error)
        result.duration_ms = elapsed_ms(started)
        return result

    async def _transfer(self, config: Mapping[str, Any], ctx: ToolContext) -> ToolResult:
        source_type, source = _section(config, "source", SOURCE_TYPES)
        target_type, target = _section(config, "target", TARGET_TYPES)
        mode = _mode(config)
        size = _chunk_size(config)
        mapping = _mapping(target)
        table = str(target.get("table") or target.get("table_name") or "")
        if not table and not target.get("query"):
            raise TransferConfigError("target.table is required (or target.query, an INSERT statement)")
        reader = reader_for(source_type, source, ctx)
        writer = writer_for(target_type, target, ctx, table)
        rows_done = chunks = 0
        columns: list[str] = list(mapping) if mapping else []
        opened = False
        ok = False
        try:
            async with contextlib.aclosing(reader.chunks(size)) as stream:
                async for chunk in stream:
                    if not opened:
                        columns = list(mapping) if mapping else list(reader.columns)
                        if not columns:
                            raise TransferConfigError("the source returned rows without columns")
                        await writer.open(columns, mode)
                        opened = True
                    values = [_values(row, columns, mapping) for row in chunk]
                    try:
                        await writer.write(values)
                    except (TargetError, TransferConfigError):
                        raise
                    except Exception as exc:
                        raise TargetError(
                            f"writing chunk {chunks + 1} (rows {rows_done + 1}-{rows_done + len(values)}) "
                            f"failed: {_first_line(exc)}; nothing was written",
                            _write_kind(exc),
                        ) from None
                    rows_done += len(values)
                    chunks += 1
            if not opened:  # an empty source still empties the target in replace mode
                columns = list(mapping) if mapping else list(reader.columns)
                await writer.open(columns, mode)
                opened = True
            ok = True
        finally:
            if opened:
                await writer.finish(ok)
        data = {
            "rows_transferred": rows_done,
            "chunks_processed": chunks,
            "target_table": table or None,
            "columns": columns,
            "mode": mode,
            "source_type": source_type,
            "target_type": target_type,
            "direction": f"{source_type}_to_{target_type}",
        }
        return ToolResult(status="success", data=data)


def _values(row: Mapping[str, Any], columns: list[str], mapping: Mapping[str, str] | None) -> list[Any]:
    if mapping is None:
        return [row.get(column) for column in columns]
    return [row[field] if field in row else pick_path(row, field) for field in mapping.values()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write_kind(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return failure.sqlstate_kind(sqlstate)
    return failure.message_kind(str(exc)) or failure.TOOL
