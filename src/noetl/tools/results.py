"""Large step results kept outside the event log, and the references that point at them.

A `ResultRef` is a small JSON object: `{kind: "result_ref", ref: <uri>, store, bytes, sha256,
media_type}` with `ref` = `noetl://execution/<execution_id>/result/<step>/<id>` for the result
store, or `file:///abs/path.json[.gz]` for an artifact written to an explicit path.

* `externalize(data, execution_id=..., step=...)` stores a result bigger than the inline limit
  (`NOETL_RESULT_INLINE_MAX_BYTES`, default 10 MiB, or `threshold=`) and returns its envelope:
  `{_ref: <ResultRef>, _size_bytes, _preview, _store, <selected or top-level scalar fields>}`,
  so `{{ step._ref }}` feeds `kind: artifact` and `{{ step.status }}` still reads a scalar.
* `hydrate(value)` turns an envelope back into the full data (a mapping keeps its `_ref`).
* `output_policy(tool_config)` reads `output_select` / `output: {select, inline_max_bytes}`.

The executor externalises a finished command's data with
`externalize(data, execution_id=..., step=..., select=select, threshold=threshold)` where
`select, threshold = output_policy(tool_config)`.
* `load_ref(ref)` / `save_ref(data, uri)` read and write one reference.

The store is a directory (`NOETL_RESULT_STORE_DIR`, default `<user data dir>/noetl/results`):
every process on the host that shares it (local runs, a server and its workers) resolves the
same references. Another backend (an HTTP result API for workers on other hosts) plugs in with
`set_result_store`.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import orjson

from noetl.settings import settings

__all__ = [
    "FileResultStore",
    "RefError",
    "ResultStore",
    "externalize",
    "hydrate",
    "is_envelope",
    "load_ref",
    "output_policy",
    "ref_uri",
    "result_store",
    "save_ref",
    "set_result_store",
]

DEFAULT_INLINE_MAX_BYTES = 10 * 1024 * 1024
PREVIEW_CHARS = 1024
SUMMARY_BYTES = 4096
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_RESULT_URI = re.compile(r"^noetl://execution/(?P<eid>[^/]+)/result/(?P<step>[^/]+)/(?P<id>[^/]+)$")


class RefError(Exception):
    """A reference cannot be stored or resolved; the message is for the user."""


def _dump(data: Any) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        import json

        return json.dumps(data, separators=(",", ":"), default=str).encode()


def _load(raw: bytes) -> Any:
    return orjson.loads(raw)


class ResultStore(Protocol):
    name: str

    def put(self, execution_id: int | str, step: str, payload: bytes) -> str:
        """Keep `payload` (JSON bytes); returns its `noetl://` URI."""
        ...

    def get(self, uri: str) -> bytes:
        """The JSON bytes behind a `noetl://` URI; RefError when missing."""
        ...


@dataclass
class FileResultStore:
    """Results as gzip files under `root/<execution_id>/<step>/<id>.json.gz`."""

    root: Path
    name: str = "file"

    def _path(self, execution_id: str, step: str, ident: str) -> Path:
        return (
            self.root
            / _SAFE.sub("_", execution_id)
            / _SAFE.sub("_", step)
            / f"{_SAFE.sub('_', ident)}.json.gz"
        )

    def put(self, execution_id: int | str, step: str, payload: bytes) -> str:
        ident = uuid.uuid4().hex
        path = self._path(str(execution_id), step, ident)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        temp.write_bytes(gzip.compress(payload, compresslevel=5))
        temp.replace(path)  # readers never see a half-written file
        return f"noetl://execution/{execution_id}/result/{step}/{ident}"

    def get(self, uri: str) -> bytes:
        match = _RESULT_URI.match(uri)
        if match is None:
            raise RefError(f"not a result-store reference: {uri}")
        path = self._path(unquote(match["eid"]), unquote(match["step"]), unquote(match["id"]))
        try:
            return gzip.decompress(path.read_bytes())
        except FileNotFoundError:
            raise RefError(f"result {uri} not found in the result store at {self.root}") from None
        except OSError as exc:
            raise RefError(f"cannot read result {uri}: {exc}") from None


def _default_root() -> Path:
    configured = settings().result_store_dir
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("noetl")) / "results"


_store: ResultStore | None = None


def result_store() -> ResultStore:
    """The store in use (a FileResultStore unless `set_result_store` chose another)."""
    global _store
    if _store is None:
        _store = FileResultStore(_default_root())
    return _store


def set_result_store(store: ResultStore | None) -> None:
    """Use `store` for references from now on (None: back to the default directory)."""
    global _store
    _store = store


def inline_max_bytes() -> int:
    return settings().result_inline_max_bytes


# --------------------------------------------------------------------------------------------
# References


def ref_uri(value: Any) -> str | None:
    """The URI a `result_ref` value names: a URI string, a ResultRef, or an envelope."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, Mapping):
        if isinstance(value.get("_ref"), Mapping):
            return ref_uri(value["_ref"])
        for key in ("ref", "uri", "logical_uri"):
            if isinstance(value.get(key), str) and value[key].strip():
                return str(value[key]).strip()
    return None


