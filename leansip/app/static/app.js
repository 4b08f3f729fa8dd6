// leansip admin page: renders the server-sent snapshots of /api/events and posts user changes to /api/users.
// Plain DOM (textContent only, so user agents and contact URIs can never inject markup), no build step.
"use strict";

const params = new URLSearchParams(location.search);
let token = params.get("token") || sessionStorage.getItem("leansip_token") || "";
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function fmtDuration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

function fmtUs(v) {
  if (v === undefined || v === null) return "–";
  if (v >= 1000) return (v / 1000).toFixed(2) + " ms";
  return v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    cells.forEach((c) => tr.append(c instanceof Node ? c : el("td", c)));
    return tr;
  }));
}

function kv(dl, pairs) {
  const nodes = [];
  for (const [k, v] of pairs) { nodes.push(el("dt", k), el("dd", v)); }
  dl.replaceChildren(...nodes);
}

function storeText(s) {
  if (s.redis !== undefined) {
    const link = s.connected ? "connected" : `UNREACHABLE (outages: ${s.outages})`;
    return ` — Redis ${link}, queue ${s.pending}/${s.queue_limit}` + (s.dropped ? `, dropped ${s.dropped}` : "");
  }
  if (s.durability === "durable") {
    return ` — durable: ${s.batches} commits, ${s.held} replies waiting` + (s.failing ? ", COMMITS FAILING" : "");
  }
  return s.durability ? ` — ${s.durability}, ${s.pending} changes pending` : "";
}

function renderStatus(st) {
  const badges = [st.mode];
  if (st.mode === "proxy") badges.push(st.stateful ? "stateful" : "stateless");
  badges.push(st.auth ? "auth on" : "auth off");
  for (const t of st.transports) badges.push(t.transport);
  $("mode").replaceChildren(...badges.map((b) => el("span", b, "badge")));
  kv($("overview"), [
    ["Mode", st.mode + (st.mode === "proxy" ? (st.stateful ? " (stateful)" : " (stateless)") : "")],
    ["Authentication", st.auth ? `digest, realm ${st.realm}` : "off"],
    ["Listening", st.transports.map((t) => `${t.transport} ${t.host}:${t.port}`).join(", ")],
    ["Location store", st.location + storeText(st.store || {})],
    ["Users", st.users],
    ["Registrations", st.bindings],
    ["Connections", st.connections],
    ["Uptime", fmtDuration(st.uptime)],
  ]);
  const s = st.stats;
  const sorted = (obj) => Object.entries(obj || {}).sort((a, b) => b[1] - a[1]);
  const req = sorted(s.requests);
  replaceRows($("requests"), req.length ? req : [["none yet", ""]]);
  const resp = Object.entries(s.responses || {}).sort();
  replaceRows($("responses"), resp.length ? resp : [["none yet", ""]]);
  replaceRows($("security"), [
    ["auth failures", s.auth_failures], ["blocked", s.blocked], ["slowed", s.delayed],
    ["retransmissions", s.retransmissions], ["expired bindings", s.expired_bindings],
    ["bindings lost with their connection", s.lost_bindings ?? 0],
    ...sorted(s.drops).map(([k, v]) => [`dropped: ${k}`, v]),
  ]);
  $("transactions").textContent = st.transactions;
  $("calls-count").textContent = st.calls;
}

function renderBindings(list, total) {
  $("bindings-count").textContent = total;
  $("bindings-empty").hidden = list.length > 0;
  replaceRows($("bindings").tBodies[0], list.map((b) => [
    el("td", b.user, "strong"), el("td", b.contact, "mono"), el("td", b.source, "mono"),
    b.transport.toUpperCase(), b.user_agent || "–", fmtDuration(b.expires_in),
  ]));
}

function renderUsers(list, total) {
  $("users-count").textContent = total;
  $("users").replaceChildren(...list.map((u) => {
    const li = el("li");
    li.append(el("span", u.username, "name"));
    if (u.kind !== "password") li.append(el("span", "HA1", "tag"));
    const btn = el("button", "Remove", "danger");
    btn.type = "button";
    btn.dataset.user = u.username;
    btn.setAttribute("aria-label", `remove ${u.username}`);
    btn.addEventListener("click", () => removeUser(u.username));
    li.append(btn);
    return li;
  }));
}

function fmtTime(t) {
  return t ? new Date(t * 1000).toLocaleString() : "–";
}

function renderCalls(calls, st) {
  const note = $("calls-note");
  note.hidden = st.calls_tracked;
  note.textContent = st.calls_tracked ? "" : "Calls are not tracked: " + st.calls_note;
  $("calls-empty").hidden = calls.length > 0 || !st.calls_tracked;
  replaceRows($("calls").tBodies[0], calls.map((c) => [
    el("td", c.caller, "strong"), el("td", c.callee, "strong"), el("td", c.state, "state " + c.state),
    fmtTime(c.start), c.answer ? fmtDuration(c.duration) : "–",
    el("td", `${c.caller_transport.toUpperCase()} ${c.caller_addr}`, "mono"),
    el("td", c.callee_addr ? `${c.callee_transport.toUpperCase()} ${c.callee_addr}` : "–", "mono"),
  ]));
}

