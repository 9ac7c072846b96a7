"""Servers and workers for the distributed benchmarks, isolated from anything else on the same
PostgreSQL and NATS: a schema of their own (dropped at the end), a command pool of their own
(its JetStream consumer deleted at the end) and an API token of their own.

Execution durations are read from the execution's own event log (first to last event, written
by the server), so how soon the benchmark notices the end does not blur them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from config import NATS, PG
from local import NOETL, peak_rss_mb

from noetl.client import ServerClient

TERMINAL = ("playbook.completed", "playbook.failed", "playbook.cancelled")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchCluster:
    def __init__(self, work: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.work = work
        self.schema = f"noetl_bench_{tag}"
        self.pool = f"bench_{tag}"
        self.token = f"noetl_bench-{tag}-{uuid.uuid4().hex}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NOETL_")},
            "NOETL_LOG_LEVEL": "WARNING",
            "NOETL_API_TOKEN": self.token,
        }
        self.servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.db = psycopg.connect(PG, autocommit=True)

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("ab")
        return subprocess.Popen(
            [*NOETL, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.work
        )

    def _tail(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def client(self, url: str) -> ServerClient:
        return ServerClient(url, token=self.token, timeout=60)

    def start_server(self, name: str) -> str:
        port = free_port()
        store = f"{PG}?schema={self.schema}"
        args = [
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            store,
            "--bus",
            NATS,
        ]
        proc = self._spawn(name, args)
        url = f"http://127.0.0.1:{port}"
        self.servers[name] = (proc, url)
        deadline = time.monotonic() + 60
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"benchmark server {name} did not start:\n{self._tail(name)}")
            time.sleep(0.2)
        return url

    def start_worker(self, worker_id: str, server_url: str) -> None:
        args = ["worker", "start", "--server", server_url, "--bus", NATS, "--pool", self.pool,
                "--concurrency", "16", "--worker-id", worker_id]  # fmt: skip
        self.workers[worker_id] = proc = self._spawn(worker_id, args)
        deadline = time.monotonic() + 60
        auth = {"authorization": f"Bearer {self.token}"}
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                rows = httpx.get(server_url + "/api/worker/pools", headers=auth, timeout=5).json()
                if any(row.get("name") == worker_id for row in rows):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"benchmark worker {worker_id} did not register:\n{self._tail(worker_id)}")
            time.sleep(0.2)
        time.sleep(0.5)  # its bus subscription open before the first command

    def stop_worker(self, worker_id: str) -> None:
        proc = self.workers.pop(worker_id)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

    def server_peak_rss_mb(self, name: str) -> float:
        return peak_rss_mb(self.servers[name][0].pid)

    def register(self, url: str, text: str) -> None:
        with self.client(url) as client:
            client.register(text)

    def start(self, url: str, path: str) -> int:
        with self.client(url) as client:
            return int(client.execute(path, execution_pool=self.pool)["execution_id"])

    def wait(self, execution_ids: list[int], timeout: float = 7200) -> None:
        """Until each execution has ended; SystemExit unless each COMPLETED, TimeoutError past
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.db.execute(
                f"SELECT execution_id, event_type FROM {self.schema}.event"
                " WHERE execution_id = ANY(%s) AND event_type = ANY(%s)",
                (execution_ids, list(TERMINAL)),
            ).fetchall()
            if len(rows) >= len(execution_ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"executions {execution_ids} did not end in {timeout} s")
            time.sleep(0.1)
        failed = [row for row in rows if row[1] != "playbook.completed"]
        if failed:
            raise SystemExit(f"benchmark executions did not complete: {failed}")

    def bounded(self, starts: list[tuple[str, str]], budget: float) -> dict[str, Any]:
        """Start an execution of `path` on each (server url, path) at once and wait up to `budget`
        seconds: {seconds, items (completed loop iterations), finished}. Past the budget the
        executions are cancelled and the figure is the iterations completed by then."""
        ids = [self.start(url, path) for url, path in starts]
        try:
            self.wait(ids, timeout=budget)
            finished = True
        except TimeoutError:
            finished = False
            for (url, _), execution_id in zip(starts, ids, strict=True):
                with contextlib.suppress(Exception), self.client(url) as client:
                    client.cancel(execution_id, reason="benchmark time budget")
        done = self.db.execute(
            f"SELECT count(*) FROM {self.schema}.event WHERE execution_id = ANY(%s)"
            " AND event_type = 'command.completed' AND meta ? 'iteration_index'",
            (ids,),
        ).fetchone()
        return {"seconds": self.span(ids), "items": int(done[0]) if done else 0, "finished": finished}

    def span(self, execution_ids: list[int]) -> float:
        """Seconds from the first event of these executions to the last, in their log."""
        row = self.db.execute(
            f"SELECT EXTRACT(EPOCH FROM max(created_at) - min(created_at)) FROM {self.schema}.event"
            " WHERE execution_id = ANY(%s)",
            (execution_ids,),
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    def run(self, url: str, path: str) -> tuple[float, int]:
        """One execution to its end: (its duration in the log, its id)."""
        execution_id = self.start(url, path)
        self.wait([execution_id])
        return self.span([execution_id]), execution_id

    def growth(self, execution_id: int, steps: int) -> dict[str, float]:
        row = self.db.execute(
            "SELECT count(*), sum(coalesce(octet_length(context::text), 0)"
            " + coalesce(octet_length(meta::text), 0) + coalesce(octet_length(result::text), 0))"
            f" FROM {self.schema}.event WHERE execution_id = %s",
            (execution_id,),
        ).fetchone()
        count, size = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
        return {"events_per_step": round(count / steps, 2), "bytes_per_step": round(size / steps)}

    def query(self, sql: str, *args: Any) -> Any:
        return self.db.execute(sql.replace("{schema}", self.schema), args).fetchall()

    def close(self) -> None:
        """Workers first, then servers; then the schema and the pool's JetStream consumer."""
        for group in (list(self.workers.values()), [proc for proc, _ in self.servers.values()]):
            for proc in group:
                proc.terminate()
            for proc in group:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.workers.clear()
        self.servers.clear()
        with contextlib.suppress(Exception):
            self.db.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.db.close()
        with contextlib.suppress(Exception):
            asyncio.run(self._drop_consumer())

    async def _drop_consumer(self) -> None:
        import nats

        from noetl.bus.ports import DEFAULT_DURABLE, DEFAULT_STREAM

        client = await nats.connect(NATS, connect_timeout=5, max_reconnect_attempts=0)
        try:
            with contextlib.suppress(Exception):
                await client.jetstream().delete_consumer(
                    DEFAULT_STREAM, DEFAULT_DURABLE.replace("{pool}", self.pool)
                )
        finally:
            await client.close()
