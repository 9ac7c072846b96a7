"""`make bench`: orchestration overhead, fan-out throughput and scaling, each figure printed with
its target and a met / NOT MET mark (issue 16; bench/README.md says how each is taken).

Local figures are whole `noetl run` processes on a fresh SQLite file (start-up, imports and peak
RSS are real). Distributed figures (servers on PostgreSQL + NATS with workers) come from
bench/distributed.py, the scale-out from bench/scaleout.py, the run-list page from
bench/runs_page.py. Results go to bench/results.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from config import PEERS_RESULTS, RESULTS, ROOT, Plan, plan
from local import NOETL, compile_bytecode, log_growth, noetl_run, paired, watched_run
from playbooks import chain, fanout, million, nested, shell_chain
from report import Row, figure, note, render, rust_shell_per_step, section, summary


def chain_figure(work: Path, one: Path, text: str, name: str, steps: int, pairs: int) -> dict[str, Any]:
    """Per step of a chain: pairs of (1-step run, chain run), and the chain's event log."""
    path = work / f"{name}.yaml"
    path.write_text(text)
    stores: list[Path] = []

    def run_long(i: int) -> Any:
        stores.append(work / f"{name}-{i}.db")
        return noetl_run(path, stores[-1])

    result = paired(lambda i: noetl_run(one, work / f"one-{name}-{i}.db"), run_long, steps, pairs)
    events, size = log_growth(stores[-1])
    return {
        **result.as_dict(),
        "events_per_step": round(events / steps, 2),
        "bytes_per_step": round(size / steps),
    }


def loop_figure(work: Path, n: int, repeat: int) -> dict[str, Any]:
    path = work / f"fanout{n}.yaml"
    path.write_text(fanout(n))
    runs = []
    for i in range(repeat):
        store = work / f"fanout{n}-{i}.db"
        wall, peak, _ = watched_run(
            [*NOETL, "run", str(path), "--json", "--quiet", "--store", f"sqlite:///{store}"]
        )
        runs.append((wall, peak))
    wall = statistics.median(w for w, _ in runs)
    return {
        "wall_seconds": round(wall, 3),
        "items_per_second": round(n / wall),
        "peak_rss_mb": max(p for _, p in runs),
    }


def million_figure(work: Path, n: int) -> dict[str, Any]:
    path = work / "million.yaml"
    path.write_text(million(n))
    store = work / "million.db"
    wall, peak, out = watched_run(
        [*NOETL, "run", str(path), "--json", "--quiet", "--store", f"sqlite:///{store}"]
    )
    outcome = json.loads(out)
    if outcome["status"] != "COMPLETED" or outcome["steps"]["big"]["result"]["results"] != list(range(n)):
        raise SystemExit(f"the {n}-item loop did not complete with its results in order")
    size = sum(p.stat().st_size for p in work.glob("million.db*"))
    return {
        "items": n,
        "wall_seconds": round(wall, 1),
        "items_per_second": round(n / wall),
        "peak_rss_mb": peak,
        "store_mb": round(size / 1024 / 1024, 1),
    }


def nested_figure(work: Path, n: int, repeat: int) -> dict[str, Any]:
    parent_text, child_text = nested(n)
    folder = work / "nested"
    folder.mkdir(exist_ok=True)
    (folder / "child.yaml").write_text(child_text)
    parent = folder / "parent.yaml"
    parent.write_text(parent_text)
    walls = sorted(noetl_run(parent, work / f"nested-{i}.db").wall for i in range(repeat))
    wall = walls[len(walls) // 2]
    return {"items": n, "wall_seconds": round(wall, 3), "children_per_second": round(n / wall, 1)}


def run_local(p: Plan, work: Path) -> dict[str, Any]:
    one = work / "one.yaml"
    one.write_text(chain(1))
    compile_bytecode()
    noetl_run(one, work / "warm-up.db")  # files cached: a user's second run
    r: dict[str, Any] = {}
    r["startup_seconds"] = round(
        statistics.median(noetl_run(one, work / f"startup-{i}.db").wall for i in range(p.startup_runs)), 3
    )
    r["python_chain"] = chain_figure(work, one, chain(p.steps), "chain", p.steps, p.pairs)
    one_shell = work / "one-shell.yaml"
    one_shell.write_text(shell_chain(1))
    r["shell_chain"] = chain_figure(work, one_shell, shell_chain(p.steps), "shchain", p.steps, p.pairs)
    if p.short_steps:
        r["python_chain_short"] = chain_figure(
            work, one, chain(p.short_steps), "short", p.short_steps, p.pairs
        )
    r["loop_small"] = {"items": p.loop_small, **loop_figure(work, p.loop_small, p.repeat)}
    r["loop_big"] = {"items": p.loop_big, **loop_figure(work, p.loop_big, p.repeat)}
    r["loop_ratio"] = round(r["loop_big"]["wall_seconds"] / r["loop_small"]["wall_seconds"], 2)
    r["nested"] = nested_figure(work, p.nested, p.repeat)
    if p.million:
        r["million"] = million_figure(work, p.million)
    return r


def runs_page(p: Plan) -> dict[str, Any] | None:
    """bench/runs_page.py: the run list's first pages with many runs in the store."""
    if os.environ.get("NOETL_BENCH_RUNS_PAGE", "1") == "0":
        return None
    runs = 2000 if p.quick else 100_000
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "runs_page.py"), "--runs", str(runs)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"run-list figure skipped: {proc.stderr[-1000:]}")
        return None
    answer: dict[str, Any] = json.loads(proc.stdout)
    return answer


