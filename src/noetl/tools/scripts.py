"""Load a tool's source text (SQL, Python) from a file or a URL instead of the playbook.

Accepted shapes of `script` (postgres, duckdb and python tools):

    script: ./sql/create.sql                     # a path or URI on one line
    script: {uri: ./sql/create.sql}              # file path, file://, http(s)://
    script: {uri: "...", source: {type: file}}   # upstream shape; type file | http | inline
    script: {source: {type: file, path: ./x.sql}}
    script: {source: {type: http, endpoint: https://host/x.sql, headers: {...}, timeout: 30}}
    script: {source: {type: inline, code: "SELECT 1"}}

A relative path is looked up in the playbook's folder (`ToolContext.base_path`) first, then in
the working directory (upstream playbooks write paths relative to the repository root).
`gs://` and `s3://` sources are not supported here: read them in a python step. SQL read from a
script is rendered with the step's template context, as inline SQL is (Python source is not).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from noetl.tools.base import ToolContext

__all__ = ["ScriptError", "is_location", "read_script", "sql_texts"]

HTTP_TIMEOUT = 30.0
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCATION_SUFFIXES = (".sql", ".py", ".txt", ".psql", ".ddl")


class ScriptError(Exception):
    """The script cannot be found or read; the message is for the user."""


def is_location(text: str) -> bool:
    """Whether a `script:` string names a file or URL (rather than holding the source itself)."""
    value = text.strip()
    if not value or "\n" in value or " " in value or ";" in value:
        return False
    if _SCHEME.match(value):
        return True
    return value.startswith(("./", "../", "/", "~")) or value.lower().endswith(_LOCATION_SUFFIXES)


async def read_script(script: Any, ctx: ToolContext, *, tool: str) -> str:
    """The text `script` points at (see the module doc for the shapes)."""
    if isinstance(script, str):
        return await _read_location(script.strip(), {}, ctx, tool)
    if not isinstance(script, Mapping):
        raise ScriptError(f"{tool}: 'script' must be a path, a URI or a mapping, got {type(script).__name__}")
    source = script.get("source")
    source = source if isinstance(source, Mapping) else {}
    kind = str(source.get("type") or script.get("type") or "").lower()
    inline = source.get("code", source.get("content", script.get("code", script.get("content"))))
    if kind == "inline" or (not kind and inline not in (None, "")):
        if inline in (None, ""):
            raise ScriptError(f"{tool}: an inline script needs 'code'")
        return str(inline)
    location = _first(source, script, "uri", "path", "url", "endpoint")
    if location is None:
        raise ScriptError(f"{tool}: 'script' needs a 'uri' (a file path or an http(s) URL)")
    if kind in ("gcs", "gs", "s3"):
        raise ScriptError(
            f"{tool}: script source type '{kind}' is not supported; download {location} in a python "
            "step or use a file or http source"
        )
    if kind not in ("", "file", "http", "https", "url"):
        raise ScriptError(f"{tool}: unknown script source type '{kind}' (use file, http or inline)")
    if kind == "file" and _SCHEME.match(location) and not location.startswith("file://"):
        raise ScriptError(f"{tool}: script source type 'file' cannot read {location}")
    return await _read_location(location, source, ctx, tool)


def _first(primary: Mapping[str, Any], secondary: Mapping[str, Any], *keys: str) -> str | None:
    for holder in (primary, secondary):
        for key in keys:
            value = holder.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


async def _read_location(location: str, source: Mapping[str, Any], ctx: ToolContext, tool: str) -> str:
    scheme = _SCHEME.match(location)
    name = scheme.group(1).lower() if scheme else "file"
    if name in ("http", "https"):
        return await _fetch(location, source, tool)
    if name in ("gs", "s3"):
        raise ScriptError(f"{tool}: cannot read {location}: {name}:// scripts are not supported")
    if name != "file":
        raise ScriptError(f"{tool}: cannot read script {location}: unsupported scheme {name}://")
    path = location[len("file://") :] if location.startswith("file://") else location
    return _read_file(path, ctx, tool)


def _read_file(path: str, ctx: ToolContext, tool: str) -> str:
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else []
    if not given.is_absolute():
        if ctx.base_path:
            candidates.append(Path(ctx.base_path) / given)
        candidates.append(Path.cwd() / given)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return candidate.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ScriptError(f"{tool}: cannot read script {candidate}: {exc}") from None
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ScriptError(f"{tool}: script file {path} not found (looked at {tried})")


async def _fetch(url: str, source: Mapping[str, Any], tool: str) -> str:
    import httpx

    headers = source.get("headers")
    headers = {str(k): str(v) for k, v in headers.items()} if isinstance(headers, Mapping) else None
    timeout = source.get("timeout")
    seconds = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else HTTP_TIMEOUT
    try:
        async with httpx.AsyncClient(timeout=seconds, follow_redirects=True) as client:
            response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ScriptError(f"{tool}: cannot fetch script {url}: {exc or type(exc).__name__}") from None
    if not response.is_success:
        raise ScriptError(f"{tool}: fetching script {url} answered HTTP {response.status_code}")
    return response.text


def _render(text: str, ctx: ToolContext, tool: str) -> str:
    """A SQL file may use templates (`{{ workload.schema }}`): render it like inline SQL."""
    if "{{" not in text and "{%" not in text:
        return text
    from noetl.errors import TemplateError
    from noetl.template import render_text

    try:
        return render_text(text, ctx.render_context)
    except TemplateError as exc:
        raise ScriptError(f"{tool}: the script's template failed: {exc}") from None


SQL_KEYS = ("command", "query", "sql", "commands", "queries", "cmds", "cmd")
SQL_B64_KEYS = ("command_b64", "commands_b64", "query_b64", "queries_b64")


async def sql_texts(config: Mapping[str, Any], ctx: ToolContext, *, tool: str) -> list[str]:
    """The SQL of a postgres/duckdb step, as a list of texts (each may hold several statements):
    `script` (or a `source: {type: file|http|inline, ...}`) first, then `command_b64`-style
    base64 keys, then `command` / `query` / `sql` / `commands` / ... (a string or a list)."""
    script = config.get("script")
    if script is None and isinstance(config.get("source"), Mapping):
        script = {"source": config["source"]}
    if script not in (None, ""):
        if isinstance(script, str) and not is_location(script):
            return [script]
        return [_render(await read_script(script, ctx, tool=tool), ctx, tool)]
    for key in SQL_B64_KEYS:
        encoded = config.get(key)
        if encoded:
            encoded_items = encoded if isinstance(encoded, list) else [encoded]
            try:
                return [base64.b64decode(str(item)).decode("utf-8") for item in encoded_items]
            except (ValueError, UnicodeDecodeError) as exc:
                raise ScriptError(f"{tool}: '{key}' is not valid base64 UTF-8 text: {exc}") from None
    for key in SQL_KEYS:
        value = config.get(key)
        if value is None or value == "" or value == []:
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        texts = [str(item) for item in items if item is not None and str(item).strip()]
        if texts:
            return texts
    raise ScriptError(f"{tool}: 'command' (or 'query', or a 'script' file) is required: the SQL to run")
