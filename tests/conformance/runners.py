"""How the conformance corpus is run, once per mode; the expectations live in `test_group_*.py`.

* `local`: `noetl run FILE --json` on a SQLite store of its own per run (a copy of a template
  that holds the PostgreSQL credentials the corpus names, added with `noetl credential add`);
  the event log through `noetl events --json`.
* `server`: one `noetl server start --with-worker` on PostgreSQL (a schema of its own), the corpus
  registered with `noetl register`, each run with `noetl exec --wait --json`; the event log
  through `GET /api/executions/{id}/events`.
* `distributed`: the same with 1 server (`NOETL_LEASE_SECONDS=3`) and 2 `noetl worker start`
  processes over NATS; marked `chaos`, so it runs under `make chaos`, not `make test`.

A runner outlives the tests of one mode (the `runner` fixture is package-scoped), so a cluster is
started once per mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from noetl.store import open_store
from tests.support.auth import AUTH
from tests.support.cli import CliResult, noetl, run_playbook
from tests.support.cli import events as cli_events
from tests.support.cluster import Cluster, ServerProcess, events_of, get_json

LOCAL = pytest.param("local", id="local")
SERVER = pytest.param("server", marks=[pytest.mark.postgres], id="server")
DISTRIBUTED = pytest.param(
    "distributed", marks=[pytest.mark.chaos, pytest.mark.postgres, pytest.mark.nats], id="distributed"
)
MODES = (LOCAL, SERVER, DISTRIBUTED)

GROUP_A_FILES = (
    "hello_world/hello_world.yaml",
    "test_args_passing.yaml",
    "test_end_with_action.yaml",
    "comprehensive_test.yaml",
    "control_flow_workbook/control_flow_workbook.yaml",
    "fanout_reduce/fanout_reduce_phase6.yaml",
    "loop_test.yaml",
    "test_loop_instance_isolation/playbook.yaml",
    "load_test/heavy_loop_aggregation/heavy_loop_aggregation.yaml",
    "vars_test/test_vars_api.yaml",
    "vars_test/test_transient.yaml",
    "duckdb_test.yaml",
    "retry_test/duckdb_retry_query.yaml",
    "playbook_composition/user_profile_scorer.yaml",  # also the child of P5
    "root_scripts/test_implicit_end_routing.yaml",
    "actions_test.yaml",
)
GROUP_P_FILES = (
    "retry_test/postgres_retry_connection.yaml",
    "iterator_save_test/iterator_save_test.yaml",
    "json_serialization_save/json_serialization_save.yaml",
    "data_transfer/postgres_jsonb_test/postgres_jsonb_test.yaml",
    "playbook_composition/playbook_composition.yaml",
    "save_storage_test/create_tables.yaml",  # the child of save_simple_test
    "save_storage_test/save_simple_test.yaml",
    "broken_sql.yaml",
)
GROUP_S_FILES = (
    "pagination/offset/test_pagination_offset.yaml",
    "pagination/basic/test_pagination_basic.yaml",
    "retry_test/retry_simple_config.yaml",
    "pagination/max_iterations/test_pagination_max_iterations.yaml",
    "pagination/pipeline/test_pipeline_simple.yaml",
    "pagination/retry/test_pagination_retry.yaml",
)
CORPUS_FILES = (*GROUP_A_FILES, *GROUP_P_FILES, *GROUP_S_FILES)


@dataclass
class Outcome:
    """One run: the CLI's exit code and the one JSON object it printed."""

    code: int
    body: dict[str, Any]
    stderr: str

    @property
    def execution_id(self) -> str:
        return str(self.body["execution_id"])

    @property
    def status(self) -> str:
        return str(self.body["status"])

    @property
    def error(self) -> Any:
        return self.body["error"]

    @property
    def results(self) -> dict[str, Any]:
        return {name: step["result"] for name, step in self.body["steps"].items()}

    @property
    def statuses(self) -> dict[str, str]:
        return {name: step["status"] for name, step in self.body["steps"].items()}


@dataclass(frozen=True)
class Child:
    execution_id: str
    path: str | None
    status: str


def catalog_path(file: Path) -> str:
    return str(yaml.safe_load(file.read_text(encoding="utf-8"))["metadata"]["path"])


