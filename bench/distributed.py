"""Distributed figures for `make bench`: servers on PostgreSQL with NATS JetStream.

One server and one worker for the sequential chains (per step = (T(n) - T(1)) / (n - 1) from the
executions' own event logs, paired runs, median); two workers for the loops and nested
playbooks; then the scale-out: the same loop with 1, 2 and 4 workers on one server, and with 2
servers + 4 workers (2 on each) on one PostgreSQL store. Skipped with a message when PostgreSQL
(5432) or NATS (4222) is down.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from cluster import BenchCluster, port_open
from config import Plan
from playbooks import chain, fanout, million, nested
from report import Row, figure, note, section


def _loop(c: BenchCluster, url: str, items: int, repeat: int) -> dict[str, Any]:
    durations = [c.run(url, f"bench/dfanout{items}")[0] for _ in range(repeat)]
    seconds = statistics.median(durations)
    return {"items": items, "seconds": round(seconds, 3), "items_per_second": round(items / seconds)}


def _chain(c: BenchCluster, url: str, steps: int, pairs: int) -> dict[str, Any]:
    runs = []
    for _ in range(pairs):
        base, _ = c.run(url, "bench/dchain1")
        seconds, execution_id = c.run(url, f"bench/dchain{steps}")
        runs.append((seconds, base, execution_id))
    per_step = statistics.median((s - b) / (steps - 1) * 1000 for s, b, _ in runs)
    seconds, _, execution_id = sorted(runs)[len(runs) // 2]
    return {
        "steps": steps,
        "seconds": round(seconds, 3),
        "overhead_ms_per_step": round(per_step, 3),
        **c.growth(execution_id, steps),
    }


def _million(c: BenchCluster, url: str, n: int) -> dict[str, Any]:
    before = c.server_peak_rss_mb("s1")
    seconds, execution_id = c.run(url, "bench/dmillion")
    with c.client(url) as client:
        ordered = client.status(execution_id).get("steps", {}).get("big", {}).get("result", {})
    if ordered.get("results") != list(range(n)):
        raise SystemExit("the distributed million-item loop's results are not in order")
    row = c.query(
        "SELECT sum(pg_column_size(e.*)) FROM {schema}.event e WHERE execution_id = %s", execution_id
    )
    return {
        "items": n,
        "wall_seconds": round(seconds, 1),
        "items_per_second": round(n / seconds),
        "server_peak_rss_mb": max(before, c.server_peak_rss_mb("s1")),
        "store_mb": round(int(row[0][0] or 0) / 1024 / 1024, 1),
    }


def _register_all(c: BenchCluster, url: str, p: Plan) -> None:
    for n in {1, p.steps, p.short_steps} - {0}:
        c.register(url, chain(n, f"dchain{n}"))
    for n in {p.loop_small, p.loop_big, p.scale_items}:
        c.register(url, fanout(n, f"dfanout{n}"))
    parent, child = nested(p.nested, f"dnested{p.nested}")
    c.register(url, child)
    c.register(url, parent)
    if p.million:
        c.register(url, million(p.million, "dmillion"))


def run_distributed(p: Plan) -> dict[str, Any]:
    if not (port_open(5432) and port_open(4222)):
        print("distributed figures skipped: PostgreSQL (5432) and NATS (4222) must be running")
        return {}
    r: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="noetl-dbench-") as tmp, BenchCluster(Path(tmp)) as c:
        url = c.start_server("s1")
        _register_all(c, url, p)
        c.start_worker("bench-w1", url)  # the chains: one server, one worker
        c.run(url, "bench/dchain1")  # warm-up: the server's caches, the worker's imports
        r["chain"] = _chain(c, url, p.steps, p.pairs)
        if p.short_steps:
            r["chain_short"] = _chain(c, url, p.short_steps, p.pairs)
        scale: dict[str, Any] = {}
        if p.scale:
            scale["1 server, 1 worker"] = _loop(c, url, p.scale_items, p.repeat)
        c.start_worker("bench-w2", url)  # loops and nested playbooks: two workers
        r["loop_small"] = _loop(c, url, p.loop_small, p.repeat)
        r["loop_big"] = _loop(c, url, p.loop_big, p.repeat)
        r["loop_ratio"] = round(r["loop_big"]["seconds"] / r["loop_small"]["seconds"], 2)
        r["server_peak_rss_mb"] = c.server_peak_rss_mb("s1")
        seconds = statistics.median(c.run(url, f"bench/dnested{p.nested}")[0] for _ in range(p.repeat))
        r["nested"] = {
            "items": p.nested,
            "seconds": round(seconds, 3),
            "children_per_second": round(p.nested / seconds, 1),
        }
        if p.million:
            r["million"] = _million(c, url, p.million)
        if p.scale:
            same = r["loop_big"] if p.loop_big == p.scale_items else None  # already measured
            scale.update(_scale_out(c, url, p, same))
            r["scale"] = scale
    return r


def _scale_out(c: BenchCluster, url: str, p: Plan, two: dict[str, Any] | None) -> dict[str, Any]:
    """With two workers on s1 already: 2 and 4 workers on s1, then 2 servers with 2 workers each
    (one execution started on s1 and served by both; and two at once, one started on each)."""
    out: dict[str, Any] = {
        "1 server, 2 workers": two if two is not None else _loop(c, url, p.scale_items, p.repeat)
    }
    c.start_worker("bench-w3", url)
    c.start_worker("bench-w4", url)
    out["1 server, 4 workers"] = _loop(c, url, p.scale_items, p.repeat)
    c.stop_worker("bench-w3")
    c.stop_worker("bench-w4")
    second = c.start_server("s2")
    c.start_worker("bench-w5", second)
    c.start_worker("bench-w6", second)
    c.run(second, "bench/dchain1")  # warm-up of s2 (its caches)
    path = f"bench/dfanout{p.scale_items}"
    # One run each, within a time budget: an execution served by two servers can be slow enough
    # to stall the whole benchmark (bench/README.md).
    for name, starts in (
        ("2 servers, 4 workers, one execution", [(url, path)]),
        ("2 servers, 4 workers, two executions", [(url, path), (second, path)]),
    ):
        run = c.bounded(starts, p.scale_budget)
        out[name] = {**run, "items_per_second": round(run["items"] / run["seconds"]) if run["seconds"] else 0}
    return out


def distributed_rows(d: dict[str, Any], p: Plan) -> list[Row]:
    if not d:
        return [section("distributed"), note("skipped: PostgreSQL and NATS must be running")]
    ch, small, big = d["chain"], d["loop_small"], d["loop_big"]
    rows = [
        section("distributed (1 server on PostgreSQL + NATS; durations from the event log)"),
        figure(
            f"chain of {ch['steps']}, 1 worker: per step ({p.pairs} pairs)",
            ch["overhead_ms_per_step"],
            " ms",
            "<=",
            1.5,
            3,
        ),
    ]
    if "chain_short" in d:
        rows.append(
            figure(
                "chain of 40, 1 worker: per step",
                d["chain_short"]["overhead_ms_per_step"],
                " ms",
                "<=",
                1.5,
                3,
            )
        )
    rows += [
        figure(
            f"parallel loop of {small['items']:,} items, 2 workers",
            small["items_per_second"],
            " items/s",
            digits=0,
        ),
        figure(
            f"parallel loop of {big['items']:,} items, 2 workers",
            big["items_per_second"],
            " items/s",
            ">=",
            4000,
            0,
        ),
        figure(f"{big['items']:,} / {small['items']:,} time ratio", d["loop_ratio"], "", "<=", 11),
        figure(
            f"peak RSS of the server after the {big['items']:,}-item loop",
            d["server_peak_rss_mb"],
            " MB",
            digits=1,
        ),
        figure(
            f"{d['nested']['items']} nested playbooks from a loop, 2 workers",
            d["nested"]["children_per_second"],
            " children/s",
            digits=1,
        ),
        Row(
            f"event log per step (chain of {ch['steps']})",
            f"{ch['events_per_step']} events, {ch['bytes_per_step']} bytes",
        ),
    ]
    return rows + _million_rows(d.get("million")) + _scale_rows(d.get("scale"), p)


def _million_rows(m: dict[str, Any] | None) -> list[Row]:
    rows: list[Row] = []
    if m:
        rows += [
            figure(
                f"parallel loop of {m['items']:,} items, 2 workers",
                m["items_per_second"],
                " items/s",
                digits=0,
            ),
            figure("  peak RSS of the server", m["server_peak_rss_mb"], " MB", "<=", 300, 1),
            figure("  store size (the run's events)", m["store_mb"], " MB", digits=1),
        ]
    return rows


def _scale_rows(scale: dict[str, Any] | None, p: Plan) -> list[Row]:
    rows: list[Row] = []
    if scale:
        rows.append(section(f"scale out ({p.scale_items:,}-item loop, items/s; one PostgreSQL, one NATS)"))
        for name, s in scale.items():
            cut = (
                ""
                if s.get("finished", True)
                else f" (cut off after {s['seconds']:.0f} s: {s['items']:,} items done)"
            )
            rows.append(figure(name + cut, s["items_per_second"], " items/s", digits=0))
        one = scale["1 server, 1 worker"]["items_per_second"]
        rows.append(
            Row(
                "growth 1 -> 2 -> 4 workers (one server)",
                " -> ".join(
                    f"{scale[k]['items_per_second'] / one:.2f}x"
                    for k in ("1 server, 1 worker", "1 server, 2 workers", "1 server, 4 workers")
                ),
            )
        )
        rows.append(
            note(
                "every process shares the machine's cores: on 2 cores this measures the overhead of more "
                "workers and servers, not added capacity"
            )
        )
    return rows