def local_rows(r: dict[str, Any], p: Plan, rust_shell: float | None) -> list[Row]:
    py, sh = r["python_chain"], r["shell_chain"]
    n = p.steps
    rows = [
        section(
            f"local mode (noetl run, embedded SQLite; per step = (T({n}) - T(1)) / {n - 1}, {p.pairs} pairs)"
        ),
        figure(
            f"start-up: 1-step run, whole process (median of {p.startup_runs})",
            r["startup_seconds"],
            " s",
            "<=",
            0.08,
            3,
        ),
        figure(f"python chain of {n}: per step", py["overhead_ms_per_step"], " ms", "<=", 0.4, 3),
        figure("  CPU per step (process + waited children)", py["cpu_ms_per_step"], " ms", digits=3),
    ]
    if rust_shell is None:
        rows.append(
            Row(
                f"shell chain of {n}: per step",
                f"{sh['overhead_ms_per_step']:.3f} ms",
                "<= Rust CLI",
                "run make bench-peers",
            )
        )
    else:
        rows.append(
            figure(
                f"shell chain of {n}: per step (target: noetl 5.3.2's, bench-peers)",
                sh["overhead_ms_per_step"],
                " ms",
                "<=",
                rust_shell,
                3,
            )
        )
    rows.append(figure("  CPU per step", sh["cpu_ms_per_step"], " ms", digits=3))
    if "python_chain_short" in r:
        rows.append(
            figure(
                "python chain of 40: per step",
                r["python_chain_short"]["overhead_ms_per_step"],
                " ms",
                "<=",
                0.4,
                3,
            )
        )
    return rows + _loop_rows(r, p)


def _loop_rows(r: dict[str, Any], p: Plan) -> list[Row]:
    """The loops, nested playbooks and the event log of the local mode."""
    py = r["python_chain"]
    n = p.steps
    small, big = r["loop_small"], r["loop_big"]
    rows = [
        figure(f"parallel loop of {small['items']:,} items", small["items_per_second"], " items/s", digits=0),
        figure(
            f"parallel loop of {big['items']:,} items", big["items_per_second"], " items/s", ">=", 3000, 0
        ),
        figure(f"{big['items']:,} / {small['items']:,} wall-time ratio", r["loop_ratio"], "", "<=", 12),
        figure(f"peak RSS, {big['items']:,}-item loop", big["peak_rss_mb"], " MB", "<=", 300, 1),
        figure(
            f"{r['nested']['items']} nested playbooks from a loop",
            r["nested"]["children_per_second"],
            " children/s",
            digits=1,
        ),
        Row(
            f"event log per step (chain of {n})",
            f"{py['events_per_step']} events, {py['bytes_per_step']} bytes",
        ),
    ]
    m = r.get("million")
    if m:
        rows += [
            figure(
                f"parallel loop of {m['items']:,} items (no max_in_flight)",
                m["items_per_second"],
                " items/s",
                digits=0,
            ),
            figure("  peak RSS of the runtime process", m["peak_rss_mb"], " MB", "<=", 300, 1),
            figure("  store size", m["store_mb"], " MB", digits=1),
        ]
    return rows


def page_rows(page: dict[str, Any] | None) -> list[Row]:
    if not page:
        return []
    first, *filtered = page["api"]
    slowest = max(q["median_s"] for q in filtered)
    return [
        section(f"run list (GET /api/runs, {page['runs']:,} runs in a SQLite store)"),
        figure("first page of 50 (median of 7)", first["median_s"], " s", "<=", 0.5, 3),
        figure("slowest filtered or deep page (median of 7)", slowest, " s", "<=", 0.5, 3),
    ]


def main() -> None:
    p = plan()
    peers = json.loads(PEERS_RESULTS.read_text()) if PEERS_RESULTS.exists() else None
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "plan": p.__dict__,
    }
    if p.quick:
        print(
            "NOETL_BENCH_QUICK: smaller sizes and fewer runs; the figures are not comparable with the targets"
        )
    with tempfile.TemporaryDirectory(prefix="noetl-bench-") as tmp:
        results["local"] = run_local(p, Path(tmp))
    results["runs_page"] = runs_page(p)
    rows = local_rows(results["local"], p, rust_shell_per_step(peers))
    rows += page_rows(results["runs_page"])
    if p.distributed:
        from distributed import distributed_rows, run_distributed

        results["distributed"] = run_distributed(p)
        rows += distributed_rows(results["distributed"], p)
    if peers is None:
        rows.append(note("no bench/peers-results.json: run make bench-peers for the side-by-side figures"))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(render(rows))
    print("\n" + summary(rows))
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
