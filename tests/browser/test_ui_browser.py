"""The web UI in a real browser, against a real `noetl server start` and `noetl worker start`:
open the UI with a token, find a finished run, see its graph with states, open a step's result
and output, follow a child run, start a run from the catalog, cancel a running one, re-run with
an edited payload, see the worker running a command. Screenshots of the main pages go to
`docs/images/` when NOETL_UPDATE_SCREENSHOTS=1 (else to the test's temporary folder)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.auth import AUTH, TEST_TOKEN
from tests.support.cluster import Cluster, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 20_000

CHILD = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: child, path: tests/ui/child}
workload: {x: 0}
workflow:
  - step: start
    tool:
      kind: python
      input: {x: "{{ workload.x }}"}
      code: |
        result = {"square": x * x}
"""

PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: tests/ui/parent}
workload: {items: [1, 2, 3]}
workflow:
  - step: start
    tool:
      kind: shell
      command: "echo preparing the fan-out; echo a warning 1>&2"
    next: fan
  - step: fan
    loop:
      in: "{{ workload.items }}"
      iterator: it
      spec: {mode: parallel}
    tool:
      kind: playbook
      path: tests/ui/child
      args: {x: "{{ it }}"}
    next:
      arcs:
        - step: report
          when: "{{ event.name == 'loop.done' }}"
  - step: report
    tool:
      kind: python
      input: {squares: "{{ fan.results }}"}
      code: |
        print("squares:", squares)
        result = {"total": sum(s["square"] for s in squares), "count": len(squares)}
    next:
      arcs:
        - step: alarm
          when: "{{ report.total > 1000 }}"
        - step: done
          when: "{{ report.total <= 1000 }}"
  - step: alarm
    tool: {kind: python, code: "result = 'too big'"}
  - step: done
    tool: {kind: python, code: "result = 'ok'"}
"""

SLOW = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slow, path: tests/ui/slow}
workload: {seconds: 1}
workflow:
  - step: start
    tool: {kind: python, code: "result = 'warming up'"}
    next: wait
  - step: wait
    tool:
      kind: python
      input: {seconds: "{{ workload.seconds }}"}
      code: |
        import time
        time.sleep(seconds)
        result = {"slept": seconds}
"""


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("NOETL_UPDATE_SCREENSHOTS") == "1":
        target = ROOT / "docs" / "images"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[dict[str, Any]]:
    """A server on a SQLite store, one worker (with /metrics), the playbooks registered and one
    finished run of the parent."""
    tmp = tmp_path_factory.mktemp("ui")
    metrics_port = free_port()
    with Cluster(
        tmp, f"sqlite:///{tmp}/ui.db", env={"NOETL_WORKER_METRICS_PORT": str(metrics_port)}
    ) as cluster:
        server = cluster.start_server("ui-server")
        cluster.start_worker("ui-worker", server.url, concurrency=4)
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as api:
            for text in (CHILD, PARENT, SLOW):
                api.post("/api/catalog/register", json={"content": text}).raise_for_status()
            started = api.post("/api/execute", json={"path": "tests/ui/parent"}).json()
            execution_id = str(started["execution_id"])
            wait_for(
                lambda: api.get(f"/api/executions/{execution_id}/status").json()["status"] == "COMPLETED",
                60,
                "the parent run to complete",
                details=cluster.logs,
            )
            yield {
                "url": server.url,
                "api": api,
                "parent": execution_id,
                "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
                "shots": screenshot_dir(tmp_path_factory),
            }


@pytest.fixture
def page(browser: Any, site: dict[str, Any]) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(f"{site['url']}/ui?token={TEST_TOKEN}")  # the token once in the URL, then a cookie
    tab.wait_for_selector("tr.run-row")
    yield tab
    context.close()
    assert errors == [], errors


def shoot(page: Any, site: dict[str, Any], name: str) -> None:
    page.wait_for_timeout(300)  # let the last poll paint
    page.screenshot(path=str(site["shots"] / f"{name}.png"), full_page=True)


