/* Workers and pools: live workers with what they run, commands waiting per pool, runtimes,
   credentials (names and types only). */
(function () {
  "use strict";
  const N = window.NoETL;

  function running(list) {
    if (!list || !list.length) return N.el("span", { class: "muted" }, "idle");
    return N.el("div", {}, list.map((c) => N.el("div", { class: "mono" },
      N.el("a", { href: `/ui/runs/${c.execution_id}` }, c.execution_id), ` ${c.step || ""}`)));
  }

  async function load() {
    const [activity, runtimes] = await Promise.all([N.get("/api/activity"), N.get("/api/worker/pools")]);
    const livePerPool = {};
    activity.workers.forEach((w) => (w.pools || []).forEach((p) => { livePerPool[p] = (livePerPool[p] || 0) + 1; }));
    const pools = new Map(activity.pools.map((p) => [p.pool, p.waiting]));
    Object.keys(livePerPool).forEach((p) => { if (!pools.has(p)) pools.set(p, 0); });
    N.fill(N.$("#pools tbody"), pools.size ? [...pools].map(([pool, waiting]) => N.el("tr", {},
      N.el("td", {}, pool), N.el("td", {}, waiting), N.el("td", {}, livePerPool[pool] || 0))) : [N.empty(3, "No pool has work or workers.")]);
    N.fill(N.$("#workers tbody"), activity.workers.length ? activity.workers.map((w) => N.el("tr", { class: "worker-row", "data-worker": w.name },
      N.el("td", {}, w.name), N.el("td", {}, w.kind), N.el("td", {}, (w.pools || []).join(", ")), N.el("td", {}, w.hostname || ""),
      N.el("td", {}, w.free_slots === null || w.free_slots === undefined ? "" : `${w.free_slots} / ${w.capacity}`),
      N.el("td", {}, N.time(w.heartbeat)), N.el("td", {}, running(w.running)))) : [N.empty(7, "No live worker.")]);
    N.fill(N.$("#runtimes tbody"), runtimes.length ? runtimes.map((r) => N.el("tr", {},
      N.el("td", {}, r.name), N.el("td", {}, r.kind), N.el("td", {}, r.status), N.el("td", {}, r.capacity ?? ""),
      N.el("td", {}, N.time(r.heartbeat)))) : [N.empty(5, "No registered worker.")]);
  }

  N.poll(load, 2000);
  N.get("/api/credentials").then((body) => {
    const items = body.items || [];
    N.fill(N.$("#credentials tbody"), items.length ? items.map((c) => N.el("tr", {},
      N.el("td", {}, c.name), N.el("td", {}, c.type), N.el("td", {}, c.description || ""))) : [N.empty(3, "No credentials.")]);
  }).catch((e) => N.toast(e.message));
})();
