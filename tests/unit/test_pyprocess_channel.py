"""Both ends of a python-tool process's channel (`noetl.tools.pychannel`) speak
multiprocessing's framing, so either end reads what `Connection` writes and the reverse: whole
messages of any size, both ways, and a hang-up is EOFError."""

from __future__ import annotations

import os
import socket
import threading
from multiprocessing.connection import Connection

import pytest

from noetl.tools.pychannel import receive_message, send_message


def pair() -> tuple[Connection, Connection]:
    ours, theirs = socket.socketpair()
    return Connection(ours.detach()), Connection(theirs.detach())


@pytest.mark.parametrize("size", [0, 1, 65_531, 65_532, 70_000, 3_000_000])
def test_messages_cross_whole_both_ways(size: int) -> None:
    parent, child = pair()
    payload = os.urandom(size)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(child.recv_bytes()))
    reader.start()
    send_message(parent, payload)  # larger than the socket buffer: written while the child reads
    reader.join(10)
    assert got == [payload]

    writer = threading.Thread(target=child.send_bytes, args=(payload[::-1],))
    writer.start()
    assert receive_message(parent) == payload[::-1]
    writer.join(10)
    parent.close()
    child.close()


def test_a_hang_up_is_eof() -> None:
    parent, child = pair()
    child.close()
    with pytest.raises(EOFError):
        receive_message(parent)
    parent.close()


def test_a_hang_up_inside_a_message_is_eof() -> None:
    parent, child = pair()
    os.write(child.fileno(), (10).to_bytes(4, "big") + b"abc")
    child.close()
    with pytest.raises(EOFError):
        receive_message(parent)
    parent.close()
