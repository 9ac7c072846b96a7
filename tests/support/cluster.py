"""Real `noetl server start` / `noetl worker start` subprocesses for distributed tests, and control
of the local NATS server (stop it for an outage, start it again).

    with Cluster(tmp_path, store_url, bus_url="nats://127.0.0.1:4222") as cluster:
        server = cluster.start_server("s1", env={"NOETL_LEASE_SECONDS": "3"})
        w1 = cluster.start_worker("w1", server.url, heartbeat_interval=1)
        ...

Every process runs in a session of its own, so `kill()` (SIGKILL to the process group) is a real
`kill -9` and leaves nothing behind; `Cluster.close()` stops workers first (SIGTERM, short grace),
then servers, and SIGKILLs whatever is still alive, also after a failed test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from tests.support.auth import AUTH

T = TypeVar("T")

STARTUP_SECONDS = 45.0  # python start-up + imports + migrations on a loaded 2-core machine
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy (returned); AssertionError naming `what`
    after `timeout` seconds (with `details()` appended, e.g. process logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without NOETL_* settings (a developer's NOETL_STORE_URL must not leak
    into a subprocess), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_") or k == "NOETL_API_TOKEN"}
    env.update(extra or {})
    return env


@dataclass
class NoetlProcess:
    """One `python -m noetl ...` subprocess with its output in a log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    _sink: IO[bytes] | None = None

    def start(self) -> NoetlProcess:
        self._sink = self.log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "noetl", *self.args],
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # its own process group: kill() takes everything it started
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """kill -9 (the whole process group) and reap it."""
        if self.popen is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        self._close_sink()

    def terminate(self) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        self.signal(signal.SIGKILL)  # anything it left in its group
        self._close_sink()
        return True

    def _close_sink(self) -> None:
        if self._sink is not None:
            with contextlib.suppress(OSError):
                self._sink.close()
            self._sink = None

    def tail(self, chars: int = 3000) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return f"--- {self.name}: no log ---"
        status = "running" if self.alive() else f"exited {self.popen.returncode if self.popen else '?'}"
        return f"--- {self.name} ({status}) {self.log} ---\n{text[-chars:]}"


