"""A quick A/B of the distributed hot path: per-step overhead of a chain and items/s of a loop.

    .venv/bin/python bench/dchain.py new=src old=/tmp/dist-old/src --rounds 5

Each `name=path` is a source tree (put first on PYTHONPATH of its server and workers; the
driver itself uses this tree's client). Every variant gets its own cluster (1 server + 1 worker,
own schema and pool, as in `make bench`), all up at once, and the runs alternate between them
round by round so that the machine's drifting speed hits each alike. Per step =
(T(steps) - T(1)) / (steps - 1) from the event log, median over the rounds; then a second
worker per cluster and the loop of `--loop` items, alternated the same way (items/s, median).

Beside each figure, the CPU milliseconds per step (per item) of the server, the workers, the
workers' tool processes (python steps run there) and every PostgreSQL and NATS process on the
machine: steadier than the wall-clock figures on a machine whose load drifts.

`--hold SECONDS` instead keeps the first variant busy with chains for that long and prints the
pids of its server and worker (for py-spy / perf).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from cluster import BenchCluster
from playbooks import chain, fanout

TICKS = os.sysconf("SC_CLK_TCK")


def _cluster(stack: contextlib.ExitStack, src: str, steps: int, loop: int) -> tuple[BenchCluster, str]:
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="noetl-dchain-")))
    c = stack.enter_context(BenchCluster(work))
    c.env["PYTHONPATH"] = str(Path(src).resolve())
    url = c.start_server("s1")
    for n in (1, steps):
        c.register(url, chain(n, f"dchain{n}"))
    c.register(url, fanout(loop, f"dfanout{loop}"))
    c.start_worker("w1", url)
    c.run(url, "bench/dchain1")  # warm-up
    c.run(url, f"bench/dchain{steps}")
    return c, url


def _own_cpu(pid: int) -> float:
    """CPU seconds of a process itself (user and system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _cpu_of(pid: int) -> float:
    """CPU seconds of a process and its reaped children, plus those of its live children."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in fields[11:15]) / TICKS
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _cpu_of(int(child))
    except OSError:
        pass
    return total


def _cpu_named(name: str) -> float:
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == name:
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def _cpu(c: BenchCluster) -> dict[str, float]:
    """CPU seconds so far of the cluster's server and workers, and of every PostgreSQL and NATS
    process on the machine (shared: other users' work counts there too)."""
    workers = [proc.pid for proc in c.workers.values()]
    own = sum(_own_cpu(pid) for pid in workers)
    return {
        "server": sum(_cpu_of(proc.pid) for proc, _ in c.servers.values()),
        "workers": own,
        # The python tool's processes (and whatever else the workers started) apart.
        "tools": sum(_cpu_of(pid) for pid in workers) - own,
        "postgres": _cpu_named("postgres"),
        "nats": _cpu_named("nats-server"),
    }


class Figures:
    """Per variant: the measured values and the CPU per unit of each kind of process."""

    def __init__(self, names: list[str]) -> None:
        self.values: dict[str, list[float]] = {name: [] for name in names}
        self.cpu: dict[str, list[dict[str, float]]] = {name: [] for name in names}

    def add(
        self, name: str, value: float, before: dict[str, float], after: dict[str, float], units: int
    ) -> None:
        self.values[name].append(value)
        self.cpu[name].append({k: (after[k] - before[k]) / units * 1000 for k in before})

    def line(self, name: str, what: str, unit: str) -> str:
        values = ", ".join(f"{x:.2f}" for x in self.values[name])
        cpu = self.cpu[name]
        split = " ".join(f"{k} {statistics.median(c[k] for c in cpu):.2f}" for k in cpu[0])
        total = statistics.median(sum(c.values()) for c in cpu)
        return (
            f"{name}: {what} median {statistics.median(self.values[name]):.2f} {unit} [{values}];"
            f" CPU ms per unit: {split} (sum {total:.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="+", help="name=source-tree")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--loop", type=int, default=2000)
    ap.add_argument("--loop-rounds", type=int, default=3)
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("--timeline", action="store_true", help="the gaps between a step's events")
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variants]
    with contextlib.ExitStack() as stack:
        clusters = {name: _cluster(stack, src, args.steps, args.loop) for name, src in variants}
        if args.timeline:
            for name, (c, url) in clusters.items():
                _timeline(name, c, url, args.steps)
            return
        if args.hold:
            _hold(*clusters[variants[0][0]], args.steps, args.hold)
            return
        chains = _chains(clusters, args.rounds, args.steps)
        loops = _loops(clusters, args.loop_rounds, args.loop) if args.loop_rounds else None
        for name in clusters:
            print(chains.line(name, f"chain {args.steps} per step", "ms"))
            if loops is not None:
                print(loops.line(name, f"loop {args.loop}", "items/s"))


def _chains(clusters: dict[str, tuple[BenchCluster, str]], rounds: int, steps: int) -> Figures:
    """Per step = (T(steps) - T(1)) / (steps - 1); CPU per step of the long chain."""
    figures = Figures(list(clusters))
    for r in range(rounds):
        for name in list(clusters) if r % 2 == 0 else list(reversed(clusters)):
            c, url = clusters[name]
            base, _ = c.run(url, "bench/dchain1")
            before = _cpu(c)
            seconds, _ = c.run(url, f"bench/dchain{steps}")
            per_step = (seconds - base) / (steps - 1) * 1000
            figures.add(name, per_step, before, _cpu(c), steps)
            print(f"round {r} {name}: {per_step:.2f} ms/step", flush=True)
    return figures


def _loops(clusters: dict[str, tuple[BenchCluster, str]], rounds: int, items: int) -> Figures:
    """A second worker per cluster, then the loop: items/s; CPU per item."""
    figures = Figures(list(clusters))
    for c, url in clusters.values():
        c.start_worker("w2", url)
    for r in range(rounds):
        for name in list(clusters) if r % 2 == 0 else list(reversed(clusters)):
            c, url = clusters[name]
            before = _cpu(c)
            seconds, _ = c.run(url, f"bench/dfanout{items}")
            figures.add(name, items / seconds, before, _cpu(c), items)
            print(f"loop {r} {name}: {items / seconds:.0f} items/s", flush=True)
    return figures


def _timeline(name: str, c: BenchCluster, url: str, steps: int) -> None:
    """The mean gap (ms) before each kind of event of a chain, by (previous kind, kind) in the
    log's order; created_at is each event's writer's clock (worker or server), in ms."""
    seconds, execution_id = c.run(url, f"bench/dchain{steps}")
    rows = c.query(
        "SELECT event_type, created_at FROM {schema}.event WHERE execution_id = %s ORDER BY event_id",
        execution_id,
    )
    gaps: dict[tuple[str, str], list[float]] = {}
    for (kind0, t0), (kind1, t1) in itertools.pairwise(rows):
        gaps.setdefault((kind0, kind1), []).append((t1 - t0).total_seconds() * 1000)
    print(f"{name}: {seconds / steps * 1000:.2f} ms/step, {len(rows) / steps:.1f} events/step")
    for (kind0, kind1), values in sorted(gaps.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {kind0:>22} -> {kind1:<22} n={len(values):4d} mean {statistics.mean(values):.2f} ms")


def _hold(c: BenchCluster, url: str, steps: int, seconds: float) -> None:
    server = c.servers["s1"][0].pid
    worker = c.workers["w1"].pid
    print(f"server pid {server} worker pid {worker}", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        took, _ = c.run(url, f"bench/dchain{steps}")
        print(f"chain {steps}: {took / steps * 1000:.2f} ms/step", flush=True)


if __name__ == "__main__":
    main()
