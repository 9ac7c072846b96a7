"""SQL text handling shared by the SQL tools: split a script into statements (quotes, dollar
quotes and comments are respected), accept `$1..$n` parameters for psycopg, and short snippets
of a statement for error messages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from psycopg.types.json import Jsonb

__all__ = ["adapt_param", "adapt_placeholders", "snippet", "split_statements"]

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _segments(text: str) -> Iterator[tuple[str, int, int]]:
    """Lexical pieces of SQL: (kind, start, end), kind in code | quoted | comment | semicolon."""
    i = 0
    n = len(text)
    code_start = 0

    def flush(end: int) -> Iterator[tuple[str, int, int]]:
        if end > code_start:
            yield ("code", code_start, end)

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "'":
            yield from flush(i)
            prev = text[i - 1] if i > 0 else ""
            before = text[i - 2] if i > 1 else ""
            escapes = prev in ("e", "E") and not (before.isalnum() or before in "_$")
            j = i + 1
            while j < n:
                if escapes and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "'":
                    if j + 1 < n and text[j + 1] == "'":
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            yield ("quoted", i, end)
            i = code_start = end
        elif c == '"':
            yield from flush(i)
            j = text.find('"', i + 1)
            end = n if j < 0 else j + 1
            yield ("quoted", i, end)
            i = code_start = end
        elif c == "-" and nxt == "-":
            yield from flush(i)
            j = text.find("\n", i + 2)
            end = n if j < 0 else j + 1
            yield ("comment", i, end)
            i = code_start = end
        elif c == "/" and nxt == "*":
            yield from flush(i)
            depth = 1
            j = i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                else:
                    j += 1
            yield ("comment", i, j)
            i = code_start = j
        elif c == "$" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")):
            match = _DOLLAR_TAG.match(text, i)
            if match is None:
                i += 1
                continue
            yield from flush(i)
            tag = match.group(0)
            j = text.find(tag, match.end())
            end = n if j < 0 else j + len(tag)
            yield ("quoted", i, end)
            i = code_start = end
        elif c == ";":
            yield from flush(i)
            yield ("semicolon", i, i + 1)
            i = code_start = i + 1
        else:
            i += 1
    yield from flush(n)


def split_statements(text: str) -> list[str]:
    """Statements of a SQL script, without empty or comment-only pieces and leading comments."""
    statements: list[str] = []
    first: int | None = None
    last_end = 0
    for kind, start, end in _segments(text):
        if kind == "semicolon":
            if first is not None:
                statements.append(text[first:last_end].strip())
            first = None
            continue
        if kind == "comment":
            continue
        if kind == "code" and not text[start:end].strip():
            continue
        if first is None:
            first = start + (len(text[start:end]) - len(text[start:end].lstrip()))
        last_end = end
    if first is not None:
        statements.append(text[first:last_end].strip())
    return [s for s in statements if s]


_PSYCOPG_PLACEHOLDER = re.compile(r"%(?:\([^)]+\))?[sbt]")
_DOLLAR_PARAM = re.compile(r"\$(\d+)")


def adapt_placeholders(statement: str, params: Any) -> tuple[str, Any]:
    """Accept `$1..$n` with a list of params by rewriting them to psycopg placeholders."""
    if not isinstance(params, list):
        return statement, params
    segments = list(_segments(statement))
    code = [statement[s:e] for kind, s, e in segments if kind == "code"]
    if any(_PSYCOPG_PLACEHOLDER.search(part) for part in code):
        return statement, params
    if not any(_DOLLAR_PARAM.search(part) for part in code):
        return statement, params
    out: list[str] = []
    for kind, start, end in segments:
        piece = statement[start:end].replace("%", "%%")
        if kind == "code":
            piece = _DOLLAR_PARAM.sub(lambda m: f"%(p{m.group(1)})s", piece)
        out.append(piece)
    return "".join(out), {f"p{i}": value for i, value in enumerate(params, start=1)}


def adapt_param(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, dict) else value


def snippet(statement: str, limit: int = 80) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
