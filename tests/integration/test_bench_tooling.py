"""The benchmark tooling (bench/): its smallest real piece and its verdicts. No timing is asserted:
figures are `make bench`'s business, this only proves the tooling measures and judges."""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = ("config", "local", "playbooks", "report")


@pytest.fixture
def bench() -> Iterator[dict[str, ModuleType]]:
    """bench/'s modules (imported as the scripts import each other), removed afterwards."""
    saved = {name: sys.modules.pop(name) for name in MODULES if name in sys.modules}
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in MODULES}
    finally:
        sys.path.remove(str(BENCH))
        for name in MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def test_marks_follow_the_direction_of_each_target(bench: dict[str, ModuleType]) -> None:
    report = bench["report"]
    assert report.figure("start-up", 0.07, " s", "<=", 0.08).mark == report.MET
    assert report.figure("start-up", 0.16, " s", "<=", 0.08).mark == report.NOT_MET
    assert report.figure("items/s", 4100, "", ">=", 4000).mark == report.MET
    assert report.figure("items/s", 1903, "", ">=", 4000).mark == report.NOT_MET
    assert report.figure("no figure", None, " ms", "<=", 1.5).mark == report.NO_FIGURE
    rows = [report.figure("a", 1.0, " ms", "<=", 2), report.figure("b", 3.0, " ms", "<=", 2)]
    assert report.summary(rows) == "targets met: 1 of 2; not met: b"


def test_the_shell_target_is_the_rust_cli_figure_of_a_peers_run(bench: dict[str, ModuleType]) -> None:
    report = bench["report"]
    peers = {"systems": {"noetl_5_3_2": {"chain": {"overhead_ms_per_step": 1.59}}}}
    assert report.rust_shell_per_step(peers) == 1.59
    assert report.rust_shell_per_step(None) is None
    assert report.rust_shell_per_step({"systems": {"noetl_5_3_2": {"error": "not installed"}}}) is None


def test_quick_mode_shrinks_the_run(bench: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOETL_BENCH_QUICK", "1")
    monkeypatch.delenv("NOETL_BENCH_MILLION_ITEMS", raising=False)
    quick = bench["config"].plan()
    monkeypatch.delenv("NOETL_BENCH_QUICK")
    full = bench["config"].plan()
    assert quick.quick and not full.quick
    assert (quick.steps, quick.million) == (40, 0)
    assert (full.steps, full.pairs, full.startup_runs, full.loop_big) == (400, 7, 7, 10000)


def test_the_smallest_measurement_runs_both_chains_step_by_step(
    bench: dict[str, ModuleType], tmp_path: Path
) -> None:
    """The quick mode's smallest piece: a (1-step, 3-step) pair of whole `noetl run` processes for
    the python chain, and the shell chain every peer runs, each of whose steps leaves a mark."""
    local, playbooks = bench["local"], bench["playbooks"]
    one, three = tmp_path / "one.yaml", tmp_path / "three.yaml"
    one.write_text(playbooks.chain(1))
    three.write_text(playbooks.chain(3))
    figure = local.paired(
        lambda i: local.noetl_run(one, tmp_path / f"one-{i}.db"),
        lambda i: local.noetl_run(three, tmp_path / f"three-{i}.db"),
        3,
        1,
    )
    assert figure.steps == 3 and math.isfinite(figure.per_step_ms) and figure.wall_seconds > 0
    events, size = local.log_growth(tmp_path / "three-0.db")
    assert events >= 3 * 3 and size > 0  # at least issued, claimed and completed per step

    marker = tmp_path / "marks"
    shell = tmp_path / "shell.yaml"
    shell.write_text(playbooks.shell_chain(4, marker=str(marker)))
    run = local.noetl_run(shell, tmp_path / "shell.db")
    assert json.loads(run.out)["status"] == "COMPLETED"
    assert marker.read_text() == "x\n" * 4
