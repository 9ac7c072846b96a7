"""JSON values for what SQL engines return: one rule set for the postgres and duckdb tools.

| SQL type | JSON value |
|---|---|
| timestamp (without time zone) | ISO 8601 text without offset: `"2024-01-02T03:04:05"` |
| timestamp with time zone | the instant in UTC, ISO 8601: `"2024-01-02T01:04:05+00:00"` |
| date / time / time with time zone | ISO 8601 text: `"2024-01-02"`, `"03:04:05"`, `"03:04:05+02:00"` |
| interval | seconds, as a number (months as the driver counts them: DuckDB 30 days, psycopg a year as 365) |
| numeric / decimal | an integer when integral, else a float; NaN and infinities are null |
| real / double | the number; NaN and infinities are null |
| integers (and integral decimals) beyond 64 bits | text, so no JSON reader rounds them |
| uuid, enum, inet, money, bit, range | text |
| bytea / blob | base64 text |
| json / jsonb | the parsed value (DuckDB's JSON text is parsed by the duckdb tool) |
| arrays / lists, struct, map | lists and objects of the values above |
| anonymous PostgreSQL records (`ROW(...)`) | a list of the fields as text |
| infinite dates and timestamps | PostgreSQL: `"infinity"` / `"-infinity"`; DuckDB gives the largest / smallest date |
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from noetl.tools.jsonsafe import to_jsonable

__all__ = ["sql_value"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def sql_value(value: Any) -> Any:
    """A JSON-safe copy of one value a database driver returned."""
    kind = type(value)
    if value is None or kind is str or kind is bool:
        return value
    if kind is int:
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        if value == value.to_integral_value():
            return sql_value(int(value))
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): sql_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [sql_value(item) for item in value]
    return to_jsonable(value)
