"""Whole-process timing of `noetl run` (local mode, a fresh embedded SQLite file per run), shared
by `make bench` and `make bench-peers`.

Per-step overhead = (T(n steps) - T(1 step)) / (n - 1), where each n-step run is paired with a
1-step run made right before it (the machine's speed drifts; a pair sees one state) and the
figure is the median over the pairs.
"""

from __future__ import annotations

import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import ROOT

NOETL = [sys.executable, "-m", "noetl"]


@dataclass(frozen=True)
class Timed:
    wall: float  # seconds, whole process
    cpu: float  # seconds of user + system CPU of the process and the children it waited for
    out: str


def timed(command: Sequence[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> Timed:
    """Run `command` to its end; SystemExit with its output when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    proc = subprocess.run(list(command), capture_output=True, text=True, cwd=cwd, env=env)
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return Timed(wall, cpu, proc.stdout)


def noetl_run(playbook: Path, store: Path) -> Timed:
    """One `noetl run` of `playbook` on a fresh SQLite file; it must complete."""
    run = timed([*NOETL, "run", str(playbook), "--json", "--quiet", "--store", f"sqlite:///{store}"])
    if json.loads(run.out).get("status") != "COMPLETED":
        raise SystemExit(f"{playbook.name} did not complete: {run.out[-2000:]}")
    return run


def compile_bytecode() -> None:
    """An installed package has bytecode; an editable one under PYTHONDONTWRITEBYTECODE would
    compile every module on every run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True)


@dataclass(frozen=True)
class PerStep:
    steps: int
    per_step_ms: float  # median over the pairs of (T(n) - T(1)) / (n - 1)
    cpu_per_step_ms: float  # the same over CPU seconds
    wall_seconds: float  # median T(n)
    one_step_seconds: float  # median T(1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "overhead_ms_per_step": round(self.per_step_ms, 3),
            "cpu_ms_per_step": round(self.cpu_per_step_ms, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "one_step_seconds": round(self.one_step_seconds, 3),
        }


def per_step(pairs: Sequence[tuple[Timed, Timed]], steps: int) -> PerStep:
    """`pairs` of (1-step run, n-step run)."""
    walls = [(long.wall - one.wall) / (steps - 1) * 1000 for one, long in pairs]
    cpus = [(long.cpu - one.cpu) / (steps - 1) * 1000 for one, long in pairs]
    return PerStep(
        steps=steps,
        per_step_ms=statistics.median(walls),
        cpu_per_step_ms=statistics.median(cpus),
        wall_seconds=statistics.median(long.wall for _, long in pairs),
        one_step_seconds=statistics.median(one.wall for one, _ in pairs),
    )


def paired(
    run_one: Callable[[int], Timed], run_long: Callable[[int], Timed], steps: int, count: int
) -> PerStep:
    pairs = []
    for i in range(count):
        one = run_one(i)
        pairs.append((one, run_long(i)))
    return per_step(pairs, steps)


def log_growth(store: Path) -> tuple[int, int]:
    """(events, bytes of context + meta + result) in a SQLite store."""
    with sqlite3.connect(store) as con:
        count, size = con.execute(
            "SELECT COUNT(*), SUM(LENGTH(COALESCE(context,'')) + LENGTH(COALESCE(meta,''))"
            " + LENGTH(COALESCE(result,''))) FROM event"
        ).fetchone()
    return int(count), int(size or 0)


def peak_rss_mb(pid: int) -> float:
    """A process's peak RSS so far (VmHWM) in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def watched_run(command: list[str], timeout: float = 7200) -> tuple[float, float, str]:
    """Run a command to its end: (wall seconds, peak RSS of that process in MB, stdout). The
    peak is the process's own (VmHWM, sampled by a thread while the process runs), not its
    children's (python steps run in processes of their own)."""
    begin = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peaks = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peaks.append(peak_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - begin
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{out[-2000:]}\n{err[-2000:]}")
    return wall, max(peaks), out
