"""Lean HTTP/1.1 JSON posts over kept-alive connections, for the requests a worker makes per
command (`ServerClient.report_events` and its async twin): plain HTTP only, idempotent posts
only (a post whose connection broke is sent again once on a new connection).

`http.client` spends most of its time per request parsing headers with the e-mail package, httpx
more again, and h11 (the sans-I/O parser under httpx) ~0.17 ms of CPU per exchange; these read
just what an answer needs: the status line, then a content-length, a chunked body, or a body
that ends with the connection; and `connection: close`. An answer's head is at most `MAX_HEAD`
bytes and its body at most `MAX_BODY` (a larger one is a ConnectionError).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

JSON_HEADERS = {"content-type": "application/json"}
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


def _bounded(size: int) -> int:
    if size > MAX_BODY:
        raise ConnectionError(f"the server's answer is larger than {MAX_BODY} bytes")
    return size


def parse_head(head: bytes) -> tuple[int, dict[bytes, bytes], bool]:
    """(status, headers by lower-case name, whether the connection ends after this answer)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    closing = headers.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0"
    return int(parts[1]), headers, closing


def _is_chunked(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"transfer-encoding", b"").lower() == b"chunked"


class _Target:
    def __init__(self, base_url: str, headers: Mapping[str, str] | None) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        fields = {"host": f"{self.host}:{self.port}", **JSON_HEADERS, **(headers or {})}
        self._fields = "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode("latin-1")

    def request(self, path: str, body: bytes) -> bytes:
        return b"".join(
            (
                f"POST {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"),
                self._fields,
                b"content-length: %d\r\n\r\n" % len(body),
                body,
            )
        )


class Wire:
    """One keep-alive HTTP/1.1 connection that sends a prepared request head and reads the
    answer with nothing but what that takes (status line, content-length or chunked body,
    `connection: close`): `http.client` spends most of its time per request parsing headers
    with the e-mail package."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self._buffer = b""

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = None
        self._buffer = b""

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        status, headers, closing = parse_head(self._until(b"\r\n\r\n"))
        if b"content-length" in headers:
            body = self._exactly(_bounded(int(headers[b"content-length"])))
        elif _is_chunked(headers):
            body = self._chunked()
        else:  # the body ends with the connection
            while chunk := self._recv():
                self._buffer += chunk
                _bounded(len(self._buffer))
            body, closing = self._buffer, True
        if closing:
            self.close()
        return status, body

    def _recv(self) -> bytes:
        assert self.sock is not None
        return self.sock.recv(65536)

    def _more(self) -> None:
        data = self._recv()
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    def _until(self, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ConnectionError(f"no end of line in the first {MAX_HEAD} bytes of the answer")
            self._more()
        head, self._buffer = self._buffer[:end], self._buffer[end + len(marker) :]
        return head

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._more()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _chunked(self) -> bytes:
        chunks = []
        total = 0
        while size := int(self._until(b"\r\n").split(b";")[0], 16):
            total = _bounded(total + size)
            chunks.append(self._exactly(size))
            self._until(b"\r\n")
        while self._until(b"\r\n"):  # trailers, up to the empty line
            pass
        return b"".join(chunks)


class JsonPoster:
    """JSON POSTs over one keep-alive connection per thread (`Wire`). A worker posts its
    outcomes for every command it runs; httpx spends about 0.75 ms of CPU a request on that,
    the standard library's client a quarter of it, `Wire` less again. Plain HTTP only (https
    goes through httpx)."""

    def __init__(self, base_url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.target = _Target(base_url, headers)
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[Wire] = []
        self._guard = threading.Lock()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body). A kept-alive connection the server has closed meanwhile fails on
        reuse: the post is then sent once more on a new connection (these posts are idempotent)."""
        wire: Wire | None = getattr(self._local, "wire", None)
        if wire is None:
            wire = Wire(self.target.host, self.target.port, self.timeout)
            self._local.wire = wire
            with self._guard:
                self._all.append(wire)
        request = self.target.request(path, body)
        while True:
            reused = wire.sock is not None
            try:
                return wire.exchange(request)
            except OSError:
                wire.close()  # reconnects on the next request
                if reused:
                    continue
                raise
            except BaseException:
                wire.close()
                raise

    def close(self) -> None:
        with self._guard:
            for wire in self._all:
                wire.close()
            self._all.clear()


class AsyncJsonPoster:
    """`JsonPoster` for an event loop: one kept-alive connection, one post at a time, no thread
    hop (a worker's reporter posts from its loop). Bound to the loop of its first post."""

    def __init__(self, base_url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
        self.target = _Target(base_url, headers)
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._one = asyncio.Lock()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body); OSError (TimeoutError included) when the server cannot be reached."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or another loop: nothing of the old one is usable
            self._streams, self._loop, self._one = None, loop, asyncio.Lock()
        request = self.target.request(path, body)
        async with self._one:
            while True:
                reused = self._streams is not None
                try:
                    async with asyncio.timeout(self.timeout):
                        return await self._exchange(request)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    self.close()
                    if reused:
                        continue
                    raise ConnectionError(str(exc) or type(exc).__name__) from exc
                except BaseException:
                    self.close()
                    raise

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.target.host, self.target.port)
        reader, writer = self._streams
        writer.write(request)
        await writer.drain()
        status, headers, closing = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
        if b"content-length" in headers:
            body = await reader.readexactly(_bounded(int(headers[b"content-length"])))
        elif _is_chunked(headers):
            chunks = []
            total = 0
            while size := int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                total = _bounded(total + size)
                chunks.append(await reader.readexactly(size))
                await reader.readuntil(b"\r\n")
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                pass
            body = b"".join(chunks)
        else:
            body = b""
            while chunk := await reader.read(65536):
                body += chunk
                _bounded(len(body))
            closing = True
        if closing:
            self.close()
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(Exception):
                self._streams[1].close()
        self._streams = None
