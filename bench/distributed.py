"""Distributed figures for `make bench`: one server on PostgreSQL with NATS, two workers.

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


def run_distributed(chain: Callable[[int], str], fanout: Callable[[int], str], noetl: list[str]) -> dict[str, Any]:
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
            for i in range(2):
                procs.append(subprocess.Popen(
                    [*noetl, "worker", "start", "--server", url, "--bus", NATS, "--concurrency", "16",
                     "--worker-id", f"bench-{i}"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))

            def run(text: str, name: str) -> float:
                path = work / f"{name}.yaml"
                path.write_text(text)
                subprocess.run([*noetl, "register", str(path), "--server", url], check=True, capture_output=True)
                begin = time.perf_counter()
                proc = subprocess.run(
                    [*noetl, "exec", f"bench/{name}", "--wait", "--json", "--server", url, "--timeout", "900"],
                    capture_output=True, text=True,
                )
                wall = time.perf_counter() - begin
                if proc.returncode != 0 or json.loads(proc.stdout)["status"] != "COMPLETED":
                    raise SystemExit(f"distributed {name} failed: {proc.stdout} {proc.stderr}")
                return wall

            one = run(chain(1).replace("bench/chain1", "bench/dchain1"), "dchain1")
            for n in (40, 400):
                wall = run(chain(n).replace(f"bench/chain{n}", f"bench/dchain{n}"), f"dchain{n}")
                results[f"chain_{n}"] = {"wall_seconds": round(wall, 3),
                                         "overhead_ms_per_step": round((wall - one) / n * 1000, 2)}
            for n in (1000, 10000):
                wall = run(fanout(n).replace(f"bench/fanout{n}", f"bench/dfanout{n}"), f"dfanout{n}")
                results[f"fanout_{n}"] = {"wall_seconds": round(wall, 3), "items_per_second": round(n / wall)}
            results["fanout_ratio_10000_to_1000"] = round(
                results["fanout_10000"]["wall_seconds"] / results["fanout_1000"]["wall_seconds"], 2
            )
            results["server_peak_rss_mb"] = _peak_rss_mb(server.pid)
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
