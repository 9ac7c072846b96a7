"""Distributed figures for `make bench`: one server on PostgreSQL with NATS; one worker for the
sequential chains, two for the fan-outs and nested playbooks.

Uses the local PostgreSQL (a throwaway schema, dropped afterwards) and NATS; skipped with a
message when either is down.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

PG = "postgresql://postgres@127.0.0.1:5432/test"
NATS = "nats://127.0.0.1:4222"


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def run_distributed(
    chain: Callable[[int], str],
    fanout: Callable[[int], str],
    nested: Callable[[int], tuple[str, str]],
    noetl: list[str],
    repeat: int = 3,
    million: Callable[[int], str] | None = None,
    million_items: int = 0,
) -> dict[str, Any]:
    """Sequential chains with one worker, fan-outs and nested playbooks with two. Durations are
    the executions' own (first to last event in the log, written by the server), so the
    `noetl exec --wait` polling interval does not blur them; medians of `repeat` runs."""
    if not (_up(5432) and _up(4222)):
        print("distributed figures skipped: PostgreSQL (5432) and NATS (4222) must be running")
        return {}
    import psycopg

    schema = "noetl_bench_" + uuid.uuid4().hex[:8]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NOETL_LOG_LEVEL": "WARNING"}
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="noetl-dbench-") as tmp:
        work = Path(tmp)
        try:
            server = subprocess.Popen(
                [*noetl, "server", "start", "--port", str(port), "--store", f"{PG}?schema={schema}", "--bus", NATS],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            procs.append(server)
            deadline = time.monotonic() + 30
            while not _up(port):
                if time.monotonic() > deadline:
                    raise SystemExit("the benchmark server did not start")
                time.sleep(0.2)

            def start_worker(i: int) -> None:
                procs.append(subprocess.Popen(
                    [*noetl, "worker", "start", "--server", url, "--bus", NATS, "--concurrency", "16",
                     "--worker-id", f"bench-{i}"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
                time.sleep(1.5)  # registered and listening before the first run

            def register(text: str, name: str) -> None:
                path = work / f"{name}.yaml"
                path.write_text(text)
                subprocess.run([*noetl, "register", str(path), "--server", url], check=True, capture_output=True)

            def run(name: str) -> tuple[float, int]:
                """One execution: its duration in the log (s) and its id."""
                proc = subprocess.run(
                    [*noetl, "exec", f"bench/{name}", "--wait", "--json", "--server", url, "--timeout", "7200"],
                    capture_output=True, text=True,
                )
                if proc.returncode != 0 or json.loads(proc.stdout)["status"] != "COMPLETED":
                    raise SystemExit(f"distributed {name} failed: {proc.stdout} {proc.stderr}")
                execution_id = int(json.loads(proc.stdout)["execution_id"])
                with psycopg.connect(PG, autocommit=True) as conn:
                    row = conn.execute(
                        f"SELECT EXTRACT(EPOCH FROM max(created_at) - min(created_at)) FROM {schema}.event"
                        " WHERE execution_id = %s",
                        (execution_id,),
                    ).fetchone()
                return float(row[0] if row else 0.0), execution_id

            def median(name: str) -> tuple[float, int]:
                runs = sorted(run(name) for _ in range(repeat))
                return runs[len(runs) // 2]

            def growth(execution_id: int, steps: int) -> dict[str, float]:
                with psycopg.connect(PG, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT count(*), sum(coalesce(octet_length(context::text), 0)"
                        " + coalesce(octet_length(meta::text), 0) + coalesce(octet_length(result::text), 0))"
                        f" FROM {schema}.event WHERE execution_id = %s",
                        (execution_id,),
                    ).fetchone()
                count, size = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
                return {"events_per_step": round(count / steps, 2), "bytes_per_step": round(size / steps)}

            start_worker(0)  # sequential chains: one server, one worker
            for n in (1, 40, 400):
                register(chain(n).replace(f"bench/chain{n}", f"bench/dchain{n}"), f"dchain{n}")
            run("dchain1")  # warm-up: the server's caches, the worker's imports
            for n in (40, 400):
                # Each chain is paired with a 1-step run right before it (the machine's speed
                # drifts); the per-step figure is the median of the paired differences.
                pairs = []
                for _ in range(repeat):
                    base, _ = run("dchain1")
                    duration, execution_id = run(f"dchain{n}")
                    pairs.append((duration, base, execution_id))
                per_step = sorted((d - b) / (n - 1) * 1000 for d, b, _ in pairs)[len(pairs) // 2]
                duration, _, execution_id = sorted(pairs)[len(pairs) // 2]
                results[f"chain_{n}"] = {
                    "seconds": round(duration, 3),
                    "overhead_ms_per_step": round(per_step, 2),
                    **growth(execution_id, n),
                }

            start_worker(1)  # fan-outs and nested playbooks: two workers
            for n in (1000, 10000):
                register(fanout(n).replace(f"bench/fanout{n}", f"bench/dfanout{n}"), f"dfanout{n}")
                duration, _ = median(f"dfanout{n}") if n == 1000 else run(f"dfanout{n}")
                results[f"fanout_{n}"] = {"seconds": round(duration, 3), "items_per_second": round(n / duration)}
            results["fanout_ratio_10000_to_1000"] = round(
                results["fanout_10000"]["seconds"] / results["fanout_1000"]["seconds"], 2
            )
            results["server_peak_rss_mb"] = _peak_rss_mb(server.pid)

            parent, child = nested(100)
            register(child, "child")
            register(parent.replace("bench/nested100", "bench/dnested100"), "dnested100")
            duration, _ = median("dnested100")
            results["nested_100"] = {"seconds": round(duration, 3), "children_per_second": round(100 / duration, 1)}

            if million is not None and million_items:
                register(million(million_items).replace("bench/million", "bench/dmillion"), "dmillion")
                before = _peak_rss_mb(server.pid)
                duration, execution_id = run("dmillion")
                answer = subprocess.run(
                    [*noetl, "status", str(execution_id), "--json", "--server", url], capture_output=True, text=True
                )
                ordered = json.loads(answer.stdout).get("steps", {}).get("big", {}).get("result", {})
                if ordered.get("results") != list(range(million_items)):
                    raise SystemExit("the distributed million-item loop's results are not in order")
                with psycopg.connect(PG, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT sum(pg_column_size(e.*)) FROM " + schema + ".event e WHERE execution_id = %s",
                        (execution_id,),
                    ).fetchone()
                results["million"] = {
                    "items": million_items,
                    "wall_seconds": round(duration, 1),
                    "items_per_second": round(million_items / duration),
                    "server_peak_rss_mb": max(before, _peak_rss_mb(server.pid)),
                    "store_mb": round(int(row[0] or 0) / 1024 / 1024, 1) if row else 0.0,
                }
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return results
