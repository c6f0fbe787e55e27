// The resource pages' script (docs/ui.md): lists and panels fetched again from the
// server as their workflows' events arrive on /ui/ws, a VM's serial console, and a
// deployment's logs following live. Uses `follow` and `keepSession` of console.js
// (loaded first). No inline script: the Content-Security-Policy allows only files.
"use strict";

// A VM or deployment page, or their lists: the server's HTML for `data-refresh-url`
// replaces #refreshed (at most once a second) when a workflow of `data-kind` changes
// status.
(function refreshOnEvents() {
  const main = document.querySelector("main[data-refresh-url]");
  if (!main) return;
  const target = document.getElementById("refreshed");
  let due = null;
  async function refresh() {
    due = null;
    try {
      const response = await fetch(main.dataset.refreshUrl, { credentials: "same-origin", cache: "no-store" });
      if (response.ok && !response.redirected) {
        target.innerHTML = await response.text();  // escaped HTML
        document.dispatchEvent(new CustomEvent("console:refreshed"));
      } else if (response.redirected && response.url.includes("/ui/login")) window.location.assign(response.url);
    } catch (error) {
      // The server is away: the next event tries again.
    }
  }
  follow({ event_types: "WorkflowStatusChanged" }, Number(main.dataset.since || 0), document.getElementById("live"), (batch) => {
    if (!batch.some((m) => m.data?.kind === main.dataset.kind)) return;
    if (!due) due = window.setTimeout(refresh, 250);
  });
})();

function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

function setState(element, state, text) {
  element.dataset.state = state;
  element.textContent = text;
}

// A VM's serial console: a small terminal in a <pre>. What the guest writes is shown as
// text (escape sequences that clear the screen do so, others are dropped; \r, \b and \n
// move the cursor); what is typed, in the console or the line form, is sent as bytes.
(function serialConsole() {
  const screen = document.getElementById("serial");
  if (!screen) return;
  const state = document.getElementById("serial-state");
  const again = document.getElementById("serial-reconnect");
  const encoder = new TextEncoder();
  const KEEP = 2000;  // lines
  let lines = [""];
  let column = 0;
  let socket = null;
  let decoder = null;
  let escape = "";  // an escape sequence being read
  let drawn = false;
  let renewed = false;  // one session renewal per failed opening

  function clear() { lines = [""]; column = 0; }
  function put(char) {
    let line = lines[lines.length - 1];
    if (column > line.length) line = line.padEnd(column, " ");
    lines[lines.length - 1] = line.slice(0, column) + char + line.slice(column + 1);
    column += 1;
  }
  function sequence(seq) {
    // ESC c (reset) and CSI 2J / 3J (erase the display) clear the screen; the rest
    // (colours, cursor moves, modes) has no meaning in a log of lines.
    if (seq === "\x1bc" || /^\x1b\[[23]J$/.test(seq)) clear();
  }
  function write(text) {
    for (const char of text) {
      if (escape) {
        escape += char;
        const done = escape.length === 2 ? escape[1] !== "[" && escape[1] !== "]" : (escape[1] === "[" ? /[@-~]/.test(char) : char === "\x07");
        if (done || escape.length > 32) { sequence(escape); escape = ""; }
        continue;
      }
      if (char === "\x1b") { escape = char; continue; }
      if (char === "\n") { lines.push(""); column = 0; continue; }
      if (char === "\r") { column = 0; continue; }
      if (char === "\b") { column = Math.max(0, column - 1); continue; }
      if (char === "\t") { do put(" "); while (column % 8); continue; }
      if (char < " " || char === "\x7f") continue;
      put(char);
    }
    if (lines.length > KEEP) lines.splice(0, lines.length - KEEP);
    if (!drawn) { drawn = true; window.requestAnimationFrame(draw); }
  }
  function draw() {
    drawn = false;
    const atBottom = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 4;
    screen.textContent = lines.join("\n");
    if (atBottom) screen.scrollTop = screen.scrollHeight;
  }
  function send(bytes) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(bytes);
  }
  function connect() {
    if (again) again.hidden = true;
    setState(state, "connecting", "connecting…");
    clear();  // the console sends the guest's recent output again
    decoder = new TextDecoder();
    let refusal = null;
    socket = new WebSocket(socketUrl(screen.dataset.url));
    socket.binaryType = "arraybuffer";
    let opened = false;
    socket.addEventListener("open", () => { opened = true; renewed = false; setState(state, "live", "connected"); });
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") {  // a refusal, or the VM's end
        try { refusal = JSON.parse(event.data); } catch (error) { refusal = { error: event.data }; }
        return;
      }
      write(decoder.decode(event.data, { stream: true }));
    });
    socket.addEventListener("close", (event) => {
      socket = null;
      const why = refusal ? `${refusal.error} (${refusal.code})` : (event.reason || "the connection ended");
      // The access token lapsed (the stream says so; a refused opening says nothing):
      // renew the session, then open it again, once.
      if (refusal?.code === "UNAUTHORIZED" || (!opened && !refusal && !renewed)) {
        renewed = true;
        setState(state, "reconnecting", "reconnecting…");
        window.setTimeout(() => keepSession().then(connect), 500);
        return;
      }
      setState(state, "closed", `closed: ${why}`);
      if (again) again.hidden = false;
    });
  }
  const KEYS = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
    ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~",
  };
  screen.addEventListener("keydown", (event) => {
    if (event.metaKey || event.altKey) return;
    let data = null;
    if (event.ctrlKey && /^[a-z]$/i.test(event.key)) data = String.fromCharCode(event.key.toUpperCase().charCodeAt(0) - 64);
    else if (event.ctrlKey) return;
    else if (KEYS[event.key] !== undefined) data = KEYS[event.key];
    else if (event.key.length === 1) data = event.key;
    if (data === null) return;
    event.preventDefault();
    send(encoder.encode(data));
  });
  screen.addEventListener("paste", (event) => {
    event.preventDefault();
    send(encoder.encode(event.clipboardData.getData("text")));
  });
  const form = document.getElementById("serial-line");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("serial-input");
    send(encoder.encode(`${input.value}\r`));
    input.value = "";
  });
  if (again) again.addEventListener("click", () => { renewed = false; connect(); });
  // The VM started again (its panel was refreshed from the event stream): reopen.
  document.addEventListener("console:refreshed", () => {
    const status = document.getElementById("vm-status");
    if (!socket && status && status.textContent.trim() === "running") connect();
  });
  connect();
})();

