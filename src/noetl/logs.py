"""Structured logging: one line per record, `key=value` extras, secret values masked."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from noetl.logcontext import RunContextFilter
from noetl.secrets import secrets

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class StructuredFormatter(logging.Formatter):
    """`2026-11-23T14:00:00Z WARNING noetl.engine message key=value ...`, or JSON lines."""

    def __init__(self, *, as_json: bool = False) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + "Z"
        if self.as_json:
            line = json.dumps(
                {
                    "time": stamp,
                    "level": record.levelname,
                    "logger": record.name,
                    "message": message,
                    **extras,
                },
                default=str,
            )
        else:
            tail = " ".join(f"{k}={_text(v)}" for k, v in extras.items())
            line = f"{stamp} {record.levelname} {record.name} {message}" + (f" {tail}" if tail else "")
        return secrets.everything.mask_text(line)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if " " in text else text


def setup(level: str = "WARNING", *, as_json: bool = False) -> None:
    """Configure the root logger: records at `level` and above go to stderr, as text or JSON
    lines. The CLI passes the flag, NOETL_LOG_LEVEL or its default, and NOETL_LOG_FORMAT."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter(as_json=as_json))
    handler.addFilter(RunContextFilter())  # execution_id, step, command_id of a run's lines
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
