/* Catalog: playbooks and their versions, the YAML, and an execute form with a payload editor. */
(function () {
  "use strict";
  const N = window.NoETL;
  let entries = [];
  let byPath = new Map();
  const params = new URLSearchParams(location.search);

  function show(path, version) {
    const versions = byPath.get(path) || [];
    const entry = versions.find((e) => String(e.version) === String(version)) || versions[0];
    if (!entry) return;
    history.replaceState(null, "", `/ui/catalog?path=${encodeURIComponent(path)}&version=${entry.version}`);
    document.querySelectorAll("#playbook-list li").forEach((li) => li.classList.toggle("selected", li.dataset.path === path));
    N.$("#entry").hidden = false;
    N.$("#entry-path").textContent = path;
    const select = N.$("#entry-version");
    N.fill(select, versions.map((e) => N.el("option", { value: e.version, selected: e.version === entry.version }, `v${e.version}`)));
    select.onchange = () => show(path, select.value);
    N.fill(N.$("#entry-facts"), [
      N.el("span", {}, "catalog id ", N.el("b", { class: "mono" }, entry.catalog_id)),
      N.el("span", {}, "kind ", N.el("b", {}, entry.kind)),
      N.el("span", {}, "registered ", N.el("b", {}, N.time(entry.created_at))),
    ]);
    N.$("#yaml").textContent = entry.content;
    N.$("#entry-runs").href = `/ui/runs?playbook=${encodeURIComponent(path)}`;
    N.$("#execute-form").dataset.catalogId = entry.catalog_id;
  }

  N.$("#execute-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = N.$("#execute-error");
    error.hidden = true;
    try {
      const payload = N.parseObject(N.$("#payload").value);
      const started = await N.api("POST", "/api/execute", { catalog_id: ev.target.dataset.catalogId, payload });
      location.href = `/ui/runs/${started.execution_id}`;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });

  N.api("POST", "/api/catalog/list", {}).then((body) => {
    entries = body.entries || [];
    byPath = new Map();
    entries.forEach((e) => { if (!byPath.has(e.path)) byPath.set(e.path, []); byPath.get(e.path).push(e); });
    byPath.forEach((list) => list.sort((a, b) => b.version - a.version));
    const paths = [...byPath.keys()].sort();
    N.fill(N.$("#playbook-list"), paths.length ? paths.map((p) => N.el("li", { "data-path": p, onclick: () => show(p) },
      N.el("span", {}, p), N.el("small", {}, `v${byPath.get(p)[0].version}`))) : [N.el("li", { class: "muted" }, "The catalog is empty: noetl register FILE")]);
    const wanted = params.get("path");
    if (wanted && byPath.has(wanted)) show(wanted, params.get("version"));
    else if (paths.length) show(paths[0]);
  }).catch((e) => N.toast(e.message));
})();