def test_a_finished_run_shows_its_graph_steps_results_and_children(page: Any, site: dict[str, Any]) -> None:
    parent = site["parent"]
    assert "noetl_token" in {c["name"] for c in page.context.cookies()}
    assert "token=" not in page.url  # the token left the URL
    row = page.locator(f"tr.run-row[data-execution='{parent}']")
    assert row.get_attribute("data-status") == "COMPLETED"
    shoot(page, site, "runs")
    row.locator("a").first.click()
    page.wait_for_url(f"**/ui/runs/{parent}")
    page.wait_for_selector("#run-status[data-status='COMPLETED']")

    states = {
        node.get_attribute("data-step"): node.get_attribute("data-status")
        for node in page.locator("#graph g.node").all()
    }
    assert states == {
        "start": "completed",
        "fan": "completed",
        "report": "completed",
        "alarm": "skipped",
        "done": "completed",
    }
    taken = {
        (p.get_attribute("data-from"), p.get_attribute("data-to"))
        for p in page.locator("#graph path.edge.taken").all()
    }
    assert taken == {("start", "fan"), ("fan", "report"), ("report", "done")}  # not report>alarm
    loop_row = page.locator("tr.step-row[data-step='fan']")
    assert "3/3" in loop_row.inner_text()
    shoot(page, site, "run")

    page.locator("#graph g.node[data-step='report']").click()
    result = page.locator("#step-result .json-view")
    result.wait_for()
    assert '"total": 14' in result.inner_text() and '"count": 3' in result.inner_text()
    assert "squares:" in page.locator("#step-detail pre[data-out='stdout']").inner_text()
    shoot(page, site, "step")

    page.locator("tr.step-row[data-step='start']").click()
    page.wait_for_selector("#step-detail pre[data-out='stderr']")
    assert "a warning" in page.locator("#step-detail pre[data-out='stderr']").inner_text()
    page.locator("tr.step-row[data-step='fan']").click()
    iterations = page.locator("#iterations tbody tr")
    iterations.first.wait_for()
    assert iterations.count() == 3 and '"square": 9' in iterations.nth(2).inner_text()

    children = page.locator("tr.child-row")
    assert children.count() == 3
    assert [c.locator("td").first.inner_text() for c in children.all()] == ["0", "1", "2"]
    children.nth(1).locator("a").click()
    page.wait_for_selector("#run-status[data-status='COMPLETED']")
    assert "iteration 1 of 3" in page.locator("#facts").inner_text()


def test_start_a_run_from_the_catalog_watch_it_and_cancel_it(page: Any, site: dict[str, Any]) -> None:
    page.goto(f"{site['url']}/ui/catalog")
    page.locator("#playbook-list li[data-path='tests/ui/slow']").click()
    assert "time.sleep(seconds)" in page.locator("#yaml").inner_text()
    page.fill("#payload", '{"seconds": 60}')
    shoot(page, site, "catalog")
    page.click("#execute")
    page.wait_for_url(re.compile(r".*/ui/runs/\d+$"))
    execution_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector("#graph g.node[data-step='wait'][data-status='running']")
    assert page.locator("#run-status").get_attribute("data-status") == "RUNNING"

    workers = page.context.new_page()
    workers.goto(f"{site['url']}/ui/workers")
    busy = workers.locator("tr.worker-row[data-worker='ui-worker']")
    busy.wait_for()
    workers.wait_for_function(
        f"document.querySelector(\"tr.worker-row[data-worker='ui-worker']\").innerText.includes('{execution_id}')"
    )
    shoot(workers, site, "workers")
    workers.close()

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("#run-status[data-status='CANCELLED']")
    assert page.locator("#graph g.node[data-step='wait']").get_attribute("data-status") == "cancelled"
    assert page.locator("#cancel").is_hidden()
    status = site["api"].get(f"/api/executions/{execution_id}/status").json()
    assert status["status"] == "CANCELLED"


def test_rerun_with_an_edited_payload(page: Any, site: dict[str, Any]) -> None:
    page.goto(f"{site['url']}/ui/runs/{site['parent']}")
    page.wait_for_selector("#run-status[data-status='COMPLETED']")
    page.click("#rerun")
    assert '"items"' in page.locator("#rerun-payload").input_value()
    page.fill("#rerun-payload", '{"items": [10, 20]}')
    page.click("#rerun-go")
    page.wait_for_url(lambda url: re.search(r"/ui/runs/\d+$", url) and not url.endswith(site["parent"]))
    page.wait_for_selector("#run-status[data-status='COMPLETED']")
    assert "2/2" in page.locator("tr.step-row[data-step='fan']").inner_text()
    page.locator("#graph g.node[data-step='report']").click()
    assert '"total": 500' in page.locator("#step-result").inner_text()


def test_the_runs_page_filters_by_status_and_playbook(page: Any, site: dict[str, Any]) -> None:
    page.select_option("select[name=status]", "COMPLETED")
    page.fill("input[name=playbook]", "tests/ui/child")
    page.locator("input[name=playbook]").dispatch_event("change")
    page.wait_for_function("location.search.includes('playbook=tests')")
    page.wait_for_function(
        "[...document.querySelectorAll('tr.run-row')].every(r => r.innerText.includes('tests/ui/child'))"
    )
    rows = page.locator("tr.run-row")
    assert rows.count() >= 3
    assert {r.get_attribute("data-status") for r in rows.all()} == {"COMPLETED"}


def test_the_worker_serves_its_metrics(site: dict[str, Any]) -> None:
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(site["metrics"], timeout=5).text
        if 'noetl_worker_commands_total{status="completed",tool_kind="python"}' in text:
            break
        time.sleep(0.2)
    line = next(
        line
        for line in text.splitlines()
        if line.startswith('noetl_worker_commands_total{status="completed",tool_kind="python"}')
    )
    assert float(line.rsplit(" ", 1)[1]) >= 4  # the parent's report and done, the children
    assert "noetl_worker_slots 4.0" in text