// A deployment's logs: each line as it comes, the oldest dropped past the page's limit;
// after a lost connection the stream opens again (each replica's tail, then new lines).
(function deploymentLogs() {
  const view = document.getElementById("logs");
  if (!view) return;
  const state = document.getElementById("logs-state");
  const keep = Number(view.dataset.keep || 1000);
  let delay = 500;
  function line(entry) {
    const row = document.createElement("span");
    row.className = `log-line level-${String(entry.level || "info").toLowerCase()}`;
    const source = document.createElement("span");
    source.className = "source";
    source.textContent = `${String(entry.timestamp || "").slice(11, 19)} ${entry.source || ""} `;
    row.append(source, document.createTextNode(`${entry.message ?? ""}\n`));
    return row;
  }
  function connect() {
    const decoder = new TextDecoder();
    const socket = new WebSocket(socketUrl(view.dataset.url));
    socket.binaryType = "arraybuffer";
    let refusal = null;
    let fresh = true;
    socket.addEventListener("open", () => { setState(state, "live", "live"); delay = 500; });
    socket.addEventListener("message", (event) => {
      const text = typeof event.data === "string" ? event.data : decoder.decode(event.data);
      const message = JSON.parse(text);
      if (message.type === "error") { refusal = message; return; }
      if (message.type !== "log") return;
      if (fresh) { view.replaceChildren(); fresh = false; }  // the tail comes again on a reconnect
      const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
      view.append(line(message.data || {}));
      while (view.childElementCount > keep) view.firstElementChild.remove();
      if (atBottom) view.scrollTop = view.scrollHeight;
    });
    socket.addEventListener("close", () => {
      if (refusal && refusal.code !== "UNAUTHORIZED" && refusal.code !== "RATE_LIMITED") {
        setState(state, "closed", `closed: ${refusal.error} (${refusal.code})`);
        return;
      }
      setState(state, "reconnecting", "reconnecting…");
      window.setTimeout(() => keepSession().then(connect), delay);
      delay = Math.min(delay * 2, 10000);
    });
  }
  connect();
})();
