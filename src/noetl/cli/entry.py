"""The `noetl` command's entry point. `noetl run FILE [options]` takes a fast path that imports
neither typer nor rich (a 1-step run is mostly start-up); anything else, or a `run` whose
arguments the fast path does not recognise (`--help`, a typo, a bad value), goes to the full
command line, which parses and reports it as always."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn


class _Unrecognised(Exception):
    """The fast path leaves these arguments to the full command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Unrecognised(message)


def _parser() -> _Parser:
    parser = _Parser(prog="noetl run", add_help=False, allow_abbrev=False)
    parser.add_argument("file")
    parser.add_argument("--set", dest="assignments", action="append", default=[])
    parser.add_argument("--payload")
    parser.add_argument("--store")
    parser.add_argument("--json", dest="as_json", action="store_true")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--log-level")
    return parser


def _fast_run(args: list[str]) -> int | None:
    """The exit code of a fast `noetl run`, or None to leave the arguments to typer."""
    if any(arg in ("--help", "-h") for arg in args):
        return None
    try:
        parsed = _parser().parse_args(args)
    except _Unrecognised:
        return None
    if parsed.concurrency < 1:
        return None  # typer names the bad value
    from noetl.cli.local import run_local

    return run_local(
        Path(parsed.file),
        parsed.assignments,
        parsed.payload,
        parsed.store,
        as_json=parsed.as_json,
        concurrency=parsed.concurrency,
        quiet=parsed.quiet,
        strict=parsed.strict,
        log_level=parsed.log_level,
    )


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        code = _fast_run(args[1:])
        if code is not None:
            sys.exit(code)
    from noetl.cli.main import main as full

    full()
