"""The options every command spells the same way (typer types)."""

from __future__ import annotations

from typing import Annotated

import typer

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store URL (sqlite:///file.db, postgresql://...); default: NOETL_STORE_URL or a file in the user data dir.",
    ),
]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", help="Server URL; default: NOETL_SERVER_URL or http://localhost:8082."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object.")]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR; default: NOETL_LOG_LEVEL.")
]
