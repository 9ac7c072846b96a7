"""Result references: the directory store, externalize/hydrate, and `kind: artifact`."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from noetl.tools import results
from noetl.tools.artifact import ArtifactTool
from noetl.tools.base import ToolContext, ToolResult, get_tool
from noetl.tools.results import FileResultStore, RefError


@pytest.fixture(autouse=True)
def store(tmp_path: Path) -> Iterator[FileResultStore]:
    chosen = FileResultStore(tmp_path / "results")
    results.set_result_store(chosen)
    yield chosen
    results.set_result_store(None)


def artifact(config: dict[str, Any], base_path: Path | None = None) -> ToolResult:
    ctx = ToolContext(
        execution_id=42, step="art", command_id="c", base_path=str(base_path) if base_path else None
    )
    return asyncio.run(ArtifactTool().run(config, ctx))


BIG = {"status": "success", "count": 500, "items": [{"id": i, "pad": "x" * 100} for i in range(500)]}


def test_small_results_stay_inline() -> None:
    assert results.externalize({"a": 1}, execution_id=1, step="s") == {"a": 1}
    assert results.externalize(None, execution_id=1, step="s") is None


def test_a_large_result_becomes_an_envelope(store: FileResultStore) -> None:
    envelope = results.externalize(BIG, execution_id=7, step="big", threshold=1024)
    assert set(envelope) == {"status", "count", "_ref", "_size_bytes", "_preview", "_store"}
    assert (envelope["status"], envelope["count"], envelope["_store"]) == ("success", 500, "file")
    ref = envelope["_ref"]
    assert ref["kind"] == "result_ref" and ref["store"] == "file"
    assert ref["ref"].startswith("noetl://execution/7/result/big/")
    assert ref["bytes"] == envelope["_size_bytes"] > 1024
    assert len(envelope["_preview"]) <= results.PREVIEW_CHARS
    assert json.loads(gzip.decompress(next(store.root.rglob("*.json.gz")).read_bytes())) == BIG
    assert results.is_envelope(envelope)
    assert results.hydrate(envelope) == {**BIG, "_ref": ref}
    assert results.externalize(envelope, execution_id=7, step="big", threshold=1) is envelope


def test_select_keeps_only_the_chosen_fields_and_force_stores_small_data() -> None:
    envelope = results.externalize(BIG, execution_id=1, step="s", select=["count", "items"], force=True)
    assert envelope["count"] == 500 and envelope["items"] == BIG["items"]
    assert "status" not in envelope
    forced = results.externalize([1, 2, 3], execution_id=1, step="s", force=True)
    assert results.hydrate(forced) == [1, 2, 3]


def test_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_RESULT_INLINE_MAX_BYTES", "100")
    assert results.is_envelope(results.externalize(BIG, execution_id=1, step="s"))
    monkeypatch.setenv("NOETL_RESULT_INLINE_MAX_BYTES", str(10**9))
    assert results.externalize(BIG, execution_id=1, step="s") is BIG


def test_artifact_get_accepts_an_envelope_a_ref_or_a_uri() -> None:
    envelope = results.externalize(BIG, execution_id=7, step="big", threshold=10)
    ref = envelope["_ref"]
    for given in (
        {"input": {"result_ref": ref}},
        {"args": {"result_ref": envelope}},
        {"uri": ref["ref"]},
        {"result_ref": ref["ref"]},
    ):
        got = artifact({"action": "get", **given})
        assert got.status == "success", (given, got.error)
        assert got.data == {"status": "success", "data": BIG, "uri": ref["ref"], "size_bytes": ref["bytes"]}


def test_artifact_put_into_the_store_then_get() -> None:
    put = artifact({"action": "put", "data": {"k": [1, 2]}})
    assert put.status == "success", put.error
    assert put.data["result_ref"]["ref"].startswith("noetl://execution/42/result/art/")
    assert put.data["uri"] == put.data["result_ref"]["ref"]
    assert put.data["size_bytes"] == len(b'{"k":[1,2]}')
    got = artifact({"input": {"result_ref": put.data["result_ref"]}})
    assert got.data["data"] == {"k": [1, 2]}


def test_artifact_put_to_a_file_relative_to_the_playbook(tmp_path: Path) -> None:
    put = artifact(
        {"action": "put", "input": {"data": [1, "two"], "uri": "out/a.json.gz"}}, base_path=tmp_path
    )
    assert put.status == "success", put.error
    path = tmp_path / "out" / "a.json.gz"
    assert json.loads(gzip.decompress(path.read_bytes())) == [1, "two"]
    assert put.data["uri"] == path.resolve().as_uri()
    plain = artifact({"action": "put", "data": "text", "uri": str(tmp_path / "b.json")})
    assert (tmp_path / "b.json").read_text() == '"text"'
    assert artifact({"uri": plain.data["uri"]}).data["data"] == "text"
    assert artifact({"uri": "out/a.json.gz"}, base_path=tmp_path).data["data"] == [1, "two"]


def test_artifact_errors_are_clear(store: FileResultStore) -> None:
    missing = artifact({"input": {"result_ref": "noetl://execution/1/result/s/nope"}})
    assert (missing.status, missing.failure_kind) == ("error", "not_found")
    assert "result noetl://execution/1/result/s/nope not found in the result store" in (missing.error or "")
    nothing = artifact({"action": "get"})
    assert nothing.failure_kind == "tool" and "no reference given" in (nothing.error or "")
    s3 = artifact({"uri": "s3://bucket/key.json"})
    assert "s3:// artifacts are not supported" in (s3.error or "")
    no_data = artifact({"action": "put"})
    assert "'data' is required" in (no_data.error or "")
    bad = artifact({"action": "rotate"})
    assert "action 'rotate' is not supported" in (bad.error or "")
    with pytest.raises(RefError, match="not a result-store reference"):
        store.get("noetl://elsewhere/x")


def test_hydrate_fails_loudly_when_the_data_is_gone(store: FileResultStore) -> None:
    envelope = results.externalize(BIG, execution_id=3, step="gone", threshold=10)
    for path in store.root.rglob("*.json.gz"):
        path.unlink()
    with pytest.raises(RefError, match="not found"):
        results.hydrate(envelope)


def test_artifact_is_a_registered_kind() -> None:
    assert isinstance(get_tool("artifact"), ArtifactTool)


def test_output_policy_reads_the_tool_config() -> None:
    assert results.output_policy({"output_select": ["status", {"path": "count"}]}) == (
        ["status", "count"],
        None,
    )
    assert results.output_policy({"output": {"select": "status", "inline_max_bytes": 1000}}) == (
        ["status"],
        1000,
    )
    assert results.output_policy({"code": "x"}) == (None, None)
    assert results.output_policy(None) == (None, None)
    select, threshold = results.output_policy({"output": {"select": ["status"], "inline_max_bytes": 100}})
    envelope = results.externalize(BIG, execution_id=1, step="s", select=select, threshold=threshold)
    assert envelope["status"] == "success" and "count" not in envelope and "_ref" in envelope
