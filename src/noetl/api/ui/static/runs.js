/* Runs: filters kept in the URL, pages of runs (newest first), live while the first page shows. */
(function () {
  "use strict";
  const N = window.NoETL;
  const form = N.$("#filters");
  const params = new URLSearchParams(location.search);
  let offset = Number(params.get("offset") || 0);
  let hasMore = false, rows = [];

  ["status", "playbook", "limit"].forEach((k) => { if (params.get(k)) form.elements[k].value = params.get(k); });
  ["since", "until"].forEach((k) => { if (params.get(k)) form.elements[k].value = toLocal(params.get(k)); });

  function toLocal(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function query() {
    const q = new URLSearchParams();
    const f = form.elements;
    if (f.status.value) q.set("status", f.status.value);
    if (f.playbook.value.trim()) q.set("playbook", f.playbook.value.trim());
    if (f.since.value) q.set("since", new Date(f.since.value).toISOString());
    if (f.until.value) q.set("until", new Date(f.until.value).toISOString());
    q.set("limit", f.limit.value);
    if (offset) q.set("offset", String(offset));
    return q;
  }

  function row(run) {
    return N.el(
      "tr",
      { class: "run-row clickable", "data-execution": run.execution_id, "data-status": run.status, onclick: (ev) => {
        if (ev.target.tagName !== "A") location.href = `/ui/runs/${run.execution_id}`;
      } },
      N.el("td", {}, N.runLink(run.execution_id)),
      N.el("td", {}, run.path || ""),
      N.el("td", {}, N.badge(run.status)),
      N.el("td", { title: run.started_at }, N.time(run.started_at)),
      N.el("td", {}, N.duration(run.duration_ms)),
      N.el("td", {}, run.parent_execution_id ? N.runLink(run.parent_execution_id) : "")
    );
  }

  async function load() {
    const q = query();
    history.replaceState(null, "", "/ui/runs?" + q.toString());
    const page = await N.get("/api/runs?" + q.toString());
    rows = page.runs;
    hasMore = page.has_more;
    N.fill(N.$("#runs tbody"), rows.length ? rows.map(row) : [N.empty(6, "No runs match.")]);
    const limit = page.limit;
    N.$("#page-label").textContent = `page ${Math.floor(offset / limit) + 1} · runs ${rows.length ? offset + 1 : 0}–${offset + rows.length}`;
    N.$("#prev").disabled = offset === 0;
    N.$("#next").disabled = !hasMore;
  }

  const poller = N.poll(load, 2000, () => offset === 0 || rows.some((r) => r.status === "RUNNING"));
  form.addEventListener("change", () => { offset = 0; poller.now(); });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); offset = 0; poller.now(); });
  form.addEventListener("reset", () => setTimeout(() => { offset = 0; poller.now(); }, 0));
  N.$("#prev").addEventListener("click", () => { offset = Math.max(0, offset - Number(form.elements.limit.value)); poller.now(); });
  N.$("#next").addEventListener("click", () => { offset += Number(form.elements.limit.value); poller.now(); });

  N.api("POST", "/api/catalog/list", { resource_type: "Playbook" }).then((body) => {
    const paths = [...new Set((body.entries || []).map((e) => e.path))].sort();
    N.fill(N.$("#playbooks"), paths.map((p) => N.el("option", { value: p })));
  }).catch(() => {});
})();
