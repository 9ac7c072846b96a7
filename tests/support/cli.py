"""Run the real `noetl` command line in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def noetl(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "noetl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def run_playbook(path: Path, store: str, *extra: str, env: dict[str, str] | None = None) -> CliResult:
    return noetl("run", path, "--json", "--quiet", "--store", store, *extra, env=env)


def events(execution_id: str, store: str) -> list[dict[str, Any]]:
    result = noetl("events", execution_id, "--store", store, "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, list)
    return data
