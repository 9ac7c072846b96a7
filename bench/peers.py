"""`make bench-peers`: this project side by side with its peers, measured in one run.

Installs the peers in a virtual environment of their own (bench/.peers-venv: `noetl==5.3.2`,
the upstream Rust-backed CLI, run with `--runtime local`; and `dbos` 3.4.x, on SQLite and on
PostgreSQL), then takes every figure of each system in the same rounds: round i runs a 1-step
and an n-step chain of each system in turn, so all of them see the same machine state. Figures
are whole-process wall times; per step = (T(n) - T(1)) / (n - 1), median over the rounds;
the 1-step run's figure is the median of its runs. Nothing is copied from elsewhere: a peer
that cannot be installed or run is reported with the reason and left out.

Writes bench/peers-results.json (make bench reads the Rust CLI's shell figure from it).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config import PEERS_RESULTS, PG, ROOT, plan
from local import Timed, compile_bytecode, noetl_run, per_step, timed
from playbooks import chain, shell_chain
from report import NOT_MET, Row, figure, render

VENV = ROOT / "bench" / ".peers-venv"
VPY = VENV / "bin" / "python"
PEERS = {"noetl": "noetl==5.3.2", "dbos": "dbos>=3.4,<3.5"}
DBOS_DRIVER = ROOT / "bench" / "peers_dbos.py"


def installed(package: str) -> str | None:
    """The version of `package` in the peers' environment, None when it is not there."""
    if not VPY.exists():
        return None
    probe = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    proc = subprocess.run([str(VPY), "-c", probe, package], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def install() -> tuple[dict[str, str], dict[str, str]]:
    """({package: version} installed, {package: why not})."""
    missing: dict[str, str] = {}
    if not VPY.exists():
        base = os.environ.get("PY", "python3")
        proc = subprocess.run([base, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if proc.returncode != 0:
            return {}, {name: f"cannot create {VENV}: {proc.stderr.strip()[-500:]}" for name in PEERS}
    versions: dict[str, str] = {}
    for name, spec in PEERS.items():
        have = installed(name)
        if (
            have is None
            or (name == "noetl" and have != "5.3.2")
            or (name == "dbos" and not have.startswith("3.4."))
        ):
            print(f"installing {spec} into {VENV.relative_to(ROOT)} ...", flush=True)
            proc = subprocess.run(
                [str(VPY), "-m", "pip", "install", "-q", spec], capture_output=True, text=True
            )
            if proc.returncode != 0:
                errors = [
                    line for line in proc.stderr.splitlines() if "ERROR" in line
                ] or proc.stderr.splitlines()
                missing[name] = f"pip install {spec} failed: " + " | ".join(errors[-3:])
                continue
            have = installed(name)
        if have is None:
            missing.setdefault(name, f"{spec} is not importable after installing it")
        else:
            versions[name] = have
    return versions, missing


@dataclass
class System:
    key: str
    label: str
    step: str  # what one step is
    run: Callable[[int, int], Timed]  # (steps, round) -> one whole-process run
    check: Callable[[int, Timed], None]  # raises SystemExit when a run did not do its work
    ones: list[Timed] = field(default_factory=list)
    pairs: list[tuple[Timed, Timed]] = field(default_factory=list)
    error: str = ""


def _ours(work: Path, text: Callable[[int], str], key: str, label: str, step: str) -> System:
    def run(steps: int, i: int) -> Timed:
        path = work / f"{key}-{steps}.yaml"
        if not path.exists():
            path.write_text(text(steps))
        return noetl_run(path, work / f"{key}-{steps}-{i}.db")

    return System(key, label, step, run, lambda steps, t: None)


def _rust(work: Path) -> System:
    """noetl 5.3.2's local runtime (the Rust interpreter, no store). It ignores `command` and
    skips unknown tools without failing, so a marker run first proves each step ran."""
    folder = work / "rust"
    folder.mkdir()
    cli = str(VENV / "bin" / "noetl")

    def run(steps: int, i: int) -> Timed:
        path = folder / f"shchain-{steps}.yaml"
        if not path.exists():
            path.write_text(shell_chain(steps))
        return timed([cli, "run", str(path), "--runtime", "local"], cwd=folder)

    def check(steps: int, _: Timed) -> None:
        marker = folder / f"marker-{steps}"
        path = folder / f"marked-{steps}.yaml"
        path.write_text(shell_chain(steps, marker=str(marker)))
        timed([cli, "run", str(path), "--runtime", "local"], cwd=folder)
        lines = marker.read_text().count("\n") if marker.exists() else 0
        if lines != steps:
            raise SystemExit(f"noetl 5.3.2 ran {lines} of the {steps} shell steps")

    return System("noetl_5_3_2", "noetl 5.3.2 (Rust, local, in-memory)", "shell step", run, check)


def _dbos(work: Path, key: str, label: str, url: Callable[[int, int], str], schema: str) -> System:
    def run(steps: int, i: int) -> Timed:
        return timed([str(VPY), str(DBOS_DRIVER), url(steps, i), schema, str(steps)], cwd=work)

    def check(steps: int, t: Timed) -> None:
        answer = json.loads(t.out.strip().splitlines()[-1])
        if answer["result"] != sum(range(steps)):
            raise SystemExit(f"{label}: the workflow returned {answer['result']}")

    return System(key, label, "python step", run, check)


def systems(work: Path, missing: dict[str, str], schema: str) -> list[System]:
    found = [
        _ours(work, chain, "ours_python", "this project (python step)", "python step"),
        _ours(work, shell_chain, "ours_shell", "this project (shell step)", "shell step"),
    ]
    if "noetl" not in missing:
        found.append(_rust(work))
    if "dbos" not in missing:
        # A fresh SQLite file per run, as for this project; one PostgreSQL schema for all runs
        # (created by the warm-up run: a user's second run).
        sqlite = work / "dbos"
        sqlite.mkdir()
        found.append(
            _dbos(
                work,
                "dbos_sqlite",
                "DBOS 3.4 (SQLite)",
                lambda n, i: f"sqlite:///{sqlite}/{n}-{i}.sqlite",
                "",
            )
        )
        found.append(_dbos(work, "dbos_postgres", "DBOS 3.4 (PostgreSQL)", lambda n, i: PG, schema))
    return found


def measure(found: list[System], steps: int, rounds: int) -> None:
    for s in found:  # warm-up (files cached, bytecode, schemas) and a check that each does its work
        try:
            s.check(1, s.run(1, -1))
            s.check(steps, s.run(steps, -2))
        except SystemExit as exc:
            s.error = str(exc)[-600:]
            print(f"{s.label}: left out: {s.error}", flush=True)
    live = [s for s in found if not s.error]
    for i in range(rounds):
        print(f"round {i + 1} of {rounds}", flush=True)
        for s in live:
            one = s.run(1, i)
            s.pairs.append((one, s.run(steps, i)))


def summarise(s: System, steps: int) -> dict[str, Any]:
    if s.error or not s.pairs:
        return {"label": s.label, "error": s.error or "not measured"}
    result: dict[str, Any] = {
        "label": s.label,
        "step": s.step,
        "chain": per_step(s.pairs, steps).as_dict(),
        "startup_seconds": round(statistics.median(one.wall for one, _ in s.pairs), 3),
    }
    if s.key.startswith("dbos"):  # the workflow call alone, as DBOS times it in its process
        inner = [
            (
                json.loads(long.out.splitlines()[-1])["workflow"]
                - json.loads(one.out.splitlines()[-1])["workflow"]
            )
            / (steps - 1)
            * 1000
            for one, long in s.pairs
        ]
        result["in_process_ms_per_step"] = round(statistics.median(inner), 3)
    return result


def _cell(data: dict[str, Any], *path: str) -> float | None:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def table(results: dict[str, Any]) -> str:
    sy = results["systems"]
    ours_py, ours_sh = sy["ours_python"], sy["ours_shell"]
    peers = [k for k in ("noetl_5_3_2", "dbos_sqlite", "dbos_postgres") if k in sy]
    head = ["", "this project", *(sy[k]["label"] for k in peers)]

    def line(
        label: str, ours: float | None, *path: str, unit: str, digits: int = 2, only: tuple[str, ...] = ()
    ) -> list[list[str]]:
        values = [(_cell(sy[k], *path) if not only or k in only else None) for k in peers]
        show = [f"{v:.{digits}f} {unit}" if v is not None else "" for v in values]
        mine = f"{ours:.{digits}f} {unit}" if ours is not None else "-"
        ratios = [f"{ours / v:.2f}" if ours is not None and v else "" for v in values]
        return [[label, mine, *show], ["  ratio this project / peer", "", *ratios]]

    n = results["steps"]
    rows = [head]
    rows += line(
        f"per step, no-op (chain of {n})",
        _cell(ours_py, "chain", "overhead_ms_per_step"),
        "chain",
        "overhead_ms_per_step",
        unit="ms",
    )
    rows += line(
        "shell step chain, per step",
        _cell(ours_sh, "chain", "overhead_ms_per_step"),
        "chain",
        "overhead_ms_per_step",
        unit="ms",
        only=("noetl_5_3_2",),
    )
    rows += line(
        "1-step run, whole process", _cell(ours_py, "startup_seconds"), "startup_seconds", unit="s", digits=3
    )
    rows += line(
        "CPU per step, no-op",
        _cell(ours_py, "chain", "cpu_ms_per_step"),
        "chain",
        "cpu_ms_per_step",
        unit="ms",
    )
    rows.append(
        [
            "DBOS workflow call alone, per step",
            "",
            *(
                f"{sy[k]['in_process_ms_per_step']:.2f} ms" if "in_process_ms_per_step" in sy[k] else ""
                for k in peers
            ),
        ]
    )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    text = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + " |" for r in rows]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def target_rows(results: dict[str, Any]) -> list[Row]:
    sy = results["systems"]
    rust = _cell(sy.get("noetl_5_3_2", {}), "chain", "overhead_ms_per_step")
    shell = _cell(sy["ours_shell"], "chain", "overhead_ms_per_step")
    rows = [
        figure(
            "start-up: 1-step run, whole process",
            _cell(sy["ours_python"], "startup_seconds"),
            " s",
            "<=",
            0.08,
            3,
        ),
        figure(
            "python chain: per step",
            _cell(sy["ours_python"], "chain", "overhead_ms_per_step"),
            " ms",
            "<=",
            0.4,
            3,
        ),
    ]
    if rust is None:
        rows.append(
            Row(
                "shell chain: per step",
                f"{shell:.3f} ms" if shell is not None else "-",
                "<= Rust CLI",
                "no noetl 5.3.2 figure",
            )
        )
    else:
        rows.append(
            figure("shell chain: per step (target: noetl 5.3.2's)", shell, " ms", "<=", round(rust, 3), 3)
        )
    return rows


def main() -> None:
    p = plan()
    versions, missing = install()
    for name, why in missing.items():
        print(f"peer {name} unavailable: {why}")
    schema = "dbos_bench_" + uuid.uuid4().hex[:8]
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="noetl-peers-") as tmp:
        found = systems(Path(tmp), missing, schema)
        try:
            measure(found, p.steps, p.pairs)
        finally:
            if "dbos" not in missing:
                import psycopg

                with psycopg.connect(PG, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "steps": p.steps,
        "rounds": p.pairs,
        "versions": versions,
        "unavailable": {**missing, **{s.key: s.error for s in found if s.error}},
        "systems": {s.key: summarise(s, p.steps) for s in found},
    }
    PEERS_RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nside by side, one run ({p.pairs} rounds; per step = (T({p.steps}) - T(1)) / {p.steps - 1}, "
        "whole processes, medians):\n"
    )
    print(
        "no-op step: this project a python step (durable, SQLite), noetl 5.3.2 a shell step (`:`),"
        " DBOS a @DBOS.step\n"
    )
    print(table(results))
    for name, why in results["unavailable"].items():
        print(f"  {name}: not measured: {why}")
    rows = target_rows(results)
    print("\n" + render(rows))
    missed = [r.label for r in rows if r.mark == NOT_MET]
    print(
        f"\ntargets met: {sum(r.mark == 'met' for r in rows)} of {len(rows)}"
        + (f"; not met: {'; '.join(missed)}" if missed else "")
    )
    print(f"written to {PEERS_RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
