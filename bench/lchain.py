"""A quick A/B of local mode: per-step cost of a python chain and per-item cost of a loop, for
several source trees, alternated round by round (the machine's speed drifts; each round sees
one state for every tree).

    git worktree add /tmp/old 648127f
    .venv/bin/python bench/lchain.py new=src old=/tmp/old/src --rounds 6

Each `name=path` is a source tree put first on PYTHONPATH of `noetl run` (whole processes on a
fresh SQLite file, as `make bench` runs them). Per step = (T(chain) - T(1 step)) / (steps - 1);
per item = (T(loop) - T(1 step)) / (items - 1); medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playbooks import chain, fanout


def _run(playbook: Path, src: str, work: Path) -> float:
    store = work / "store.db"
    for leftover in work.glob("store.db*"):
        leftover.unlink()
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    command = [sys.executable, "-m", "noetl", "run", str(playbook), "--json", "--quiet"]
    began = time.perf_counter()
    done = subprocess.run(
        [*command, "--store", f"sqlite:///{store}"], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - began
    if '"COMPLETED"' not in done.stdout:
        raise SystemExit(
            f"{playbook.name} with {src} did not complete:\n{done.stdout[-1000:]}{done.stderr[-2000:]}"
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="name=source-tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--loop", type=int, default=3000)
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variants)
    with tempfile.TemporaryDirectory(prefix="noetl-lchain-") as tmp:
        work = Path(tmp)
        books = {"one": chain(1), "chain": chain(args.steps), "loop": fanout(args.loop)}
        paths = {name: work / f"{name}.yaml" for name in books}
        for name, text in books.items():
            paths[name].write_text(text)
        per_step: dict[str, list[float]] = {name: [] for name in variants}
        per_item: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name, src in variants.items():
                one = _run(paths["one"], src, work)
                per_step[name].append((_run(paths["chain"], src, work) - one) / (args.steps - 1))
                per_item[name].append((_run(paths["loop"], src, work) - one) / (args.loop - 1))
                print(
                    f"round {round_} {name}: {per_step[name][-1] * 1e3:.3f} ms/step, {per_item[name][-1] * 1e3:.3f} ms/item"
                )
    for name in variants:
        step, item = statistics.median(per_step[name]), statistics.median(per_item[name])
        print(
            f"{name}: chain of {args.steps} {step * 1e3:.3f} ms per step; "
            f"loop of {args.loop} {item * 1e3:.3f} ms per item ({1 / item:,.0f} items/s)"
        )


if __name__ == "__main__":
    main()