def _file_path(uri: str, base_path: str | None) -> Path:
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        return Path(unquote(parts.netloc + parts.path)).expanduser()
    path = Path(uri).expanduser()
    if not path.is_absolute() and base_path:
        candidate = Path(base_path) / path
        if candidate.exists() or not (Path.cwd() / path).exists():
            return candidate
    return path.resolve()


def _make_ref(uri: str, payload: bytes, store: str) -> dict[str, Any]:
    return {
        "kind": "result_ref",
        "ref": uri,
        "store": store,
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "media_type": "application/json",
    }


def load_ref(value: Any, *, base_path: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The data behind a reference, and `{uri, size_bytes}`; RefError when it cannot be read."""
    uri = ref_uri(value)
    if uri is None:
        raise RefError("no reference given: pass result_ref (a step's _ref) or a uri")
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme == "noetl":
        payload = result_store().get(uri)
    elif scheme in ("", "file"):
        path = _file_path(uri, base_path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise RefError(f"artifact {uri} not found ({path})") from None
        except OSError as exc:
            raise RefError(f"cannot read artifact {uri}: {exc}") from None
        payload = gzip.decompress(raw) if path.suffix in (".gz", ".gzip") else raw
    else:
        raise RefError(f"cannot read {uri}: {scheme}:// artifacts are not supported (noetl:// and files are)")
    try:
        data = _load(payload)
    except orjson.JSONDecodeError:
        data = payload.decode("utf-8", errors="replace")
    return data, {"uri": uri, "size_bytes": len(payload)}


def save_ref(
    data: Any, uri: str | None, *, execution_id: int | str, step: str, base_path: str | None = None
) -> dict[str, Any]:
    """Store `data`: at `uri` (a file path or file://, `.gz` compresses), else in the result store."""
    payload = _dump(data)
    if not uri:
        store = result_store()
        return _make_ref(store.put(execution_id, step, payload), payload, store.name)
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme not in ("", "file"):
        raise RefError(f"cannot write {uri}: only file paths and file:// URIs can be written")
    path = _file_path(uri, base_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(payload) if path.suffix in (".gz", ".gzip") else payload)
    except OSError as exc:
        raise RefError(f"cannot write artifact {path}: {exc}") from None
    return _make_ref(path.resolve().as_uri(), payload, "file")


# --------------------------------------------------------------------------------------------
# Envelopes


def is_envelope(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and isinstance(value.get("_ref"), Mapping)
        and value["_ref"].get("kind") == "result_ref"
    )


def _summary(data: Any, select: Sequence[str] | None) -> dict[str, Any]:
    """The fields kept inline: `select` paths, else the top-level scalars (within a budget)."""
    if not isinstance(data, Mapping):
        return {}
    if select:
        out: dict[str, Any] = {}
        for path in select:
            value: Any = data
            for part in str(path).split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            out[str(path).split(".")[-1] if "." in str(path) else str(path)] = value
        return out
    out = {}
    used = 0
    for key, value in data.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            size = len(str(key)) + len(str(value))
            if used + size > SUMMARY_BYTES:
                break
            out[str(key)] = value
            used += size
    return out


def externalize(
    data: Any,
    *,
    execution_id: int | str,
    step: str,
    threshold: int | None = None,
    select: Sequence[str] | None = None,
    force: bool = False,
) -> Any:
    """`data` itself when it is small, else its envelope (see the module doc). `force` stores it
    whatever its size (a step that asked for `output_select`/`store`)."""
    if data is None or is_envelope(data):
        return data
    payload = _dump(data)
    limit = inline_max_bytes() if threshold is None else threshold
    if len(payload) <= limit and not force:
        return data
    store = result_store()
    ref = _make_ref(store.put(execution_id, step, payload), payload, store.name)
    preview = payload[:PREVIEW_CHARS].decode("utf-8", errors="ignore")
    envelope = {key: value for key, value in _summary(data, select).items() if not key.startswith("_")}
    envelope.update({"_ref": ref, "_size_bytes": len(payload), "_preview": preview, "_store": store.name})
    return envelope


def output_policy(config: Mapping[str, Any] | None) -> tuple[list[str] | None, int | None]:
    """`(select, threshold)` for `externalize` from a tool config: `output_select: [paths]` (items
    may be `{path: ...}`) or `output: {select: [...], inline_max_bytes: N}`."""
    if not isinstance(config, Mapping):
        return None, None
    output = config.get("output")
    output = output if isinstance(output, Mapping) else {}
    raw = config.get("output_select", output.get("select"))
    select: list[str] | None = None
    if isinstance(raw, str) and raw.strip():
        select = [raw.strip()]
    elif isinstance(raw, list):
        select = [str(i.get("path")) if isinstance(i, Mapping) else str(i) for i in raw if i] or None
    limit = output.get("inline_max_bytes")
    threshold = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else None
    return select, threshold


def hydrate(value: Any) -> Any:
    """The full data behind an envelope (a mapping gets the `_ref` back, so `{{ step._ref }}`
    keeps working); anything else is returned as it is. RefError when the data is gone."""
    if not is_envelope(value):
        return value
    data, _ = load_ref(value["_ref"])
    if isinstance(data, Mapping):
        return {**data, "_ref": value["_ref"]}
    return data