function renderGateways(sets) {
  $("gateways-card").hidden = sets.length === 0;
  const rows = [];
  for (const s of sets) {
    s.gateways.forEach((g, i) => rows.push([
      el("td", i === 0 ? s.name : "", "strong"), i === 0 ? s.policy : "", el("td", g.address, "mono"),
      g.transport.toUpperCase(), g.weight, g.priority, el("td", g.state, "state " + g.state),
      g.last_probe ? `${g.last_result} at ${new Date(g.last_probe * 1000).toLocaleTimeString()}` : "–",
      g.selected, g.failed_over,
    ]));
  }
  replaceRows($("gateways").tBodies[0], rows);
}

// --- call records (fetched, not in the snapshot: they come from the database) ----------------------
let cdrFilter = new URLSearchParams();
let lastCallsSeen = null;
async function loadCdrs() {
  const q = new URLSearchParams(cdrFilter);
  q.set("limit", "50");
  if (token) q.set("token", token);
  const csv = new URLSearchParams(cdrFilter);
  csv.set("format", "csv");
  if (token) csv.set("token", token);
  $("cdrs-csv").href = "/api/cdrs?" + csv.toString();
  let doc;
  try {
    const resp = await fetch("/api/cdrs?" + q.toString());
    doc = await resp.json();
    if (!resp.ok) { showCdrNote(doc.error || resp.statusText); return; }
  } catch (e) { showCdrNote(String(e)); return; }
  showCdrNote(doc.recording ? "" : "No call records are written: " + doc.reason);
  $("cdrs-count").textContent = doc.total;
  $("cdrs-empty").hidden = doc.cdrs.length > 0;
  replaceRows($("cdrs").tBodies[0], doc.cdrs.map((r) => [
    fmtTime(r.start), el("td", r.caller, "strong"), el("td", r.callee, "strong"),
    r.answer && r.end ? fmtDuration(r.duration) : "–", `${r.status || ""} ${r.reason || ""}`.trim() || "–",
    r.end_reason || "–", r.hangup || "–",
  ]));
}

function showCdrNote(text) {
  const note = $("cdrs-note");
  note.hidden = !text;
  note.textContent = text;
}

function renderTimings(t) {
  const body = $("timings").tBodies[0];
  if (!t.enabled) { replaceRows(body, [["timings are off", "", "", "", "", "", "", ""]]); return; }
  const rows = [];
  for (const [flow, steps] of Object.entries(t.flows)) {
    for (const [step, s] of Object.entries(steps)) {
      const cells = [el("td", step === "parse" ? flow.toUpperCase() : "", "strong"), el("td", step, step === "total" ? "strong" : ""),
        s.count, fmtUs(s.mean_us), fmtUs(s.p50_us), fmtUs(s.p90_us), fmtUs(s.p99_us), fmtUs(s.max_us)];
      rows.push(cells);
    }
  }
  replaceRows(body, rows);
  for (const tr of body.rows) if (tr.cells[1].textContent === "total") tr.className = "total";
}

function render(snap) {
  renderStatus(snap.status);
  renderBindings(snap.bindings, snap.status.bindings);
  renderUsers(snap.users, snap.status.users);
  renderCalls(snap.calls, snap.status);
  renderGateways(snap.gateways || []);
  renderTimings(snap.timings);
  // a call ended or started: the records may have changed
  const seen = JSON.stringify([snap.status.calls, (snap.status.stats.requests || {}).BYE, (snap.status.stats.requests || {}).INVITE]);
  if (seen !== lastCallsSeen) { lastCallsSeen = seen; loadCdrs(); }
}

// --- live updates -------------------------------------------------------------------------------
let source = null;
function connect() {
  if (source) source.close();
  source = new EventSource("/api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  source.addEventListener("snapshot", (ev) => {
    setLive(true);
    render(JSON.parse(ev.data));
  });
  source.onerror = () => setLive(false);
}

function setLive(on) {
  const live = $("live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = on ? "live" : "reconnecting…";
}

// --- writes ---------------------------------------------------------------------------------------
function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    const form = $("token-form");
    form.token.value = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      resolve(dialog.returnValue === "ok" ? form.token.value : null);
    });
    dialog.showModal();
  });
}

async function send(method, path, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    if (resp.status !== 401) return resp;
    const given = await askToken();
    if (!given) return resp;
    token = given;
    sessionStorage.setItem("leansip_token", token);
    connect();
  }
  throw new Error("token refused");
}

function message(text, ok) {
  const p = $("users-message");
  p.textContent = text;
  p.className = "message " + (ok ? "ok" : "error");
}

async function reason(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch { return resp.statusText; }
}

async function addUser(ev) {
  ev.preventDefault();
  const form = ev.target;
  const username = form.username.value.trim();
  try {
    const resp = await send("POST", "/api/users", { username, password: form.password.value });
    if (resp.ok) { message(`Added ${username}.`, true); form.reset(); }
    else message(`Could not add ${username}: ${await reason(resp)}`, false);
  } catch (e) { message(String(e), false); }
}

async function removeUser(name) {
  if (!confirm(`Remove user ${name}? Their phones can no longer authenticate.`)) return;
  try {
    const resp = await send("DELETE", "/api/users/" + encodeURIComponent(name));
    if (resp.ok) message(`Removed ${name}.`, true);
    else message(`Could not remove ${name}: ${await reason(resp)}`, false);
  } catch (e) { message(String(e), false); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("add-user").addEventListener("submit", addUser);
  $("cdrs-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    cdrFilter = new URLSearchParams();
    for (const name of ["user", "since"]) {
      const value = ev.target[name].value.trim();
      if (value) cdrFilter.set(name, value);
    }
    loadCdrs();
  });
  connect();
  setInterval(loadCdrs, 10000);  // timeouts end calls without a request: look now and then anyway
});
