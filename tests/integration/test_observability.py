"""Seeing what runs, in-process: `/metrics` counters move by the right amounts over a 10-item
loop; spans of a nested run started with a `traceparent` form one trace with the right parent
links (in-memory exporter, and once through a small OTLP/HTTP receiver); `/api/runs` pages and
views; the offline docs; `noetl run` imports neither prometheus nor OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from tests.support.auth import AUTH, TEST_TOKEN

from noetl.api.observe import Observability
from noetl.api.server import build_app
from noetl.observability.tracing import otlp_provider
from noetl.runtime.control import ControlPlane
from noetl.store import open_store

LOOP10 = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loop10, path: tests/obs/loop10}
workload:
  items: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
workflow:
  - step: start
    loop:
      in: "{{ workload.items }}"
      iterator: n
      spec: {mode: parallel}
    tool:
      kind: python
      code: |
        result = n * 2
"""

CHILD = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: child, path: tests/obs/child}
workload: {x: 0}
workflow:
  - step: start
    tool:
      kind: python
      input: {x: "{{ workload.x }}"}
      code: |
        print("child", x)
        result = x + 100
"""

PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: tests/obs/parent}
workload: {items: [1, 2]}
workflow:
  - step: start
    tool:
      kind: shell
      command: "echo out-line; echo err-line 1>&2"
    next: fan
  - step: fan
    loop:
      in: "{{ workload.items }}"
      iterator: it
    tool:
      kind: playbook
      path: tests/obs/child
      args: {x: "{{ it }}"}
    next:
      arcs:
        - step: end
          when: "{{ event.name == 'loop.done' }}"
  - step: end
    tool:
      kind: python
      code: |
        result = {"done": True}
"""

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
REMOTE_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{REMOTE_SPAN}-01"


@pytest.fixture
def control() -> Iterator[ControlPlane]:
    store = open_store("memory://")
    yield ControlPlane(store, lease_seconds=30)
    store.close()


def serve(control: ControlPlane, observability: Observability | None = None) -> TestClient:
    app = build_app(
        control,
        admin_token=TEST_TOKEN,
        with_worker=True,
        workers=4,
        nats_status="not_configured",
        observability=observability,
    )
    return TestClient(app, headers=AUTH)


def register(client: TestClient, text: str) -> None:
    answer = client.post("/api/catalog/register", json={"content": text})
    assert answer.status_code == 200, answer.text


