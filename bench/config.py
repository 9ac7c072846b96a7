"""What one benchmark run measures: chain lengths, loop sizes and repetitions.

`NOETL_BENCH_QUICK=1` shrinks everything (a smoke test of the tooling in well under a minute
locally; its figures are not comparable with the targets). `NOETL_BENCH_REPEAT` sets the
repetitions of the loops (medians), `NOETL_BENCH_PAIRS` the pairs of whole-process runs behind
each per-step figure, `NOETL_BENCH_MILLION_ITEMS` the size of the big loop (0 skips it),
`NOETL_BENCH_DISTRIBUTED=0` skips the server figures and `NOETL_BENCH_SCALE=0` the scale-out
(`NOETL_BENCH_SCALE_BUDGET`: seconds a 2-server run may take before it is cut off).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
PEERS_RESULTS = ROOT / "bench" / "peers-results.json"
PG = os.environ.get("NOETL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
NATS = os.environ.get("NOETL_BENCH_NATS", "nats://127.0.0.1:4222")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


@dataclass(frozen=True)
class Plan:
    quick: bool
    steps: int  # the long chain (per step = (T(steps) - T(1)) / (steps - 1))
    short_steps: int  # the short chain of the earlier figures (0: skipped)
    pairs: int  # (1-step, chain) pairs of whole-process runs per per-step figure (median)
    startup_runs: int  # 1-step runs behind the start-up median
    repeat: int  # runs of each loop (median)
    loop_small: int
    loop_big: int  # the loop of the items/s targets; the ratio is big / small
    nested: int
    scale_items: int  # the loop of the scale-out figures
    scale_budget: float  # seconds each 2-server run may take before it is cut off
    million: int
    distributed: bool
    scale: bool


def plan() -> Plan:
    quick = os.environ.get("NOETL_BENCH_QUICK", "") not in ("", "0")
    return Plan(
        quick=quick,
        steps=_int("NOETL_BENCH_STEPS", 40 if quick else 400),
        short_steps=0 if quick else 40,
        pairs=_int("NOETL_BENCH_PAIRS", 2 if quick else 7),
        startup_runs=_int("NOETL_BENCH_STARTUP_RUNS", 3 if quick else 7),
        repeat=_int("NOETL_BENCH_REPEAT", 1 if quick else 3),
        loop_small=100 if quick else 1000,
        loop_big=500 if quick else 10000,
        nested=10 if quick else 100,
        scale_items=200 if quick else 10000,
        scale_budget=float(_int("NOETL_BENCH_SCALE_BUDGET", 60 if quick else 300)),
        million=_int("NOETL_BENCH_MILLION_ITEMS", 0 if quick else 1_000_000),
        distributed=os.environ.get("NOETL_BENCH_DISTRIBUTED", "1") != "0",
        scale=os.environ.get("NOETL_BENCH_SCALE", "1") != "0",
    )
