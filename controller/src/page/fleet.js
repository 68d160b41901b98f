// The fleet page: polls the controller's view every 2 s and renders it. Read-only.
// Every string from the fleet goes into the DOM as text (append, textContent) or as an attribute
// value of a fixed attribute; markup is never built from data.
"use strict";

const API = "/api/v1alpha1/fleet";
const POLL_MS = 2000;
const WINDOW_MS = 15 * 60 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

// Health -> [label, style class]; the classes are fixed, never taken from data.
const HEALTH = {
  NotReady: ["Not ready", "bad"],
  Offline: ["Offline", "off"],
  Degraded: ["Degraded", "warn"],
  Healthy: ["Healthy", "ok"],
};

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(value, digits) {
  if (typeof value !== "number" || !isFinite(value)) return "-";
  if (Math.abs(value) >= 10000) {
    return new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format(value);
  }
  return value.toLocaleString("en", { maximumFractionDigits: digits ?? 0 });
}

function plural(count, noun) {
  return number(count) + " " + noun + (count === 1 ? "" : noun.endsWith("s") ? "es" : "s");
}

function rate(value) {
  return number(value, value < 10 ? 2 : 1);
}

function ago(ms) {
  if (!isFinite(ms)) return "-";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

function condition(status, type) {
  return (status.conditions || []).find((c) => c.type === type);
}

function setStatus(text, level) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = "status" + (level ? " " + level : "");
}

function renderStatus(view) {
  if (!view.leading) {
    setStatus("This replica stands by: another replica leads and knows the fleet. " +
      "Open the page on the leading replica (the holder of the controller's Lease).", "warn");
  } else if (!view.atMs) {
    setStatus("Waiting for the controller's first round…", "warn");
  } else if (view.ageMs > 10000) {
    setStatus("The controller's loop has not gone round for " + Math.round(view.ageMs / 1000) +
      " s: what is shown may be out of date (see /readyz).", "bad");
  } else if (!view.synced) {
    setStatus("Updated " + clock(view.atMs) + " · the cloud broker link is down or replaying: " +
      "node statuses may be missing.", "warn");
  } else {
    setStatus("Updated " + clock(view.atMs) + " · " + plural(view.counts.total, "node") + ", " +
      plural(view.classes.length, "class"));
  }
}

function card(value, label, level) {
  return el("div", "card" + (level ? " " + level : ""), el("div", "value", value), el("div", "label", label));
}

function renderCards(view) {
  const counts = view.counts;
  const last = view.history.samples[view.history.samples.length - 1];
  document.getElementById("cards").replaceChildren(
    card(number(counts.total), "nodes"),
    card(number(counts.healthy), "healthy", counts.healthy ? "ok" : ""),
    card(number(counts.notReady), "not ready", counts.notReady ? "bad" : ""),
    card(number(counts.degraded), "degraded", counts.degraded ? "warn" : ""),
    card(number(counts.offline), "offline", counts.offline ? "off" : ""),
    card(number(view.classes.length), "classes"),
    card(last ? rate(last.interactionsPerS) : "-", "interactions/s"),
    card(last ? rate(last.faultsPerS) : "-", "faults/s", last && last.faultsPerS > 0 ? "bad" : ""),
  );
}

// A round upper bound for an axis: 1, 2 or 5 times a power of ten.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function renderChart(history) {
  const chart = document.getElementById("chart");
  const samples = history.samples;
  chart.replaceChildren();
  chart.setAttribute("data-samples", String(samples.length));
  const left = 48, right = 744, bucketMs = history.bucketS * 1000;
  const end = samples.length ? samples[samples.length - 1].atMs + bucketMs : Date.now();
  const start = end - WINDOW_MS;
  const x = (ms) => left + ((ms - start) / WINDOW_MS) * (right - left);
  const panels = [
    { key: "interactionsPerS", label: "interactions/s", kind: "interactions", top: 16, height: 120 },
    { key: "faultsPerS", label: "faults/s", kind: "faults", top: 176, height: 80 },
  ];
  for (const panel of panels) {
    const max = niceMax(Math.max(0, ...samples.map((s) => s[panel.key])));
    const y = (value) => panel.top + panel.height - (value / max) * panel.height;
    chart.append(svg("text", { x: left, y: panel.top - 4, class: "panel-label" }, panel.label));
    for (const tick of [0, max / 2, max]) {
      chart.append(svg("line", { x1: left, x2: right, y1: y(tick), y2: y(tick), class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis-label" },
        rate(tick)));
    }
    // Each sample is plotted at the middle of its bucket.
    const points = samples.map((s) => [x(s.atMs + bucketMs / 2), y(s[panel.key])]);
    if (points.length) {
      const line = points.map(([px, py]) => px.toFixed(1) + "," + py.toFixed(1)).join(" ");
      const base = y(0).toFixed(1);
      chart.append(svg("polygon", {
        class: "area " + panel.kind,
        points: points[0][0].toFixed(1) + "," + base + " " + line + " " +
          points[points.length - 1][0].toFixed(1) + "," + base,
      }));
      chart.append(svg("polyline", { class: "line " + panel.kind, points: line }));
      const [lx, ly] = points[points.length - 1];
      chart.append(svg("circle", { class: "dot " + panel.kind, cx: lx, cy: ly, r: 3 }));
      samples.forEach((s, i) => {
        const hover = svg("circle", { class: "hover", cx: points[i][0], cy: points[i][1], r: 5 });
        hover.append(svg("title", {}, clock(s.atMs) + ": " + rate(s[panel.key]) + " " + panel.label));
        chart.append(hover);
      });
    }
  }
  const axis = 276;
  for (let minutes = 15; minutes >= 0; minutes -= 5) {
    const at = end - minutes * 60000;
    chart.append(svg("line", { x1: x(at), x2: x(at), y1: 16, y2: 256, class: "grid" }));
    const anchor = minutes === 15 ? "start" : minutes ? "middle" : "end";
    chart.append(svg("text", { x: x(at), y: axis, "text-anchor": anchor, class: "axis-label" },
      minutes ? "−" + minutes + " min" : clock(end)));
  }
  if (!samples.length) {
    chart.append(svg("text", { x: 396, y: 80, "text-anchor": "middle", class: "empty" },
      "No data yet: the first point shows about 20 s after the controller started."));
  }
}

