"""The worker's outcome posts (`ServerClient.report_events`) go over a light keep-alive
connection: answers, error mapping, retries and reconnects, against a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from noetl.client import ServerClient, ServerUnreachable
from noetl.engine.events import Event
from noetl.errors import NotFound

Report = Callable[..., tuple[list[int], set[str]]]


class Script:
    """What the fake server answers, one entry per request: (status, body, close?)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any], bool]] = []
        self.bodies: list[dict[str, Any]] = []
        self.connections: set[int] = set()


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            script.bodies.append(json.loads(self.rfile.read(length)))
            script.connections.add(id(self.connection))
            status, body, close = script.answers.pop(0) if script.answers else (200, {"event_ids": []}, False)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            if close:
                self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(data)
            if close:
                self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(params=["thread", "loop"])
def report(request: pytest.FixtureRequest) -> Report:
    """`ServerClient.report_events`, or its async twin run in an event loop of its own."""
    if request.param == "thread":
        return lambda client, batch: client.report_events(batch)
    loop = asyncio.new_event_loop()
    request.addfinalizer(loop.close)
    return lambda client, batch: loop.run_until_complete(client.report_events_async(batch))


def events(n: int = 2) -> list[Event]:
    return [
        Event(event_id=100 + i, execution_id=7, event_type="command.completed", node_name="s", worker_id="w1")
        for i in range(n)
    ]


def test_report_answers_ids_and_refused_commands(server: tuple[str, Script], report: Report) -> None:
    url, script = server
    script.answers.append((200, {"status": "ok", "event_ids": [100, 101], "rejected": ["7:s:1"]}, False))
    with ServerClient(url) as client:
        ids, refused = report(client, events())
        assert (ids, refused) == ([100, 101], {"7:s:1"})
        assert report(client, events()) == ([], set())  # the default answer: nothing stored
    body = script.bodies[0]
    assert body["execution_id"] == "7" and body["worker_id"] == "w1"
    assert [e["event_id"] for e in body["events"]] == [100, 101]
    assert len(script.connections) == 1  # one kept-alive connection for both posts


def test_report_reconnects_when_the_server_closed_the_connection(
    server: tuple[str, Script], report: Report
) -> None:
    url, script = server
    script.answers.append((200, {"event_ids": [100]}, True))  # answers, then hangs up
    with ServerClient(url, retries=0) as client:
        assert report(client, events(1))[0] == [100]
        assert report(client, events(1))[0] == []  # a new connection, no retry needed
    assert len(script.bodies) == 2


def test_report_maps_errors_and_retries_unavailable(server: tuple[str, Script], report: Report) -> None:
    url, script = server
    script.answers.append((404, {"error": "execution 7 not found", "status": 404}, False))
    with ServerClient(url) as client:
        with pytest.raises(NotFound, match="execution 7 not found"):
            report(client, events(1))
        script.answers.append((503, {"error": "busy", "status": 503}, False))
        assert report(client, events(1))[0] == []  # 503 retried, then the default answer
    assert len(script.bodies) == 3


def test_report_to_a_closed_port_is_unreachable(report: Report) -> None:
    with ServerClient("http://127.0.0.1:9", retries=1) as client, pytest.raises(ServerUnreachable):
        report(client, events(1))


def test_report_reads_chunked_answers_and_answers_that_end_with_the_connection(report: Report) -> None:
    """Answers without a content-length: chunked (kept alive), and HTTP/1.0 ending at close."""
    answers = [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'6\r\n{"even\r\n10;x=1\r\nt_ids": ["100"]}\r\n0\r\n\r\n',
        b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"event_ids": ["101"]}',
    ]
    requests: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        for answer in answers:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(line for line in head.split(b"\r\n") if line.startswith(b"content-length"))[15:]
            )
            while len(body) < length:
                body += conn.recv(65536)
            requests.append(body)
            conn.sendall(answer)
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with ServerClient(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=0) as client:
            assert report(client, events(1))[0] == [100]
            assert report(client, events(1))[0] == [101]
    finally:
        thread.join(10)
        listener.close()
    assert len(requests) == 2 and json.loads(requests[0])["events"][0]["event_id"] == 100


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n{}",  # past MAX_BODY
        b"HTTP/1.1 200 OK\r\nx-pad: " + b"x" * (80 * 1024),  # a head that never ends
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5000000\r\n" + b"x" * 65536,  # a chunk too big
    ],
    ids=["content-length", "endless-head", "chunk"],
)
def test_an_answer_past_the_size_limits_is_refused_not_read(report: Report, answer: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(answer)
        done.wait(10)  # the connection stays open: the client must stop on its own
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            ServerClient(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=0) as client,
            pytest.raises((ServerUnreachable, ConnectionError)),
        ):
            report(client, events(1))
    finally:
        done.set()
        thread.join(10)
        listener.close()
