"""Finding 8: a property-based fuzz run over the OpenAPI document (3,599 cases) found 33 distinct
failures: 500s, status codes the document did not list, and request bodies typed as `Any`, so
valid requests were rejected and invalid ones accepted.

Now a bounded schemathesis run (every operation, FUZZ_EXAMPLES cases each, in the coverage,
fuzzing and stateful phases) against a real server with a token finds no failure: no 5xx, no
undocumented status code, no answer that violates its schema, no schema-violating request
accepted, auth enforced. Not checked: `positive_data_acceptance` (a schema-valid body the server
refuses on meaning: YAML that is no playbook, a path that names nothing, which no schema says).

The server holds real data first (a finished run, a running one with a pending command, a
credential, a token), and the fuzzer draws path ids and names from it half of the time, so the
answers about real executions and commands are checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.security.helpers import (
    claim,
    execute,
    http,
    ok,
    outcome,
    pending_of,
    register,
    report,
    wait_end,
)
from tests.support.auth import TEST_TOKEN
from tests.support.cluster import Cluster

FUZZ_EXAMPLES = 40  # cases per operation and phase: under a minute in all
SEED = 20261203  # fixed: a failure is reproducible with `--seed`


def _seed(url: str) -> dict[str, list[str] | list[int]]:
    with http(url) as client:
        register(client)
        done = execute(client)
        for _ in range(2):
            command = pending_of(client, done)
            ok(claim(client, command, "seed-worker"))
            ok(report(client, command, "seed-worker", outcome(command, {"seeded": True})))
        assert wait_end(client, done, timeout=10)["status"] == "COMPLETED"
        running = execute(client)
        command = pending_of(client, running)
        ok(
            client.post(
                "/api/credentials",
                json={"name": "svc", "type": "basic", "data": {"username": "u", "password": "p4ss"}},
            )
        )
        client.post("/api/tokens", json={"name": "reader", "scope": "read"})  # (no such route before)
        ok(client.post("/api/worker/pool/register", json={"name": "seed-worker"}))
    return {
        "executions": [int(done), int(running)],  # path ids are integers in the schema
        "commands": [int(command["event_id"])],
        "names": ["svc", "reader"],
    }


def _config(path: Path, data: dict[str, list[str] | list[int]]) -> Path:
    lines = []
    for name, values in data.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines += [
        "[parameters]",
        '"path.execution_id" = { dictionary = "executions", probability = 0.5 }',
        '"path.event_id" = { dictionary = "commands", probability = 0.5 }',
        '"path.name" = { dictionary = "names", probability = 0.5 }',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fuzzing_the_openapi_finds_no_failure(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.start_server("server").url
    config = _config(tmp_path / "schemathesis.toml", _seed(url))
    report_path = tmp_path / "fuzz.json"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(config),
        "run", f"{url}/openapi.json",
        "--header", f"Authorization: Bearer {TEST_TOKEN}",
        "--max-examples", str(FUZZ_EXAMPLES),
        "--seed", str(SEED),
        "--phases", "coverage,fuzzing,stateful",
        "--checks", "all",
        "--exclude-checks", "positive_data_acceptance",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--report", "json",
        "--report-json-path", str(report_path),
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = run.stdout[-6000:]
    assert run.returncode == 0, f"{summary}\n{run.stderr[-2000:]}\n{cluster.logs()}"
    figures = json.loads(report_path.read_text())
    cases = figures["test_cases"]
    print(
        f"fuzz: {figures['operations']['tested']} operations, {cases['generated']} cases, "
        f"{cases['unique_failures']} failures, {cases['errored']} errors "
        f"in {figures['running_time']:.0f}s (seed {SEED})"
    )
    assert figures["operations"]["tested"] == figures["operations"]["total"] >= 30
    assert cases["generated"] >= 30 * FUZZ_EXAMPLES
    assert (cases["with_failures"], cases["unique_failures"], cases["errored"]) == (0, 0, 0), figures[
        "failures"
    ]