function renderRollouts(view) {
  const active = view.classes.filter((c) => c.rollout &&
    (c.rollout.phase === "Progressing" || c.rollout.phase === "Paused"));
  const box = document.getElementById("rollouts");
  if (!active.length) {
    box.replaceChildren(el("p", "note", "No rollout in progress."));
    return;
  }
  box.replaceChildren(...active.map((c) => {
    const r = c.rollout;
    // The bar: the share of the class's nodes on the target version.
    const nodes = r.updatedNodes + r.pendingNodes;
    const bar = el("div", "progress" + (r.phase === "Paused" ? " paused" : ""), el("div"));
    bar.firstChild.style.width = (nodes ? Math.round((r.updatedNodes / nodes) * 100) : 0) + "%";
    const facts = [
      (r.stableVersion || "-") + " → " + r.targetVersion,
      number(r.updatedNodes) + " of " + plural(nodes, "node") + " updated: " +
        number(r.healthyNodes) + " healthy, " + number(r.failingNodes) + " failing",
    ];
    if (r.stepStartedAt) facts.push("step started " + ago(view.atMs - Date.parse(r.stepStartedAt)));
    return el("div", "rollout",
      el("div", "title", c.name + " · " + r.phase + " · step " + r.step),
      bar,
      el("div", "", r.message),
      r.gate && !r.message.includes(r.gate) ? el("div", "facts", "gate: " + r.gate) : null,
      r.shadow ? el("div", "facts", "shadow: " + r.shadow) : null,
      el("div", "facts", facts.join(" · ")));
  }));
}

function emptyRow(columns, text) {
  const cell = el("td", "empty", text);
  cell.colSpan = columns;
  return el("tr", "", cell);
}

function renderClasses(view) {
  const body = document.querySelector("#classes tbody");
  if (!view.classes.length) {
    body.replaceChildren(emptyRow(7, "No device class is declared."));
    return;
  }
  body.replaceChildren(...view.classes.map((c) => {
    const ready = condition(c, "Ready");
    const degraded = condition(c, "Degraded");
    const level = degraded && degraded.status === "True" ? "bad"
      : ready && ready.status === "True" ? "ok" : "warn";
    const versions = el("td", "", ...(c.versions || []).map((v) =>
      el("span", "chip", v.version + " on " + number(v.nodes) + (v.nodes === 1 ? " node" : " nodes"))));
    if (!(c.versions || []).length) versions.append("-");
    const readyCell = el("td", "", el("span", "badge " + level,
      ready ? (ready.status === "True" ? "Ready" : ready.reason) : "-"));
    if (ready) readyCell.title = ready.message;
    const rollout = c.rollout ? c.rollout.phase + " " + c.rollout.step : "-";
    return el("tr", level === "ok" ? "" : level,
      el("td", "", el("strong", "", c.name)),
      el("td", "", c.targetVersion || "-"),
      versions,
      el("td", "num", number(c.updatedNodes) + " / " + number(c.selectedNodes)),
      el("td", "num", number(c.failingNodes)),
      readyCell,
      el("td", "", rollout));
  }));
}

function renderNodes(view) {
  const body = document.querySelector("#nodes tbody");
  const counts = view.counts;
  document.getElementById("nodes-note").textContent = counts.shown < counts.total
    ? "Showing " + number(counts.shown) + " of " + number(counts.total) + " nodes, the unhealthy first."
    : "Unhealthy nodes first.";
  if (!view.nodes.length) {
    body.replaceChildren(emptyRow(10, "No node has reported yet."));
    return;
  }
  body.replaceChildren(...view.nodes.map((n) => {
    const [label, level] = HEALTH[n.health] || [String(n.health), "off"];
    const classes = el("td", "", ...(n.classes || []).map((c) => {
      const chip = el("span", "chip" + (c.lastError ? " bad" : "") + (c.pending ? " pending" : ""),
        c.class + " " + (c.active || "none"));
      if (c.pending) chip.append(" → " + c.pending);
      if (c.lastError) chip.title = c.lastError;
      return chip;
    }));
    if (!(n.classes || []).length) classes.append("-");
    const seen = n.lastSeen ? ago(view.atMs - Date.parse(n.lastSeen)) : "-";
    return el("tr", level === "ok" ? "" : level,
      el("td", "", el("span", "badge " + level, label)),
      el("td", "name", el("strong", "", n.name)),
      classes,
      el("td", "num", number(n.activeDevices)),
      el("td", "num", n.rate || "-"),
      el("td", "num", number(n.errors)),
      el("td", "num", number(n.outboxDepth)),
      el("td", "nowrap", seen),
      el("td", "mono", n.agentVersion || "-"),
      el("td", "why", n.reason || ""));
  }));
}

function render(view) {
  renderStatus(view);
  renderCards(view);
  renderChart(view.history);
  renderRollouts(view);
  renderClasses(view);
  renderNodes(view);
}

async function poll() {
  try {
    const response = await fetch(API, { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (error) {
    setStatus("Cannot reach the controller (" + error.message + "); trying again every 2 s.", "bad");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
