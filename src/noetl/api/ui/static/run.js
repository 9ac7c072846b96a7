/* One run: header and actions (cancel, re-run), the graph coloured by state, steps with their
   attempts, results, stdout/stderr and errors, loop progress and iterations, child runs, the
   timeline. Live while the run is running. */
(function () {
  "use strict";
  const N = window.NoETL;
  const id = document.body.dataset.execution;
  let run = null, selected = null, shownKey = null;

  function loopCell(step) {
    if (!step.loop) return "";
    const { total, done, failed } = step.loop;
    const pct = total ? (100 * done) / total : 100;
    const bad = total ? (100 * failed) / total : 0;
    return N.el("div", { class: "progress", title: `${done} of ${total} done, ${failed} failed` },
      N.el("span", { style: `width:${pct}%` }), N.el("span", { class: "bad", style: `left:${pct - bad}%;width:${bad}%` }),
      N.el("em", {}, `${done}/${total}${failed ? `, ${failed} failed` : ""}`));
  }

  function header() {
    N.$("#run-status").className = `badge ${run.status}`;
    N.$("#run-status").textContent = run.status.toLowerCase();
    N.$("#run-status").dataset.status = run.status;
    const facts = [
      N.el("span", {}, "playbook ", N.el("b", {}, run.path ? N.el("a", { href: `/ui/catalog?path=${encodeURIComponent(run.path)}` }, run.path) : "?")),
      N.el("span", {}, "started ", N.el("b", {}, N.time(run.started_at))),
      N.el("span", {}, "duration ", N.el("b", {}, N.duration(run.duration_ms))),
    ];
    if (run.parent_execution_id) facts.push(N.el("span", {}, "parent ", N.runLink(run.parent_execution_id)));
    if (run.iterator) facts.push(N.el("span", {}, "iteration ", N.el("b", {}, `${run.iterator.iterator_index} of ${run.iterator.iterator_count}`)));
    if (run.trace && run.trace.traceparent) facts.push(N.el("span", {}, "trace ", N.el("b", { class: "mono" }, run.trace.traceparent)));
    N.fill(N.$("#facts"), facts);
    N.$("#cancel").hidden = run.status !== "RUNNING";
    const error = N.$("#run-error");
    error.hidden = !run.error;
    error.textContent = run.error || "";
  }

  function stepsTable() {
    N.fill(N.$("#steps tbody"), run.steps.map((s) => N.el("tr", {
      class: "step-row clickable" + (s.name === selected ? " selected" : ""), "data-step": s.name, "data-status": s.status,
      onclick: () => select(s.name),
    },
    N.el("td", {}, s.name), N.el("td", {}, s.tool_kind || ""), N.el("td", {}, N.badge(s.status)),
    N.el("td", {}, s.loop ? (s.iterations || []).reduce((n, i) => n + i.attempt, 0) || "" : (s.attempts || []).length),
    N.el("td", {}, N.duration(s.duration_ms)), N.el("td", {}, loopCell(s)))));
  }

  function output(title, text, cls) {
    if (!text) return null;
    return [N.el("h3", {}, title), N.el("pre", { class: `out ${cls || ""}`, "data-out": title }, text)];
  }

  function attemptBox(a, label) {
    return N.el("div", { class: "attempt", "data-command": a.command_id },
      N.el("header", {}, N.el("b", {}, label), N.badge(a.status), N.el("span", {}, `attempt ${a.attempt}`),
        N.el("span", {}, a.worker_id ? `worker ${a.worker_id}` : "not claimed"), N.el("span", {}, N.duration(a.duration_ms)),
        N.el("span", { class: "mono muted" }, a.command_id)),
      (a.errors || []).length ? [N.el("h3", {}, "Errors"), N.el("pre", { class: "out err" }, a.errors.join("\n\n"))] : null,
      output("stdout", a.stdout), output("stderr", a.stderr, "err"),
      a.status === "completed" ? [N.el("h3", {}, "Result"), N.json(a.result)] : null);
  }

  function iterationsTable(step) {
    const table = N.el("table", { class: "grid", id: "iterations" },
      N.el("thead", {}, N.el("tr", {}, ["#", "Status", "Attempt", "Worker", "Duration", "Result / error"].map((h) => N.el("th", {}, h)))));
    const body = N.el("tbody");
    const add = (items) => items.forEach((a) => body.appendChild(N.el("tr", { "data-iteration": a.iteration, "data-status": a.status },
      N.el("td", {}, a.iteration), N.el("td", {}, N.badge(a.status)), N.el("td", {}, a.attempt), N.el("td", {}, a.worker_id || ""),
      N.el("td", {}, N.duration(a.duration_ms)),
      N.el("td", {}, a.errors && a.errors.length ? N.el("pre", { class: "out err" }, a.errors[a.errors.length - 1]) : N.json(a.result)))));
    add(step.iterations || []);
    table.appendChild(body);
    const shown = () => body.children.length;
    const more = N.el("button", { class: "plain", type: "button", onclick: async () => {
      const page = await N.get(`/api/runs/${id}/steps/${encodeURIComponent(step.name)}/iterations?offset=${shown()}&limit=200`);
      add(page.iterations);
      more.hidden = shown() >= page.total;
    } }, "More iterations");
    more.hidden = shown() >= step.loop.done + step.loop.running;
    return [table, more];
  }

  function detail() {
    const box = N.$("#step-detail");
    const step = run && run.steps.find((s) => s.name === selected);
    if (!step) { box.hidden = true; return; }
    const key = JSON.stringify([step.status, step.attempts.length, step.loop, step.attempts.map((a) => a.status)]);
    if (key === shownKey && !box.hidden) return;  // unchanged: keep what the user opened
    shownKey = key;
    box.hidden = false;
    N.fill(box, [
      N.el("h2", {}, "Step ", N.el("span", { class: "mono" }, step.name), " ", N.badge(step.status)),
      N.el("div", { class: "facts" }, N.el("span", {}, "kind ", N.el("b", {}, step.tool_kind || "")),
        N.el("span", {}, "started ", N.el("b", {}, N.time(step.started_at))), N.el("span", {}, "duration ", N.el("b", {}, N.duration(step.duration_ms)))),
      step.error ? N.el("pre", { class: "out err" }, step.error) : null,
      step.loop ? [N.el("h3", {}, `Iterations (${step.loop.done} of ${step.loop.total} done, ${step.loop.failed} failed)`), iterationsTable(step)] : null,
      step.result !== null && step.result !== undefined ? [N.el("h3", {}, "Result"), N.el("div", { id: "step-result" }, N.json(step.result))] : null,
      (step.attempts || []).map((a, i) => attemptBox(a, `Command ${i + 1}`)),
    ].flat(Infinity).filter(Boolean));
  }

  function select(name) {
    selected = name;
    shownKey = null;
    history.replaceState(null, "", `/ui/runs/${id}?step=${encodeURIComponent(name)}`);
    render();
    N.$("#step-detail").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function children() {
    const card = N.$("#children-card");
    card.hidden = !run.children.length;
    N.fill(N.$("#children tbody"), run.children.map((c) => N.el("tr", { class: "child-row", "data-execution": c.execution_id },
      N.el("td", {}, c.iterator_index ?? ""), N.el("td", {}, N.runLink(c.execution_id)), N.el("td", {}, c.path || ""),
      N.el("td", {}, N.badge(c.status)), N.el("td", {}, N.duration(c.duration_ms)))));
  }

  function timeline() {
    N.gantt(N.$("#gantt"), run.steps, run.started_at, run.completed_at);
    const t0 = Date.parse(run.started_at);
    N.$("#events-count").textContent = run.events_total;
    N.fill(N.$("#timeline tbody"), run.timeline.map((e) => N.el("tr", {},
      N.el("td", {}, Math.round(Date.parse(e.created_at) - t0)), N.el("td", {}, e.event_type), N.el("td", {}, e.node_name || ""),
      N.el("td", {}, e.status || ""), N.el("td", {}, e.iteration ?? ""), N.el("td", {}, e.worker_id || ""))));
  }

  function render() {
    header();
    N.graph(N.$("#graph"), run.graph, { onSelect: select, selected, ended: run.status !== "RUNNING" });
    stepsTable();
    detail();
    children();
    timeline();
  }

  async function load() {
    run = await N.get(`/api/runs/${id}`);
    N.fill(N.$("#workload"), [N.json(run.workload || {})]);
    render();
  }

  N.$("#cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel run ${id} and its child runs?`)) return;
    try {
      await N.api("POST", `/api/executions/${id}/cancel`, { reason: "cancelled from the web UI" });
      N.toast("Cancellation requested");
      poller.now();
    } catch (e) { N.toast(e.message); }
  });

  N.$("#rerun").addEventListener("click", () => {
    N.$("#rerun-path").textContent = run ? run.path : "";
    N.$("#rerun-payload").value = JSON.stringify((run && run.workload) || {}, null, 2);
    N.$("#rerun-error").hidden = true;
    N.$("#rerun-dialog").showModal();
  });
  N.$("#rerun-go").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const error = N.$("#rerun-error");
    try {
      const payload = N.parseObject(N.$("#rerun-payload").value);
      const body = run.catalog_id ? { catalog_id: run.catalog_id, payload } : { path: run.path, payload };
      const started = await N.api("POST", "/api/execute", body);
      location.href = `/ui/runs/${started.execution_id}`;
    } catch (e) { error.textContent = e.message; error.hidden = false; }
  });

  selected = new URLSearchParams(location.search).get("step");
  const poller = N.poll(load, 1500, () => !run || run.status === "RUNNING");
})();