def run(client: TestClient, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
    answer = client.post("/api/execute", json=body)
    assert answer.status_code == 200, answer.text
    execution_id = answer.json()["execution_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/executions/{execution_id}/status").json()
        if status["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return {**status, "execution_id": str(execution_id)}
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not end")


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    found = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


# ----------------------------------------------------------------------------------- metrics


def test_metrics_move_by_the_right_amounts_over_a_ten_item_loop(control: ControlPlane) -> None:
    with serve(control) as client:
        register(client, LOOP10)
        before = samples(client)
        outcome = run(client, {"path": "tests/obs/loop10"})
        assert outcome["status"] == "COMPLETED", outcome
        after = samples(client)

    book = {"playbook": "tests/obs/loop10"}
    assert delta(before, after, "noetl_executions_started_total", **book) == 1
    assert delta(before, after, "noetl_executions_completed_total", **book) == 1
    assert delta(before, after, "noetl_executions_failed_total", **book) == 0
    python = {"pool": "shared", "tool_kind": "python"}
    for event in ("issued", "claimed", "completed"):
        assert delta(before, after, "noetl_commands_total", event=event, **python) == 10, event
    assert delta(before, after, "noetl_commands_total", event="failed", **python) == 0
    assert delta(before, after, "noetl_commands_total", event="reissued", **python) == 0
    timing = {"tool_kind": "python", "status": "completed"}
    assert delta(before, after, "noetl_command_duration_seconds_count", **timing) == 10
    assert delta(before, after, "noetl_step_duration_seconds_count", **timing) == 1
    # Every event of the run was appended in some batch, and each append was timed.
    assert delta(before, after, "noetl_store_append_duration_seconds_count") >= 1
    route = {"method": "POST", "route": "/api/execute", "status": "200"}
    assert delta(before, after, "noetl_http_request_duration_seconds_count", **route) == 1
    assert ("noetl_queue_depth", (("pool", "shared"),)) not in after or after[
        ("noetl_queue_depth", (("pool", "shared"),))
    ] == 0
    assert after[("noetl_workers_live", ())] == 0  # the in-process worker does not register


def test_metrics_count_failures_and_label_routes_by_template(control: ControlPlane) -> None:
    failing = LOOP10.replace("result = n * 2", "raise ValueError(n)").replace("loop10", "loop10f")
    with serve(control) as client:
        register(client, failing)
        before = samples(client)
        outcome = run(client, {"path": "tests/obs/loop10f"})
        assert outcome["status"] == "FAILED"
        client.get(f"/api/executions/{outcome['execution_id']}")
        after = samples(client)
    assert delta(before, after, "noetl_executions_failed_total", playbook="tests/obs/loop10f") == 1
    assert (
        delta(before, after, "noetl_commands_total", event="failed", pool="shared", tool_kind="python") >= 1
    )
    by_template = {"method": "GET", "route": "/api/executions/{execution_id}", "status": "200"}
    assert delta(before, after, "noetl_http_request_duration_seconds_count", **by_template) == 1
    assert not any(outcome["execution_id"] in dict(labels).get("route", "") for _, labels in after)


def test_metrics_need_a_token_unless_the_server_binds_loopback(control: ControlPlane) -> None:
    with serve(control) as client:
        assert client.get("/metrics", headers={"Authorization": ""}).status_code == 401
        assert client.get("/metrics").status_code == 200
    with serve(control, Observability(metrics_open=True)) as client:
        answer = client.get("/metrics", headers={"Authorization": ""})
        assert answer.status_code == 200 and "noetl_executions_started" in answer.text


# ----------------------------------------------------------------------------------- traces


def traced(control: ControlPlane, provider: TracerProvider) -> dict[str, Any]:
    with serve(control, Observability(tracer_provider=provider)) as client:
        register(client, CHILD)
        register(client, PARENT)
        outcome = run(client, {"path": "tests/obs/parent", "trace": {"traceparent": TRACEPARENT}})
        assert outcome["status"] == "COMPLETED", outcome
        return outcome


def test_spans_of_a_nested_run_form_one_trace_with_the_right_parents(control: ControlPlane) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    outcome = traced(control, provider)
    spans: tuple[ReadableSpan, ...] = exporter.get_finished_spans()

    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    by_id = {s.context.span_id: s for s in spans}
    runs = [s for s in spans if s.name.startswith("execution ")]
    root = next(s for s in runs if s.attributes["noetl.execution_id"] == outcome["execution_id"])
    assert root.name == "execution tests/obs/parent"
    assert root.parent is not None and format(root.parent.span_id, "016x") == REMOTE_SPAN
    assert root.parent.is_remote

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, span.name
        return by_id[span.parent.span_id]

    steps = {s.attributes["noetl.step"]: s for s in spans if s.name.startswith("step ") and parent(s) is root}
    assert set(steps) == {"start", "fan", "end"}
    commands = [
        s
        for s in spans
        if s.name.startswith("command ") and s.attributes["noetl.execution_id"] == outcome["execution_id"]
    ]
    assert sorted(s.attributes["noetl.step"] for s in commands) == ["end", "fan", "fan", "start"]
    for command in commands:
        assert parent(command) is steps[command.attributes["noetl.step"]]
        assert command.attributes["noetl.attempt"] == 1 and command.attributes["noetl.worker_id"]
    assert {c.attributes["noetl.tool_kind"] for c in commands} == {"shell", "playbook", "python"}

    children = [s for s in runs if s is not root]
    assert len(children) == 2
    fan_commands = {
        c.attributes["noetl.iteration"]: c for c in commands if c.attributes["noetl.step"] == "fan"
    }
    for child in children:
        assert child.name == "execution tests/obs/child"
        index = child.attributes["noetl.iterator_index"]
        assert parent(child) is fan_commands[index]  # the loop iteration's command started it
        child_steps = [s for s in spans if s.name == "step start" and parent(s) is child]
        assert len(child_steps) == 1
    assert all(s.end_time is not None and s.end_time >= s.start_time for s in spans)


class _Receiver(BaseHTTPRequestHandler):
    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            type(self).received.append(request)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_spans_are_exported_over_otlp_http(control: ControlPlane) -> None:
    _Receiver.received = []
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        provider = otlp_provider(f"http://127.0.0.1:{receiver.server_port}")
        traced(control, provider)
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        receiver.shutdown()
    spans = [
        span
        for request in _Receiver.received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = [s.name for s in spans]
    assert names.count("execution tests/obs/child") == 2
    assert "execution tests/obs/parent" in names and "step fan" in names and "command fan" in names
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    service = {
        a.value.string_value
        for request in _Receiver.received
        for resource in request.resource_spans
        for a in resource.resource.attributes
        if a.key == "service.name"
    }
    assert service == {"noetl-server"}


# ----------------------------------------------------------------------------------- run history


def test_runs_api_pages_filters_and_views(control: ControlPlane) -> None:
    with serve(control) as client:
        register(client, CHILD)
        register(client, PARENT)
        outcome = run(client, {"path": "tests/obs/parent"})
        execution_id = outcome["execution_id"]

        page = client.get("/api/runs", params={"limit": 2}).json()
        assert page["limit"] == 2 and page["has_more"] is True and len(page["runs"]) == 2
        rest = client.get("/api/runs", params={"limit": 2, "offset": 2}).json()
        assert rest["has_more"] is False and len(rest["runs"]) == 1
        every = [r["execution_id"] for r in page["runs"] + rest["runs"]]
        assert len(set(every)) == 3 and execution_id in every
        parents = client.get("/api/runs", params={"playbook": "tests/obs/parent"}).json()["runs"]
        assert [r["execution_id"] for r in parents] == [execution_id]
        assert parents[0]["status"] == "COMPLETED" and parents[0]["duration_ms"] >= 0
        assert client.get("/api/runs", params={"status": "failed"}).json()["runs"] == []
        later = client.get("/api/runs", params={"since": "2999-01-01"}).json()["runs"]
        assert later == []
        assert client.get("/api/runs", params={"since": "yesterday"}).status_code == 422

        view = client.get(f"/api/runs/{execution_id}").json()
        assert view["status"] == "COMPLETED" and view["path"] == "tests/obs/parent"
        nodes = {n["name"]: n["status"] for n in view["graph"]["nodes"]}
        assert nodes == {"start": "completed", "fan": "completed", "end": "completed"}
        edges = {(e["from"], e["to"]): e for e in view["graph"]["edges"]}
        assert edges[("start", "fan")]["taken"] and edges[("fan", "end")]["when"]
        steps = {s["name"]: s for s in view["steps"]}
        assert steps["start"]["attempts"][0]["stdout"] == "out-line\n"
        assert steps["start"]["attempts"][0]["stderr"] == "err-line\n"
        assert steps["fan"]["loop"] == {"total": 2, "done": 2, "failed": 0, "running": 0}
        assert [i["result"] for i in steps["fan"]["iterations"]] == [101, 102]
        assert steps["end"]["result"] == {"done": True}
        assert [(c["iterator_index"], c["status"]) for c in view["children"]] == [
            (0, "COMPLETED"),
            (1, "COMPLETED"),
        ]
        assert view["timeline"][0]["event_type"] == "playbook_started"

        logs = client.get(f"/api/runs/{execution_id}/logs", params={"step": "start"}).json()
        assert [a["stdout"] for a in logs["attempts"]] == ["out-line\n"]
        pages = client.get(
            f"/api/runs/{execution_id}/steps/fan/iterations", params={"offset": 1, "limit": 5}
        ).json()
        assert pages["total"] == 2 and [i["iteration"] for i in pages["iterations"]] == [1]
        assert client.get(f"/api/runs/{execution_id}/logs", params={"step": "nope"}).status_code == 404
        assert client.get("/api/runs/123").status_code == 404
        assert client.get(f"/api/runs/{2**63}").status_code == 404
        assert client.get(f"/api/runs/{2**63}/logs").status_code == 404
        assert client.get("/api/runs/abc").status_code == 422
        huge = client.get("/api/runs", params={"offset": 2**64, "parent_execution_id": 2**64}).json()
        assert huge["runs"] == [] and huge["has_more"] is False
        assert client.get("/api/runs", params={"since": "0001-01-01T00:00:00+01:00"}).status_code == 422
        activity = client.get("/api/activity").json()
        assert activity == {"pools": [], "workers": []}


def test_docs_are_served_without_a_cdn(control: ControlPlane) -> None:
    with serve(control) as client:
        page = client.get("/docs", headers={"Authorization": ""})
        assert page.status_code == 200
        assert "/docs/assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text.lower()
        asset = client.get("/docs/assets/swagger-ui-bundle.js", headers={"Authorization": ""})
        assert asset.status_code == 200 and len(asset.content) > 100_000
        redoc = client.get("/redoc", headers={"Authorization": ""})
        assert "/docs/assets/redoc.standalone.js" in redoc.text and "fonts.googleapis" not in redoc.text


def test_local_runs_import_neither_prometheus_nor_opentelemetry(tmp_path: Any) -> None:
    playbook = tmp_path / "p.yaml"
    playbook.write_text(LOOP10)
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from noetl.cli.main import app\n"
        f"result = CliRunner().invoke(app, ['run', {str(playbook)!r}, '--store', 'sqlite:///{tmp_path}/s.db', '-q'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'opentelemetry'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