def one_json_object(file: str, result: CliResult, details: str = "") -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, (
        f"{file}: expected one JSON object on stdout (exit {result.code}):\n{result.stdout}\n"
        f"{result.stderr[-3000:]}\n{details}"
    )
    body: dict[str, Any] = json.loads(lines[0])
    assert "steps" in body, f"{file}: no steps in {body}"
    return body


class Runner(ABC):
    """What every mode offers the expectations."""

    mode: str = ""

    def __init__(self, corpus: Path) -> None:
        self.corpus = corpus
        self.runs: list[str] = []  # every execution id this runner started or listed as a child
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ to implement per mode

    @abstractmethod
    def _run(self, file: str, *extra: str) -> Outcome: ...

    @abstractmethod
    def events(self, execution_id: str | int) -> list[dict[str, Any]]:
        """The event log of one execution, oldest first."""
        ...

    @abstractmethod
    def _children(self, execution_id: str) -> list[Child]: ...

    @abstractmethod
    def reject(self, file: str) -> CliResult:
        """Hand an invalid playbook to the mode's front door (run locally, register on a server)."""
        ...

    @abstractmethod
    def traces_of(self, file: str) -> list[str]:
        """What a rejected playbook left behind (an execution, a catalog entry); [] when nothing."""
        ...

    @abstractmethod
    def same_id(self, value: Any, execution_id: str) -> bool:
        """Whether an id field of an event names `execution_id` (as this mode's JSON writes ids)."""
        ...

    def logs(self) -> str:
        """The servers' and workers' logs, for failure messages ('' for local runs)."""
        return ""

    # ------------------------------------------------------------------ shared

    def run(self, file: str, *extra: str) -> Outcome:
        """Run one corpus file (extra CLI arguments such as `--set k=v`)."""
        outcome = self._run(file, *extra)
        with self._lock:
            self.runs.append(outcome.execution_id)
        return outcome

    def run_ok(self, file: str, *extra: str) -> Outcome:
        return self.check_ok(file, self.run(file, *extra))

    def check_ok(self, file: str, outcome: Outcome) -> Outcome:
        context = f"{file} [{self.mode}] exited {outcome.code}:\n{outcome.body}\n{outcome.stderr[-3000:]}"
        assert outcome.code == 0, f"{context}\n{self.logs()}"
        assert outcome.status == "COMPLETED", f"{context}\n{self.logs()}"
        assert outcome.error is None
        return outcome

    def children(self, execution_id: str) -> list[Child]:
        """The executions started by `execution_id` (nested playbooks)."""
        found = self._children(execution_id)
        with self._lock:
            self.runs.extend(child.execution_id for child in found)
        return found

    def commands_run_twice(self, execution_id: str) -> list[str]:
        """Commands of the execution a worker ran more than once: two `command.started` in the log,
        or (on a server) a late run whose events the server ignored ("not open", logged at INFO)."""
        started = Counter(
            str((e.get("meta") or {}).get("command_id"))
            for e in self.events(execution_id)
            if e["event_type"] == "command.started"
        )
        found = {command_id for command_id, n in started.items() if n > 1}
        pattern = rf"ignoring command\.started for a command that is not open command_id=({execution_id}:\S+)"
        found.update(re.findall(pattern, self.logs()))
        return sorted(found)

    @contextlib.contextmanager
    def side_effects(self, outcome: Outcome) -> Iterator[None]:
        """Wraps assertions on what an outside system (the stub API) received. When they fail
        because a command ran twice, the failure names the commands."""
        try:
            yield
        except AssertionError:
            deadline = time.monotonic() + 5  # an extra run's events may still be on their way
            while True:
                twice = self.commands_run_twice(outcome.execution_id)
                if twice or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            if twice:
                raise AssertionError(f"a worker ran these commands twice: {twice}") from None
            raise


