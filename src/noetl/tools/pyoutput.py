"""Output capture for the python tool: `print` in step code goes to a bounded buffer of the job
(`noetl.tools.pychild` swaps `sys.stdout`/`sys.stderr` while a job runs)."""

from __future__ import annotations

__all__ = ["OUTPUT_LIMIT", "BoundedText"]

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

    @property
    def empty(self) -> bool:
        return self._total == 0

    def getvalue(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self._total <= 2 * self._half:
            return head + tail
        tail = tail[-self._half :]
        omitted = self._total - len(head) - len(tail)
        return f"{head}\n... [{omitted} characters truncated] ...\n{tail}"