@dataclass
class ServerProcess(NoetlProcess):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """Servers and workers of one test; `close()` (or leaving the `with`) ends them all."""

    tmp: Path
    store_url: str
    bus_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    servers: list[ServerProcess] = field(default_factory=list)
    workers: dict[str, NoetlProcess] = field(default_factory=dict)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- servers

    def start_server(
        self,
        name: str,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        extra_args: Iterable[str] = (),
    ) -> ServerProcess:
        """`noetl server start` on this cluster's store and bus; `extra_args` are appended (e.g.
        `("--with-worker", "--workers", "16")`)."""
        port = port or free_port()
        args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--store", self.store_url]
        if self.bus_url:
            args += ["--bus", self.bus_url]
        args += list(extra_args)
        server = ServerProcess(
            name=name,
            args=args,
            env=clean_env({**self.env, **(env or {})}),
            log=self.tmp / f"{name}.log",
            cwd=self.tmp,
            port=port,
        )
        self.servers.append(server)
        server.start()
        if wait:
            self.wait_healthy(server)
        return server

    def restart_server(self, old: ServerProcess, name: str, *, wait: bool = True) -> ServerProcess:
        """A new server process with the same store, bus, port and environment as `old`."""
        new = ServerProcess(
            name=name,
            args=list(old.args),
            env=dict(old.env),
            log=self.tmp / f"{name}.log",
            cwd=self.tmp,
            port=old.port,
        )
        self.servers.append(new)
        new.start()
        if wait:
            self.wait_healthy(new)
        return new

    def wait_healthy(self, server: ServerProcess, timeout: float = STARTUP_SECONDS) -> None:
        def healthy() -> bool:
            if not server.alive():
                raise AssertionError(f"server {server.name} exited during start-up\n{server.tail()}")
            try:
                return httpx.get(server.url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, f"server {server.name} to answer /health", details=server.tail)

    # -------------------------------------------------------------------------- workers

    def start_worker(
        self,
        worker_id: str,
        server_url: str,
        *,
        concurrency: int = 4,
        heartbeat_interval: float = 1.0,
        poll_interval: float = 0.1,
        grace_period: float = 2.0,
        bus: bool = True,
        pools: Iterable[str] = (),
        wait: bool = True,
    ) -> NoetlProcess:
        args = [
            "worker", "start",
            "--server", server_url,
            "--worker-id", worker_id,
            "--concurrency", str(concurrency),
            "--heartbeat-interval", str(heartbeat_interval),
            "--poll-interval", str(poll_interval),
            "--grace-period", str(grace_period),
        ]  # fmt: skip
        if bus and self.bus_url:
            args += ["--bus", self.bus_url]
        for pool in pools:
            args += ["--pool", pool]
        worker = NoetlProcess(
            name=worker_id,
            args=args,
            env=clean_env(self.env),
            log=self.tmp / f"{worker_id}.log",
            cwd=self.tmp,
        )
        self.workers[worker_id] = worker
        worker.start()
        if wait:
            self.wait_registered(worker, server_url)
        return worker

    def wait_registered(
        self, worker: NoetlProcess, server_url: str, timeout: float = STARTUP_SECONDS
    ) -> None:
        def registered() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker {worker.name} exited during start-up\n{worker.tail()}")
            try:
                rows = httpx.get(server_url + "/api/worker/pools", headers=AUTH, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            return any(row.get("name") == worker.name for row in rows)

        wait_for(registered, timeout, f"worker {worker.name} to register", details=worker.tail)

    def worker_by_pid(self, pid: int) -> NoetlProcess | None:
        return next((w for w in self.workers.values() if w.popen is not None and w.popen.pid == pid), None)

    # -------------------------------------------------------------------------- teardown

    def close(self) -> None:
        """Workers first (SIGTERM, a few seconds to deregister), then servers; SIGKILL the rest."""
        for group, grace in ((list(self.workers.values()), 8.0), (list(self.servers), 10.0)):
            for proc in group:
                proc.terminate()
            deadline = time.monotonic() + grace
            for proc in group:
                if not proc.wait_exit(deadline - time.monotonic()):
                    proc.kill()

    def logs(self, chars: int = 3000) -> str:
        procs: Iterable[NoetlProcess] = [*self.servers, *self.workers.values()]
        return "\n".join(p.tail(chars) for p in procs)


# ------------------------------------------------------------------------------ HTTP helpers


def get_json(url: str, path: str, *, timeout: float = 10, **params: Any) -> Any:
    response = httpx.get(url + path, params=params or None, headers=AUTH, timeout=timeout)
    assert response.status_code == 200, f"GET {path} -> {response.status_code}: {response.text}"
    return response.json()


def post_json(url: str, path: str, body: Any, *, timeout: float = 30) -> Any:
    response = httpx.post(url + path, json=body, headers=AUTH, timeout=timeout)
    assert response.status_code in (200, 201), f"POST {path} -> {response.status_code}: {response.text}"
    return response.json()


def try_status(url: str, execution_id: str) -> dict[str, Any] | None:
    """The execution's status, or None while the server cannot answer (restarting)."""
    try:
        response = httpx.get(f"{url}/api/executions/{execution_id}/status", headers=AUTH, timeout=10)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body


def wait_terminal(
    url: str | Callable[[], str], execution_id: str, timeout: float, details: Callable[[], str] | None = None
) -> dict[str, Any]:
    """Poll until the execution ends; tolerates a server that is down for a while."""
    last: dict[str, Any] = {}

    def ended() -> dict[str, Any] | None:
        nonlocal last
        base = url() if callable(url) else url
        body = try_status(base, execution_id)
        if body is not None:
            last = body
            if str(body.get("status")).upper() in TERMINAL:
                return body
        return None

    def why() -> str:
        text = f"last status: {last.get('status')} progress={last.get('progress')} error={last.get('error')}"
        return text + (f"\n{details()}" if details is not None else "")

    return wait_for(ended, timeout, f"execution {execution_id} to end", interval=0.25, details=why)


def events_of(url: str, execution_id: str | int) -> list[dict[str, Any]]:
    body = get_json(url, f"/api/executions/{execution_id}/events")
    events: list[dict[str, Any]] = body["events"]
    return events


def worker_of(event: dict[str, Any]) -> str | None:
    meta = event.get("meta") or {}
    value = event.get("worker_id") or meta.get("worker_id")
    return str(value) if value else None


# ------------------------------------------------------------------------------ NATS control


@dataclass
class NatsControl:
    """Stop the local nats-server (by its pid) and start it again with the same command line.

    The running server is found in /proc by its executable name and port; it is started again
    with `start-stop-daemon` (as `.ci/run` does) or, where that is missing, as a detached process.
    """

    host: str = "127.0.0.1"
    port: int = 4222
    argv: list[str] = field(default_factory=list)
    stopped: bool = False

    def find(self) -> list[tuple[int, list[str]]]:
        found: list[tuple[int, list[str]]] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
            if not argv or Path(argv[0]).name != "nats-server":
                continue
            if self._port_of(argv) == self.port:
                found.append((int(entry.name), argv))
        return found

    @staticmethod
    def _port_of(argv: list[str]) -> int:
        for flag in ("-p", "--port", "-port"):
            if flag in argv[:-1]:
                with contextlib.suppress(ValueError):
                    return int(argv[argv.index(flag) + 1])
        return 4222

    def unusable(self) -> str | None:
        """Why this test cannot stop and restart NATS, or None."""
        running = self.find()
        if not running:
            return f"no nats-server process for port {self.port} was found in /proc"
        pid, argv = running[0]
        if not os.access(argv[0], os.X_OK):
            return f"cannot restart NATS: {argv[0]} is not executable here"
        try:
            os.kill(pid, 0)
        except PermissionError:
            return f"not allowed to signal nats-server (pid {pid})"
        return None

    def stop(self, timeout: float = 20.0) -> None:
        running = self.find()
        assert running, f"no nats-server on port {self.port} to stop"
        self.argv = running[0][1]
        self.stopped = True
        for pid, _ in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(_pid_alive(pid) for pid, _ in running) or port_open(self.host, self.port, 0.2):
            if time.monotonic() > deadline:
                for pid, _ in running:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        wait_for(lambda: not port_open(self.host, self.port, 0.2), 10, "NATS to stop listening")

    def start(self, timeout: float = 30.0) -> None:
        """Start NATS again (when this object stopped it) and wait until it accepts connections."""
        if not self.stopped:
            return
        if not port_open(self.host, self.port):
            argv = self.argv or ["/usr/sbin/nats-server", "-a", self.host, "-p", str(self.port), "-js"]
            daemon = "/sbin/start-stop-daemon"
            if not os.path.exists(daemon):
                daemon = "/usr/sbin/start-stop-daemon"
            if os.path.exists(daemon):
                subprocess.run(
                    [daemon, "--start", "--oknodo", "--background", "--exec", argv[0], "--", *argv[1:]],
                    check=False,
                    timeout=30,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            else:
                subprocess.Popen(
                    argv,
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        wait_for(
            lambda: port_open(self.host, self.port),
            timeout,
            f"NATS to listen on {self.host}:{self.port} again",
        )
        self.stopped = False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (not reaped by its parent yet) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
