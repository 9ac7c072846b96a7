"""Finding 1: the server had no authentication and bound 0.0.0.0, so anyone who reached the port
could register a playbook and run shell or python as the server's user.

Now every /api route needs a bearer token (401 without one, or with a wrong one), and the server
binds the loopback interface unless told otherwise.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx

from tests.security.helpers import TWO_STEPS, http, ok
from tests.support.cluster import Cluster, ServerProcess, clean_env, free_port

SHELL = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata:
  name: takeover
  path: security/takeover
workflow:
  - step: start
    tool:
      kind: python
      code: |
        open("pwned", "w").write("owned")
        result = {"owned": True}
"""


def _listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def _other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_server_binds_loopback_by_default(cluster: Cluster) -> None:
    assert sys.platform.startswith("linux"), "this check reads /proc/net/tcp"
    port = free_port()
    # `noetl server start` without --host: what it binds when nobody says.
    process = ServerProcess(
        name="default-bind",
        args=["server", "start", "--port", str(port), "--store", cluster.store_url],
        env=clean_env(),
        log=cluster.tmp / "default-bind.log",
        cwd=cluster.tmp,
        port=port,
    )
    cluster.servers.append(process)
    process.start()
    cluster.wait_healthy(process)
    assert _listening(port) == ["0100007F"], (
        f"the server listens on {_listening(port)} (0100007F is 127.0.0.1, 00000000 every interface)"
    )
    other = _other_address()
    if other is not None:  # and from another address of this machine, the port is closed
        try:
            answer = httpx.get(f"http://{other}:{port}/health", timeout=2)
        except httpx.TransportError:
            answer = None
        assert answer is None, f"the server answered on {other}: {answer}"


def test_no_api_route_answers_without_a_valid_token(server: str) -> None:
    with http(server, token=None) as anonymous:
        schema = ok(anonymous.get("/openapi.json"))
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/") or path == "/api/health":
            continue
        concrete = path.replace("{execution_id}", "1").replace("{event_id}", "1").replace("{name}", "x")
        for method in operations:
            for token in (None, "noetl_not-a-token"):
                with http(server, token=token) as client:
                    answer = client.request(method.upper(), concrete, json={})
                assert answer.status_code == 401, f"{method.upper()} {path} with token {token}: {answer.text}"
                assert answer.json()["status"] == 401
                assert answer.headers.get("www-authenticate") == "Bearer"
                checked += 1
    assert checked >= 2 * 28  # every documented /api operation, twice
    with http(server, token=None) as anonymous:  # health stays open for probes
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/api/health").status_code == 200


def test_a_stranger_cannot_register_and_run_code(server: str, tmp_path: Path) -> None:
    with http(server, token=None) as stranger:
        assert stranger.post("/api/catalog/register", json={"content": SHELL}).status_code == 401
        assert stranger.post("/api/execute", json={"path": "security/takeover"}).status_code == 401
        assert stranger.post("/api/catalog/list", json={}).status_code == 401
    with http(server) as admin:
        assert ok(admin.post("/api/catalog/list", json={}))["entries"] == []
        assert ok(admin.get("/api/executions")) == []
        register = ok(admin.post("/api/catalog/register", json={"content": TWO_STEPS}))  # the owner can
        assert register["path"] == "security/two_steps"
    assert not (tmp_path / "pwned").exists()
