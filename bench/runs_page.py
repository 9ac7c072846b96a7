"""How fast the run list answers with 100,000 runs in the store (issue 13's acceptance figure:
the first page in under 0.5 s). Not part of `make test` (timings are no unit test).

    .venv/bin/python bench/runs_page.py [--runs 100000] [--store URL] [--browser]

Fills a store (default: a fresh SQLite file) with finished runs of 20 playbooks, then times
`GET /api/runs` (first page, filtered pages, a deep page) through the app, and with `--browser`
the `/ui/runs` page in chromium (a real server: from navigation to the rows on screen).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from noetl.api.app import create_app  # noqa: E402
from noetl.engine import events as ev  # noqa: E402
from noetl.engine.events import Event  # noqa: E402
from noetl.ids import Snowflake  # noqa: E402
from noetl.runtime.control import ControlPlane  # noqa: E402
from noetl.store import open_store  # noqa: E402

TOKEN = "noetl_bench-token-0123456789abcdef0123456789abcdef0123"
ENDINGS = (ev.PLAYBOOK_COMPLETED,) * 8 + (ev.PLAYBOOK_FAILED, ev.PLAYBOOK_CANCELLED)


def fill(store: Any, runs: int, batch: int = 2000) -> float:
    ids = Snowflake(node=7)
    begin = time.perf_counter()
    base = datetime.now(UTC) - timedelta(seconds=runs)
    for first in range(0, runs, batch):
        events = []
        for n in range(first, min(first + batch, runs)):
            execution_id, at = ids(), base + timedelta(seconds=n)
            path = f"bench/playbook_{n % 20:02d}"
            events.append(
                Event(
                    event_id=ids(),
                    execution_id=execution_id,
                    event_type=ev.PLAYBOOK_STARTED,
                    node_name=path,
                    status="STARTED",
                    context={"path": path, "workload": {"n": n}},
                    created_at=at,
                )
            )
            ending = ENDINGS[n % len(ENDINGS)]
            meta = {"error": "bench failure"} if ending == ev.PLAYBOOK_FAILED else {}
            events.append(
                Event(
                    event_id=ids(),
                    execution_id=execution_id,
                    event_type=ending,
                    node_name="playbook",
                    status=ending.rsplit(".", 1)[-1].upper(),
                    meta=meta,
                    created_at=at + timedelta(milliseconds=250),
                )
            )
        store.append(events)
    return time.perf_counter() - begin


def timed(client: TestClient, params: dict[str, Any], repeat: int = 7) -> dict[str, Any]:
    samples, rows = [], 0
    for _ in range(repeat):
        begin = time.perf_counter()
        answer = client.get("/api/runs", params=params)
        samples.append(time.perf_counter() - begin)
        answer.raise_for_status()
        rows = len(answer.json()["runs"])
    return {
        "params": params,
        "rows": rows,
        "first_s": round(samples[0], 4),
        "median_s": round(statistics.median(samples), 4),
    }


def browser_first_page(store_url: str, runs_db_ready: bool = True) -> float | None:
    """Seconds from navigating to /ui/runs to its rows on screen, on a real server."""
    import os
    import subprocess

    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests"))
    from tests.browser.conftest import CHROMIUM_FLAGS, chromium_path
    from tests.support.cluster import free_port, wait_for

    executable = chromium_path()
    if executable is None:
        return None
    port = free_port()
    env = {**os.environ, "NOETL_API_TOKEN": TOKEN}
    server = subprocess.Popen(
        [sys.executable, "-m", "noetl", "server", "start", "--port", str(port), "--store", store_url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the bench server")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            page = browser.new_page()
            page.goto(f"{url}/ui/login?token={TOKEN}&next=/ui/catalog")  # sets the cookie
            samples = []
            for _ in range(5):
                begin = time.perf_counter()
                page.goto(f"{url}/ui/runs")
                page.wait_for_selector("tr.run-row")
                samples.append(time.perf_counter() - begin)
            browser.close()
        return round(statistics.median(samples), 4)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--store", default=None, help="store URL (default: a new SQLite file)")
    parser.add_argument("--browser", action="store_true", help="also time /ui/runs in chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noetl-runs-bench-") as folder:  # removed afterwards
        report = measure(args.store or f"sqlite:///{folder}/runs.db", args.runs, args.browser)
    print(json.dumps(report, indent=2))


def measure(store_url: str, runs: int, browser: bool) -> dict[str, Any]:
    store = open_store(store_url)
    filled = fill(store, runs)
    app = create_app(ControlPlane(store), admin_token=TOKEN)
    report: dict[str, Any] = {
        "runs": runs,
        "store": store_url.split(":", 1)[0],
        "fill_s": round(filled, 1),
    }
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        report["api"] = [
            timed(client, {"limit": 50}),
            timed(client, {"limit": 50, "status": "FAILED"}),
            timed(client, {"limit": 50, "playbook": "bench/playbook_07"}),
            timed(client, {"limit": 50, "since": (datetime.now(UTC) - timedelta(hours=3)).isoformat()}),
            timed(client, {"limit": 50, "offset": runs - 50}),
        ]
    store.close()
    if browser:
        report["browser_first_page_median_s"] = browser_first_page(store_url)
    return report


if __name__ == "__main__":
    main()
