"""A quick A/B of the distributed hot path: per-step overhead of a chain and items/s of a loop.

    .venv/bin/python bench/dchain.py new=src old=/tmp/dist-old/src --rounds 5

Each `name=path` is a source tree (put first on PYTHONPATH of its server and workers; the
driver itself uses this tree's client). Every variant gets its own cluster (1 server + 1 worker,
own schema and pool, as in `make bench`), all up at once, and the runs alternate between them
round by round so that the machine's drifting speed hits each alike. Per step =
(T(steps) - T(1)) / (steps - 1) from the event log, median over the rounds; then a second
worker per cluster and the loop of `--loop` items, alternated the same way (items/s, median).

`--hold SECONDS` instead keeps the first variant busy with chains for that long and prints the
pids of its server and worker (for py-spy / perf).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from cluster import BenchCluster
from playbooks import chain, fanout


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
        per_step: dict[str, list[float]] = {name: [] for name in clusters}
        for r in range(args.rounds):
            order = list(clusters) if r % 2 == 0 else list(reversed(clusters))
            for name in order:
                c, url = clusters[name]
                base, _ = c.run(url, "bench/dchain1")
                seconds, _ = c.run(url, f"bench/dchain{args.steps}")
                per_step[name].append((seconds - base) / (args.steps - 1) * 1000)
                print(f"round {r} {name}: {per_step[name][-1]:.2f} ms/step", flush=True)
        rates: dict[str, list[float]] = {name: [] for name in clusters}
        if args.loop_rounds:
            for c, url in clusters.values():
                c.start_worker("w2", url)
            for r in range(args.loop_rounds):
                order = list(clusters) if r % 2 == 0 else list(reversed(clusters))
                for name in order:
                    c, url = clusters[name]
                    seconds, _ = c.run(url, f"bench/dfanout{args.loop}")
                    rates[name].append(args.loop / seconds)
                    print(f"loop {r} {name}: {rates[name][-1]:.0f} items/s", flush=True)
        for name in clusters:
            steps = ", ".join(f"{x:.2f}" for x in per_step[name])
            loops = ", ".join(f"{x:.0f}" for x in rates[name])
            print(
                f"{name}: chain {args.steps} per step median {statistics.median(per_step[name]):.2f} ms"
                f" [{steps}]"
                + (
                    f"; loop {args.loop} median {statistics.median(rates[name]):.0f} items/s [{loops}]"
                    if loops
                    else ""
                )
            )


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
