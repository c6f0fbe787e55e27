// The web console's script (docs/ui.md): confirmations, the DAG's task detail, pan and
// zoom, and live updates from /ui/ws (resuming with `since` after a reconnect).
// No inline script anywhere: the Content-Security-Policy allows only this file.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

// The session renews itself while a page is open: /ui/session renews a lapsed access
// token with the refresh cookie (204), or says there is no session left (401: the
// login page). Asked every few minutes, and before a lost stream reconnects.
async function keepSession() {
  try {
    const response = await fetch("/ui/session", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      window.location.assign(`/ui/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
    }
  } catch (error) {
    // The server is away: the stream's reconnection tries again.
  }
}
if (document.querySelector('meta[name="csrf-token"]')) window.setInterval(keepSession, 4 * 60 * 1000);

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.confirm");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

const main = document.querySelector("main.workflow-page");
if (main) workflowPage(main);

function workflowPage(main) {
  const workflowId = main.dataset.workflowId;
  const detail = document.getElementById("detail");
  const svg = document.getElementById("dag");
  const graph = document.getElementById("graph");
  const live = document.getElementById("live");
  const nodes = new Map();
  for (const node of svg.querySelectorAll(".node")) nodes.set(node.dataset.taskId, node);
  let selected = null;

  async function openTask(node) {
    if (selected) selected.classList.remove("selected");
    selected = node;
    node.classList.add("selected");
    const response = await fetch(`/ui/tasks/${encodeURIComponent(node.dataset.taskId)}?fragment=1`, {
      headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin",
    });
    if (response.redirected && response.url.includes("/ui/login")) { window.location.assign(response.url); return; }
    detail.innerHTML = await response.text();  // server-rendered, escaped HTML
    detail.focus?.();
  }
  svg.addEventListener("click", (event) => {
    const node = event.target.closest(".node");
    if (node) openTask(node);
  });
  svg.addEventListener("keydown", (event) => {
    const node = event.target.closest(".node");
    if (node && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); openTask(node); }
  });

  // Zoom with + / − (keyboard) or Ctrl + wheel; pan by dragging (the box also scrolls).
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value;
  let scale = 1;
  function zoom(factor) {
    scale = Math.min(3, Math.max(0.2, scale * factor));
    svg.setAttribute("width", String(Math.round(width * scale)));
    svg.setAttribute("height", String(Math.round(height * scale)));
  }
  graph.addEventListener("keydown", (event) => {
    if (event.key === "+" || event.key === "=") zoom(1.2);
    else if (event.key === "-") zoom(1 / 1.2);
  });
  graph.addEventListener("wheel", (event) => {
    if (!event.ctrlKey) return;
    event.preventDefault();
    zoom(event.deltaY < 0 ? 1.1 : 1 / 1.1);
  }, { passive: false });
  let drag = null;
  graph.addEventListener("pointerdown", (event) => {
    if (event.target.closest(".node")) return;
    drag = { x: event.clientX, y: event.clientY, left: graph.scrollLeft, top: graph.scrollTop };
    graph.classList.add("dragging");
  });
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    graph.scrollLeft = drag.left - (event.clientX - drag.x);
    graph.scrollTop = drag.top - (event.clientY - drag.y);
  });
  window.addEventListener("pointerup", () => { drag = null; graph.classList.remove("dragging"); });

  // Live: events of this workflow, applied in one animation frame per burst.
  let pending = [];
  let scheduled = false;
  const FINAL = new Set(["Completed", "Failed", "Cancelled", "RolledBack"]);

  function setStatus(node, status) {
    if (node.dataset.status === status) return;
    node.classList.remove(`status-${node.dataset.status.toLowerCase()}`);
    node.classList.add(`status-${status.toLowerCase()}`);
    node.dataset.status = status;
    const label = node.querySelector("text.state");
    if (label) label.textContent = status;
    node.setAttribute("aria-label", node.getAttribute("aria-label").replace(/: [A-Za-z]+/, `: ${status}`));
    if (node === selected) openTask(node);
  }
  function setWorkflowStatus(status) {
    const badge = document.getElementById("workflow-status");
    badge.className = `badge status-${status.toLowerCase()}`;
    badge.textContent = status;
    main.dataset.final = FINAL.has(status) ? "true" : "false";
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.disabled = FINAL.has(status);
    const rollback = document.getElementById("rollback");
    if (rollback) rollback.disabled = !FINAL.has(status);
  }
  function recount() {
    const counts = {};
    for (const node of nodes.values()) counts[node.dataset.status] = (counts[node.dataset.status] || 0) + 1;
    const box = document.getElementById("counts");
    box.replaceChildren(...Object.keys(counts).sort().map((status) => {
      const badge = document.createElement("span");
      badge.className = `badge status-${status.toLowerCase()}`;
      badge.textContent = `${status} ${counts[status]}`;
      return badge;
    }).flatMap((badge) => [badge, document.createTextNode(" ")]));
  }
  function apply() {
    scheduled = false;
    const batch = pending;
    pending = [];
    for (const message of batch) {
      const data = message.data || {};
      const taskId = message.metadata?.task_id;
      if (message.event_type === "TaskStatusChanged" && taskId && nodes.has(taskId) && data.status) {
        setStatus(nodes.get(taskId), data.status);
      } else if (message.event_type === "WorkflowStatusChanged" && data.status) {
        setWorkflowStatus(data.status);
      }
    }
    recount();
    refreshProgress();
  }
  // The progress panel (ETA, a batch's operations) is the server's: fetched again at
  // most once a second while events come.
  const progress = document.getElementById("progress");
  let progressDue = null;
  function refreshProgress() {
    if (!progress || progressDue) return;
    progressDue = window.setTimeout(async () => {
      progressDue = null;
      const response = await fetch(`/ui/workflows/${encodeURIComponent(workflowId)}/progress`, {
        credentials: "same-origin",
      });
      if (response.ok && !response.redirected) progress.innerHTML = await response.text();  // escaped HTML
    }, 1000);
  }
  follow({ workflow_id: workflowId }, Number(main.dataset.since || 0), live, (batch) => {
    pending.push(...batch);
    if (!scheduled) { scheduled = true; window.requestAnimationFrame(apply); }
  });
}

// Follows /ui/ws from `since`, handing each message batch to `onEvents`; after a lost
// connection it reconnects (backing off) and resumes from the last seq it saw.
function follow(filter, since, live, onEvents) {
  const decoder = new TextDecoder();
  let delay = 500;
  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ ...filter, since: String(since) });
    const socket = new WebSocket(`${scheme}//${window.location.host}/ui/ws?${query}`);
    socket.binaryType = "arraybuffer";
    socket.addEventListener("open", () => {
      if (live) { live.dataset.state = "live"; live.textContent = "live"; }
      delay = 500;
    });
    socket.addEventListener("message", (event) => {
      const text = typeof event.data === "string" ? event.data : decoder.decode(event.data);
      const message = JSON.parse(text);
      if (typeof message.seq !== "number") return;  // errors, acknowledgements
      since = Math.max(since, message.seq);
      onEvents([message]);
    });
    socket.addEventListener("close", () => {
      if (live) { live.dataset.state = "reconnecting"; live.textContent = "reconnecting…"; }
      // The access token may have lapsed: renew the session first (or go to the login).
      window.setTimeout(() => keepSession().then(connect), delay);
      delay = Math.min(delay * 2, 10000);
    });
  }
  connect();
}

// The workflow list: statuses change in place; new workflows are announced.
const list = document.querySelector("main.workflows-page");
if (list) {
  const live = document.getElementById("live");
  const fresh = document.getElementById("fresh");
  let added = 0;
  follow({ event_types: "WorkflowStatusChanged,WorkflowSubmitted" }, Number(list.dataset.since || 0), live, (batch) => {
    for (const message of batch) {
      const id = message.metadata?.workflow_id;
      if (message.event_type === "WorkflowSubmitted") {
        added += 1;
        fresh.hidden = false;
        fresh.querySelector("a").textContent = `${added} new workflow${added === 1 ? "" : "s"}: show`;
        continue;
      }
      const badge = id && document.querySelector(`tr[data-workflow-id="${CSS.escape(id)}"] .badge`);
      if (badge && message.data?.status) {
        badge.className = `badge status-${message.data.status.toLowerCase()}`;
        badge.textContent = message.data.status;
      }
    }
  });
}

// The event log, live: rows newest first, the oldest dropped past the page's limit.
const eventsPage = document.querySelector("main.events-page");
if (eventsPage) {
  const body = document.querySelector("#events tbody");
  const keep = 500;
  const filter = {};
  if (eventsPage.dataset.eventTypes) filter.event_types = eventsPage.dataset.eventTypes;
  if (eventsPage.dataset.workflowId) filter.workflow_id = eventsPage.dataset.workflowId;
  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }
  follow(filter, Number(eventsPage.dataset.since || 0), document.getElementById("live"), (batch) => {
    for (const message of batch) {
      const row = document.createElement("tr");
      row.dataset.seq = String(message.seq);
      const workflowId = message.metadata?.workflow_id || "";
      const link = document.createElement("td");
      if (workflowId) {
        const a = document.createElement("a");
        a.href = `/ui/workflows/${encodeURIComponent(workflowId)}`;
        a.textContent = workflowId.slice(-12);
        link.append(a);
      }
      row.append(
        cell(String(message.seq)),
        cell(String(message.timestamp || "").slice(11, 19)),
        cell(message.event_type, "type"),
        link,
        cell((message.metadata?.task_id || "").slice(-12)),
        cell(JSON.stringify(message.data || {}), "data"),
      );
      body.prepend(row);
    }
    while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
  });
}

// Metrics: a sample every 2 s, the last 150 charted (5 minutes). Rates and the duration
// percentile come from the difference between two samples of cumulative counters.
const metricsPage = document.querySelector("main.metrics-page");
if (metricsPage) {
  const KEEP = 150;
  const series = { running: [], queued: [], throughput: [], p95: [] };
  let previous = null;
  function percentile(now, before, q) {
    const total = now.count - before.count;
    if (total <= 0) return null;
    let last = null;
    for (let i = 0; i < now.buckets.length; i++) {
      const [le, count] = now.buckets[i];
      const seen = count - (before.buckets[i] ? before.buckets[i][1] : 0);
      if (le !== null) last = le;
      if (seen >= q * total) return le === null ? last : le;
    }
    return last;
  }
  function draw(name, unit) {
    const figure = metricsPage.querySelector(`figure[data-series="${name}"]`);
    const values = series[name];
    const known = values.filter((v) => v !== null);
    const top = Math.max(1e-9, ...known);
    const points = [];
    values.forEach((value, i) => {
      if (value === null) return;
      const x = (300 * i) / (KEEP - 1);
      const y = 58 - (56 * value) / top;
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    figure.querySelector("polyline").setAttribute("points", points.join(" "));
    const latest = known.length ? known[known.length - 1] : null;
    figure.querySelector(".now").textContent = latest === null ? "–" : `${Number(latest.toFixed(3))}${unit}`;
  }
  function push(name, value) {
    series[name].push(value);
    if (series[name].length > KEEP) series[name].shift();
  }
  const live = document.getElementById("live");
  async function sample() {
    try {
      const response = await fetch("/ui/metrics/sample", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) { await keepSession(); return; }
      if (!response.ok) throw new Error(String(response.status));
      const now = await response.json();
      push("running", now.running);
      push("queued", now.queued);
      if (previous) {
        const seconds = (Date.parse(now.at) - Date.parse(previous.at)) / 1000;
        push("throughput", seconds > 0 ? (now.tasks_ended - previous.tasks_ended) / seconds : null);
        push("p95", percentile(now.durations, previous.durations, 0.95));
      }
      previous = now;
      draw("running", ""); draw("queued", ""); draw("throughput", "/s"); draw("p95", " s");
      document.getElementById("active-workflows").textContent = String(now.active_workflows);
      document.getElementById("tasks-ended").textContent = String(Math.round(now.tasks_ended));
      live.dataset.state = "live"; live.textContent = "live";
    } catch (error) {
      live.dataset.state = "reconnecting"; live.textContent = "no answer; retrying…";
    }
  }
  sample();
  window.setInterval(sample, 2000);
}