class LocalRunner(Runner):
    mode = "local"

    def __init__(self, corpus: Path, tmp: Path, template: Path, env: dict[str, str]) -> None:
        super().__init__(corpus)
        self.tmp = tmp
        self.template = template  # a store holding the credentials; each run gets a copy
        self.env = env
        self._stores: dict[str, str] = {}  # execution id -> its store URL
        self._count = 0
        self._rejected = ""  # the store the last `reject` used

    def fresh_store(self) -> str:
        with self._lock:
            self._count += 1
            target = self.tmp / f"run-{self._count}.db"
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.template}{suffix}")
            if source.exists():
                shutil.copyfile(source, f"{target}{suffix}")
        return f"sqlite:///{target}"

    def _run(self, file: str, *extra: str) -> Outcome:
        store = self.fresh_store()
        result = run_playbook(self.corpus / file, store, *extra, env=self.env)
        outcome = Outcome(result.code, one_json_object(file, result), result.stderr)
        with self._lock:
            self._stores[outcome.execution_id] = store
        return outcome

    def _store_of(self, execution_id: str | int) -> str:
        with self._lock:
            return self._stores[str(execution_id)]

    def events(self, execution_id: str | int) -> list[dict[str, Any]]:
        return cli_events(str(execution_id), self._store_of(execution_id))

    def _children(self, execution_id: str) -> list[Child]:
        url = self._store_of(execution_id)
        store = open_store(url)
        try:
            found = store.executions(parent_execution_id=int(execution_id), limit=100)
        finally:
            store.close()
        children = [Child(str(c.execution_id), c.path, c.status) for c in found]
        with self._lock:
            self._stores.update((c.execution_id, url) for c in children)
        return children

    def reject(self, file: str) -> CliResult:
        store = self.fresh_store()
        self._rejected = store
        return run_playbook(self.corpus / file, store, env=self.env)

    def traces_of(self, file: str) -> list[str]:
        store = open_store(self._rejected)
        try:
            runs = [f"execution {e.execution_id} ({e.status})" for e in store.executions()]
            entries = [f"catalog entry {e.path} v{e.version}" for e in store.entries()]
        finally:
            store.close()
        return runs + entries

    def same_id(self, value: Any, execution_id: str) -> bool:
        return bool(value == int(execution_id))  # `noetl events --json` writes ids as numbers


class ServerRunner(Runner):
    """A server on PostgreSQL with either its in-process worker or remote workers over NATS."""

    def __init__(
        self,
        mode: str,
        corpus: Path,
        cluster: Cluster,
        server: ServerProcess,
        *,
        dsn: str,
        schema: str,
        timeout: float,
        workers: tuple[str, ...] = (),
    ) -> None:
        super().__init__(corpus)
        self.mode = mode
        self.cluster = cluster
        self.server = server
        self.dsn = dsn
        self.schema = schema
        self.timeout = timeout
        self.workers = workers
        self.paths: dict[str, str] = {}  # corpus file -> catalog path

    def register(self, file: str) -> None:
        """`noetl register` one corpus file (its catalog path is then `self.paths[file]`)."""
        result = self.cli("register", self.corpus / file, "--json")
        assert result.code == 0, f"register {file} exited {result.code}:\n{result.stderr}\n{self.logs()}"
        answer = json.loads(result.stdout)
        assert answer["path"] == catalog_path(self.corpus / file), answer
        with self._lock:
            self.paths[file] = str(answer["path"])

    def cli(self, *args: str | Path, timeout: float = 120) -> CliResult:
        return noetl(*args, "--server", self.server.url, timeout=timeout)

    def _run(self, file: str, *extra: str) -> Outcome:
        result = self.cli(
            "exec", self.paths[file], "--wait", "--json", "--timeout", f"{self.timeout:g}", *extra,
            timeout=self.timeout + 60,
        )  # fmt: skip
        return Outcome(result.code, one_json_object(file, result, self.logs()), result.stderr)

    def events(self, execution_id: str | int) -> list[dict[str, Any]]:
        return events_of(self.server.url, execution_id)

    def _children(self, execution_id: str) -> list[Child]:
        rows = get_json(self.server.url, "/api/executions", parent_execution_id=execution_id, limit=100)
        return [Child(str(r["execution_id"]), r.get("path"), str(r["status"])) for r in rows]

    def reject(self, file: str) -> CliResult:
        return self.cli("register", self.corpus / file)

    def traces_of(self, file: str) -> list[str]:
        path = catalog_path(self.corpus / file)
        response = httpx.post(
            self.server.url + "/api/catalog/resource", json={"path": path}, headers=AUTH, timeout=10
        )
        if response.status_code == 404:
            return []
        assert response.status_code == 200, f"catalog resource {path}: {response.status_code} {response.text}"
        return [f"catalog entry {path} v{response.json().get('version')}"]

    def same_id(self, value: Any, execution_id: str) -> bool:
        return value is not None and int(value) == int(execution_id)

    def logs(self) -> str:
        return self.cluster.logs()
