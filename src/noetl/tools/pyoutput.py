"""Output capture for the python tool: `print` in step code goes to the calling job's buffers.

Thread-aware proxies replace `sys.stdout`/`sys.stderr`: a write from a thread that runs a step goes
to that step's bounded buffer, any other write goes to the stream the proxy replaced.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO, cast

__all__ = ["OUTPUT_LIMIT", "BoundedText", "capture", "install_proxies"]

OUTPUT_LIMIT = 64 * 1024  # characters kept of stdout and of stderr per call


class BoundedText:
    """A write-only text buffer that keeps the first and the last `limit // 2` characters."""

    __slots__ = ("_half", "_head", "_head_len", "_tail", "_tail_len", "_total")

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self._half = limit // 2
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self._total = 0

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        self._total += n
        if self._head_len < self._half:
            take = text[: self._half - self._head_len]
            self._head.append(take)
            self._head_len += len(take)
            text = text[len(take) :]
            if not text:
                return n
        self._tail.append(text)
        self._tail_len += len(text)
        if self._tail_len > 2 * self._half:
            kept = "".join(self._tail)[-self._half :]
            self._tail = [kept]
            self._tail_len = len(kept)
        return n

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self._total <= 2 * self._half:
            return head + tail
        tail = tail[-self._half :]
        omitted = self._total - len(head) - len(tail)
        return f"{head}\n... [{omitted} characters truncated] ...\n{tail}"


capture = threading.local()  # .stdout / .stderr: the current thread's BoundedText, or None


class ThreadAwareStream:
    """Stands in for sys.stdout/sys.stderr: writes go to the current thread's capture buffer if one is
    active, else to the stream it replaced."""

    def __init__(self, real: TextIO | None, slot: str) -> None:
        self._real = real
        self._slot = slot

    def write(self, text: str) -> int:
        buf: BoundedText | None = getattr(capture, self._slot, None)
        if buf is not None:
            return buf.write(text)
        if self._real is None:
            return len(text)
        return self._real.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(capture, self._slot, None) is None and self._real is not None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


_install_lock = threading.Lock()


def install_proxies() -> None:
    """Put the proxies in place (again, if something such as pytest swapped sys.stdout since)."""
    if isinstance(sys.stdout, ThreadAwareStream) and isinstance(sys.stderr, ThreadAwareStream):
        return
    with _install_lock:
        if not isinstance(sys.stdout, ThreadAwareStream):
            sys.stdout = cast(TextIO, ThreadAwareStream(sys.stdout, "stdout"))
        if not isinstance(sys.stderr, ThreadAwareStream):
            sys.stderr = cast(TextIO, ThreadAwareStream(sys.stderr, "stderr"))
