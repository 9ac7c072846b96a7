"""The framing of the python tool's channel: multiprocessing's (a 4-byte big-endian length,
then the bytes; a longer header from 2 GiB), written with one `write` and mostly read with one
`read` per message. Both ends use it: the orchestrating process (`noetl.tools.pyprocess`) and the
tool process (`noetl.tools.pychild`); each side sends one message and then waits for the other's,
so nothing ever follows a message in the channel."""

from __future__ import annotations

import os
import struct
from multiprocessing.connection import Connection

_HEADER = struct.Struct("!i")
_LARGE = 0x7FFFFFFF  # from this size multiprocessing uses a longer header: its own code then


def send_message(conn: Connection, data: bytes) -> None:
    if len(data) >= _LARGE:
        conn.send_bytes(data)
        return
    view = memoryview(_HEADER.pack(len(data)) + data)
    fd = conn.fileno()
    while view:
        view = view[os.write(fd, view) :]


def receive_message(conn: Connection) -> bytes:
    """One whole message (the process sends one per job, so nothing follows it)."""
    fd = conn.fileno()
    chunk = os.read(fd, 65536)
    if len(chunk) < _HEADER.size:
        if not chunk:
            raise EOFError
        chunk += _read_exactly(fd, _HEADER.size - len(chunk))
    (size,) = _HEADER.unpack_from(chunk)
    if size < 0:  # the longer header of a huge message
        head = chunk[: _HEADER.size + 8]
        if len(head) < _HEADER.size + 8:
            head += _read_exactly(fd, _HEADER.size + 8 - len(head))
        (size,) = struct.unpack("!Q", head[_HEADER.size :])
        body = chunk[_HEADER.size + 8 :]
    else:
        body = chunk[_HEADER.size :]
    if len(body) < size:
        body += _read_exactly(fd, size - len(body))
    return body


def _read_exactly(fd: int, count: int) -> bytes:
    parts: list[bytes] = []
    while count > 0:
        part = os.read(fd, count)
        if not part:
            raise EOFError
        parts.append(part)
        count -= len(part)
    return b"".join(parts)
