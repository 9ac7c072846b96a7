/* Shared helpers of the NoETL UI pages: the JSON API, element building, formats, polling. */
(function () {
  "use strict";
  const N = (window.NoETL = window.NoETL || {});

  N.api = async function (method, path, body) {
    const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["content-type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("not logged in");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    if (!response.ok) throw new Error((data && (data.error || data.detail)) || `HTTP ${response.status}`);
    return data;
  };
  N.get = (path) => N.api("GET", path);

  /* el("a", {href: "/x", class: "y"}, "text", child, ...) */
  N.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (v === null || v === undefined || v === false) return;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    });
    children.flat(Infinity).forEach((c) => {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return node;
  };
  N.$ = (selector) => document.querySelector(selector);

  N.badge = (status) => N.el("span", { class: `badge ${status}` }, String(status || "").toLowerCase());
  N.time = function (iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };
  N.duration = function (ms) {
    if (ms === null || ms === undefined) return "";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} m`;
  };
  N.runLink = (id) => N.el("a", { href: `/ui/runs/${id}`, class: "mono" }, id);
  N.fill = function (tbody, rows) {
    tbody.textContent = "";
    rows.forEach((r) => tbody.appendChild(r));
  };
  N.empty = (cols, text) => N.el("tr", {}, N.el("td", { colspan: cols, class: "muted" }, text));

  N.toast = function (text) {
    const t = N.$("#toast");
    t.textContent = text;
    t.classList.add("show");
    setTimeout(() => t.classList.remove("show"), 2500);
  };

  /* Run `task` now and every `ms` while `wanted()` says so and the page is visible. */
  N.poll = function (task, ms, wanted) {
    let timer = null, busy = false;
    const live = N.$("#live");
    const tick = async () => {
      if (busy) return;
      busy = true;
      try { await task(); } catch (e) { N.toast(e.message); } finally { busy = false; }
      const on = !wanted || wanted();
      if (live) live.classList.toggle("on", on);
      clearTimeout(timer);
      if (on) timer = setTimeout(() => { if (!document.hidden) tick(); else schedule(); }, ms);
    };
    const schedule = () => { timer = setTimeout(() => (document.hidden ? schedule() : tick()), ms); };
    tick();
    return { now: tick };
  };

  /* A JSON object typed in a textarea, or an Error saying what is wrong. */
  N.parseObject = function (text) {
    const value = JSON.parse(text.trim() || "{}");
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("the payload must be a JSON object");
    return value;
  };
})();
