/* The playbook as a graph: a layered layout of steps (top to bottom) drawn as SVG, each step
   coloured by its state; and a Gantt chart of the steps' times. No library. */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const W = 150, H = 42, GAP_X = 34, GAP_Y = 48, PAD = 16;

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    Object.entries(attrs || {}).forEach(([k, v]) => el.setAttribute(k, v));
    if (parent) parent.appendChild(el);
    return el;
  }

  /* Edges that close a cycle (found by a depth-first walk from the first step). */
  function backEdges(names, out) {
    const state = {}, back = new Set();
    const visit = (n) => {
      state[n] = 1;
      (out[n] || []).forEach((m) => {
        if (state[m] === 1) back.add(n + "\u0000" + m);
        else if (!state[m]) visit(m);
      });
      state[n] = 2;
    };
    names.forEach((n) => { if (!state[n]) visit(n); });
    return back;
  }

  function layout(nodes, edges) {
    const names = nodes.map((n) => n.name);
    const out = {}, inn = {};
    names.forEach((n) => { out[n] = []; inn[n] = []; });
    edges.forEach((e) => { if (out[e.from] && inn[e.to]) { out[e.from].push(e.to); } });
    const back = backEdges(names, out);
    const forward = edges.filter((e) => out[e.from] && inn[e.to] && !back.has(e.from + "\u0000" + e.to));
    forward.forEach((e) => inn[e.to].push(e.from));
    const layer = {}, pending = {};
    names.forEach((n) => { pending[n] = inn[n].length; layer[n] = 0; });
    const queue = names.filter((n) => pending[n] === 0);
    while (queue.length) {
      const n = queue.shift();
      forward.filter((e) => e.from === n).forEach((e) => {
        layer[e.to] = Math.max(layer[e.to], layer[n] + 1);
        if (--pending[e.to] === 0) queue.push(e.to);
      });
    }
    const rows = [];
    names.forEach((n) => { (rows[layer[n]] = rows[layer[n]] || []).push(n); });
    const x = {};
    rows.forEach((row, i) => {
      if (i > 0) {
        const centre = (n) => {
          const parents = inn[n].filter((p) => x[p] !== undefined);
          return parents.length ? parents.reduce((s, p) => s + x[p], 0) / parents.length : 0;
        };
        row.sort((a, b) => centre(a) - centre(b));
      }
      row.forEach((n, j) => { x[n] = j; });
    });
    const widest = Math.max(1, ...rows.map((r) => r.length));
    const pos = {};
    rows.forEach((row, i) => {
      const offset = (widest - row.length) * (W + GAP_X) / 2;
      row.forEach((n, j) => { pos[n] = { x: PAD + offset + j * (W + GAP_X), y: PAD + i * (H + GAP_Y) }; });
    });
    return { pos, back, width: PAD * 2 + widest * (W + GAP_X) - GAP_X, height: PAD * 2 + rows.length * (H + GAP_Y) - GAP_Y };
  }

  function edgePath(a, b, isBack) {
    if (isBack) {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x + W, y2 = b.y + H / 2, bend = 40;
      return `M${x1},${y1} C${x1 + bend},${y1} ${x2 + bend},${y2} ${x2 + 4},${y2}`;
    }
    const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y - 2, mid = (y1 + y2) / 2;
    return `M${x1},${y1} C${x1},${mid} ${x2},${mid} ${x2},${y2}`;
  }

  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  function draw(container, graph, options) {
    const opts = options || {};
    container.textContent = "";
    if (!graph || !graph.nodes.length) { container.textContent = "No steps yet."; return; }
    const { pos, back, width, height } = layout(graph.nodes, graph.edges);
    const root = svg("svg", { viewBox: `0 0 ${width + 50} ${height}`, width: width + 50, role: "img" }, container);
    const defs = svg("defs", {}, root);
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6b7588" }, marker);
    graph.edges.forEach((e) => {
      if (!pos[e.from] || !pos[e.to]) return;
      const isBack = back.has(e.from + "\u0000" + e.to);
      const cls = "edge" + (e.taken ? " taken" : "") + (!e.taken && opts.ended ? " dead" : "");
      const p = svg("path", { d: edgePath(pos[e.from], pos[e.to], isBack), class: cls, "marker-end": "url(#arrow)", "data-from": e.from, "data-to": e.to }, root);
      if (e.when) svg("title", {}, p).textContent = `when ${e.when}`;
    });
    graph.nodes.forEach((n) => {
      const at = pos[n.name];
      const g = svg("g", { class: `node ${n.status}`, transform: `translate(${at.x},${at.y})`, "data-step": n.name, "data-status": n.status, tabindex: 0 }, root);
      svg("rect", { width: W, height: H, rx: 6, class: `fill-${n.status}` }, g);
      svg("text", { x: 10, y: 17 }, g).textContent = clip(n.name, 20);
      svg("text", { x: 10, y: 33, class: "kind" }, g).textContent = `${n.tool_kind || ""}${n.loop ? " · loop" : ""} · ${n.status}`;
      svg("title", {}, g).textContent = `${n.name}: ${n.status}`;
      if (opts.onSelect) {
        g.addEventListener("click", () => opts.onSelect(n.name));
        g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") opts.onSelect(n.name); });
      }
      if (opts.selected === n.name) g.classList.add("selected");
    });
  }

  /* Horizontal bars of each step from its start to its end (or now, while it runs). */
  function gantt(container, steps, runStart, runEnd) {
    container.textContent = "";
    const t0 = Date.parse(runStart);
    const timed = steps.filter((s) => s.started_at);
    if (!timed.length || isNaN(t0)) { container.textContent = "No step has started yet."; return; }
    const end = runEnd ? Date.parse(runEnd) : Date.now();
    const span = Math.max(1, end - t0);
    const label = 140, width = 900, row = 20;
    const root = svg("svg", { viewBox: `0 0 ${width} ${timed.length * row + 24}`, preserveAspectRatio: "none" }, container);
    timed.forEach((s, i) => {
      const a = Date.parse(s.started_at) - t0;
      const b = (s.ended_at ? Date.parse(s.ended_at) : end) - t0;
      const x = label + (a / span) * (width - label - 60);
      const w = Math.max(2, ((b - a) / span) * (width - label - 60));
      svg("text", { x: 0, y: i * row + 14 }, root).textContent = clip(s.name, 22);
      const bar = svg("rect", { x, y: i * row + 3, width: w, height: row - 6, rx: 3, class: `fill-${s.status}` }, root);
      svg("title", {}, bar).textContent = `${s.name}: ${s.status}, ${Math.round(b - a)} ms`;
      svg("text", { x: x + w + 4, y: i * row + 14 }, root).textContent = `${Math.round(b - a)} ms`;
    });
    svg("text", { x: label, y: timed.length * row + 18 }, root).textContent = "0";
    svg("text", { x: width - 60, y: timed.length * row + 18 }, root).textContent = `${Math.round(span)} ms`;
  }

  window.NoETL = window.NoETL || {};
  window.NoETL.graph = draw;
  window.NoETL.gantt = gantt;
})();
