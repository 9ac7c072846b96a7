/* A small collapsible JSON viewer: NoETL.json(value) returns an element. */
(function () {
  "use strict";
  const OPEN_DEPTH = 2;
  const MAX_ITEMS = 500;

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function scalar(value) {
    if (value === null || value === undefined) return span("z", "null");
    if (typeof value === "string") return span("s", JSON.stringify(value));
    if (typeof value === "number") return span("n", String(value));
    if (typeof value === "boolean") return span("b", String(value));
    return span("z", String(value));
  }

  function node(key, value, depth) {
    const row = document.createElement("div");
    const label = key === null ? null : span("k", JSON.stringify(key) + ": ");
    if (value === null || typeof value !== "object") {
      if (label) row.appendChild(label);
      row.appendChild(scalar(value));
      return row;
    }
    const isArray = Array.isArray(value);
    const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (entries.length === 0) {
      if (label) row.appendChild(label);
      row.appendChild(span("z", isArray ? "[]" : "{}"));
      return row;
    }
    const details = document.createElement("details");
    if (depth < OPEN_DEPTH) details.open = true;
    const summary = document.createElement("summary");
    if (label) summary.appendChild(label);
    summary.appendChild(span("hint", isArray ? `[${entries.length}]` : `{${entries.length}}`));
    details.appendChild(summary);
    let filled = false;
    const fill = () => {
      if (filled) return;
      filled = true;
      entries.slice(0, MAX_ITEMS).forEach(([k, v]) => details.appendChild(node(isArray ? null : k, v, depth + 1)));
      if (entries.length > MAX_ITEMS) details.appendChild(span("hint", `… ${entries.length - MAX_ITEMS} more`));
    };
    if (details.open) fill();
    details.addEventListener("toggle", fill);
    return details;
  }

  window.NoETL = window.NoETL || {};
  window.NoETL.json = function (value) {
    const root = document.createElement("div");
    root.className = "json-view";
    root.appendChild(node(null, value, 0));
    return root;
  };
})();
