// wormgate dashboard: plain JavaScript, no dependencies. It polls the
// status server's bounded JSON endpoints and draws the charts as SVG.
// Every text that came from a log line (reject texts, host names,
// reasons) goes into the page with textContent, never as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const PAGE = 50;
const POLL_DASH = 3000, POLL_TIMELINE = 10000, POLL_BANS = 15000;
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569", "#ea580c"];
const TOKEN_KEY = "wormgate-token";

const state = {
  range: "1h",
  token: null,          // the write token, once checked
  writes: false,        // the server takes writes with a token
  cursors: [""],        // cursor of each page walked so far
  page: 0,
  next: "",
  bans: [],
  sort: null,
  rules: [],
  why: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fmtNum(n) {
  if (n == null || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 100 || Number.isInteger(n)) return Math.round(n).toLocaleString("en-US");
  return n.toFixed(1);
}

function fmtDur(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60 ? " " + (s % 60) + "s" : "");
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

function ago(iso, now) {
  const t = Date.parse(iso);
  if (!t || t < 0) return "never";
  return fmtDur(((now || Date.now()) - t) / 1000) + " ago";
}

function fmtTime(iso) {
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function showError(msg) {
  const e = $("error");
  e.hidden = !msg;
  e.textContent = msg || "";
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()).trim());
  return r.json();
}

// write sends one control API request with the bearer token.
async function write(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || r.status + " " + r.statusText);
  return j;
}

// ---- headline, senders, kernel ----

async function pollDashboard() {
  try {
    const d = await getJSON("/api/v1/dashboard");
    showError("");
    renderDashboard(d);
  } catch (e) {
    showError("Status server not answering: " + e.message);
  }
}

function renderDashboard(d) {
  $("version").textContent = d.version;
  const fw = d.firewall;
  const fwOK = fw.ready && !fw.degraded;
  const badge = $("fw-badge");
  badge.textContent = fw.mode + (fwOK ? " ok" : fw.ready ? " degraded" : " not ready");
  badge.className = "badge " + (fwOK ? "ok" : "bad");
  $("h-active").textContent = fmtNum(d.bans.active);
  $("h-active-fam").textContent = "IPv4 " + fmtNum(d.bans.v4) + " · IPv6 " + fmtNum(d.bans.v6);
  $("h-lasthour").textContent = fmtNum(d.bans.last_hour);
  $("h-offmin").textContent = fmtNum(d.rates.offences_per_min);
  $("h-msgs").textContent = fmtNum(d.rates.messages_per_sec);
  const hfw = $("h-fw");
  hfw.textContent = fwOK ? "OK" : fw.ready ? "degraded" : "not ready";
  hfw.className = "value " + (fwOK ? "ok" : "bad");
  $("h-fw-sub").textContent = fw.degraded ? (fw.failing || []).join(", ") + ": " + (fw.last_error || "") : fw.mode;
  $("h-fw-sub").title = fw.last_error || "";
  const rl = d.last_reload;
  const hr = $("h-reload");
  if (!rl) {
    hr.textContent = "none";
    hr.className = "value";
    $("h-reload-sub").textContent = "since start " + ago(d.started, Date.parse(d.now));
  } else {
    hr.textContent = rl.ok ? "OK" : "failed";
    hr.className = "value " + (rl.ok ? "ok" : "bad");
    $("h-reload-sub").textContent = ago(rl.time, Date.parse(d.now)) + " by " + rl.by + (rl.error ? ": " + rl.error : "");
    $("h-reload-sub").title = rl.error || "";
  }
  renderFleet(d.fleet);
  $("updated").textContent = "updated " + new Date(d.now).toLocaleTimeString("en-GB");
  renderSenders(d);
  renderKernel(d);
  for (const r of d.rules || []) ruleColor(r);
  if (d.writes !== state.writes) {
    state.writes = d.writes;
    renderTokenUI();
  }
}

// renderFleet shows the fleet member's state: connected and caught up,
// the other gateways seen, decisions waiting for NATS, the lag.
function renderFleet(f) {
  const card = $("fleet-card");
  card.hidden = !f || !f.enabled;
  if (card.hidden) return;
  const hf = $("h-fleet");
  hf.textContent = f.live ? "live" : f.connected ? "catching up" : "cut off";
  hf.className = "value " + (f.live ? "ok" : "bad");
  const peers = f.peers || [];
  $("h-fleet-sub").textContent = f.name + " · " + peers.length + " peer" + (peers.length === 1 ? "" : "s") +
    (peers.length ? " (" + peers.join(", ") + ")" : "") + " · " + fmtNum(f.queued) + " queued · lag " + fmtNum(f.lag_seconds) + " s";
  $("h-fleet-sub").title = f.last_error || "";
  card.dataset.peers = peers.join(",");
  card.dataset.live = String(!!f.live);
}

function renderSenders(d) {
  const tb = $("senders").tBodies[0];
  tb.replaceChildren();
  const now = Date.parse(d.now);
  for (const s of d.senders) {
    const tr = el("tr", { "data-addr": s.addr, "data-host": s.host || "", "data-silent": String(s.silent), class: s.silent ? "silent" : "" },
      el("td", {}, el("span", { class: "dot", title: s.silent ? "silent longer than " + fmtDur(d.silent_after_seconds) : "sending" })),
      el("td", {}, s.host || "–"),
      el("td", {}, s.addr),
      el("td", { class: "num" }, fmtNum(s.per_min)),
      el("td", { title: fmtTime(s.last_message) }, s.messages ? ago(s.last_message, now) + (s.silent ? " — silent" : "") : "none parsed"),
      el("td", { class: "num" }, fmtNum(s.messages)),
      el("td", { class: "num" + (s.parse_errors ? " warn" : "") }, fmtNum(s.parse_errors)),
      el("td", { class: "num" + (s.unattributed ? " warn" : "") }, fmtNum(s.unattributed)));
    tb.append(tr);
  }
  if (!d.senders.length) tb.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No syslog sender has sent anything since start.")));
  $("mx-note").textContent = "Red: nothing received for longer than " + fmtDur(d.silent_after_seconds) +
    " (http.dashboard.silent_after). All senders: " + fmtNum(d.counters.parse_errors) + " parse errors, " +
    fmtNum(d.counters.unattributed) + " unattributed events.";
}

function renderKernel(d) {
  const box = $("kernel");
  box.replaceChildren();
  const k = d.kernel;
  const W = 600, H = 160, P = 22;
  if (!k.available) {
    box.append(text(W / 2, H / 2, "no kernel counters (dry run)", "middle"));
    $("kernel-note").textContent = "";
    return;
  }
  const pts = k.points;
  const maxY = Math.max(1, ...pts.map((p) => p.packets_per_sec));
  grid(box, W, H, P, maxY, "pkt/s");
  const t1 = Date.parse(d.now), t0 = t1 - 3600 * 1000;
  const x = (t) => P + ((Date.parse(t) - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (v) => H - P - (v / maxY) * (H - 2 * P);
  // One bar per sample interval, ending at the sample.
  const bw = Math.max(((k.step_seconds * 1000) / (t1 - t0)) * (W - 2 * P) - 0.5, 1);
  const g = svg("g", { class: "kbars", "data-points": pts.length, "data-last": pts.length ? pts[pts.length - 1].packets_per_sec : 0 });
  for (const p of pts) {
    if (!p.packets_per_sec) continue;
    g.append(svg("rect", { x: (x(p.t) - bw).toFixed(2), width: bw.toFixed(2), y: y(p.packets_per_sec).toFixed(1),
      height: (H - P - y(p.packets_per_sec)).toFixed(1), "data-packets": p.packets_per_sec }));
  }
  box.append(g);
  box.append(text(P, H - 6, "−1 h", "start"), text(W - P, H - 6, "now", "end"));
  box.dataset.totalPackets = d.counters.kernel_packets;
  $("kernel-note").textContent = "Packets from banned addresses dropped by wormgate's chain: " + fmtNum(d.counters.kernel_packets) +
    " packets, " + fmtBytes(d.counters.kernel_bytes) + " since the rules were created; now " + fmtNum(d.rates.kernel_packets_per_sec) + " pkt/s.";
}

function fmtBytes(b) {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (b >= 1000 && i < u.length - 1) { b /= 1000; i++; }
  return (i ? b.toFixed(1) : b) + " " + u[i];
}

// swatch is a legend's colour square; set through the CSSOM, which
// the page's Content-Security-Policy allows (a style attribute it does not).
function swatch(c) {
  const s = el("span", { class: "sw" });
  s.style.background = c;
  return s;
}

function text(x, y, s, anchor) {
  const t = svg("text", { x, y, "text-anchor": anchor || "start" });
  t.textContent = s;
  return t;
}

function grid(box, W, H, P, maxY, unit) {
  for (let i = 0; i <= 4; i++) {
    const y = H - P - (i / 4) * (H - 2 * P);
    box.append(svg("line", { class: "grid", x1: P, x2: W - P, y1: y, y2: y }));
  }
  box.append(text(P + 2, P - 6, fmtNum(maxY) + " " + unit, "start"));
}

// ---- timeline ----

async function pollTimeline() {
  try {
    renderTimeline(await getJSON("/api/v1/timeline?range=" + state.range));
  } catch (e) {
    showError("Timeline: " + e.message);
  }
}

function ruleColor(rule) {
  let i = state.rules.indexOf(rule);
  if (i < 0) { state.rules.push(rule); i = state.rules.length - 1; refreshRuleFilter(); }
  return COLORS[i % COLORS.length];
}

function renderTimeline(tl) {
  const box = $("timeline");
  box.replaceChildren();
  box.dataset.range = tl.range;
  const W = 1000, H = 220, P = 24;
  const n = tl.rules.length ? tl.rules[0].offences.length : 0;
  // Offences are stacked bars, one colour per rule; new bans a dashed
  // line per rule over them.
  const stacked = new Array(n).fill(0);
  for (const r of tl.rules) r.offences.forEach((v, i) => { stacked[i] += v; });
  const maxY = Math.max(1, ...stacked);
  grid(box, W, H, P, maxY, "offences / " + fmtDur(tl.step_seconds));
  const bw = n ? (W - 2 * P) / n : 0;
  const x = (i) => P + i * bw;
  const y = (v) => H - P - (v / maxY) * (H - 2 * P);
  const base = new Array(n).fill(0);
  const legend = $("timeline-legend");
  legend.replaceChildren();
  for (const r of tl.rules) {
    const c = ruleColor(r.rule);
    const g = svg("g", {
      class: "series", "data-rule": r.rule, "data-total-offences": r.total_offences, "data-total-bans": r.total_bans,
      "data-offences": r.offences.join(","), "data-bans": r.bans.join(","),
    });
    r.offences.forEach((v, i) => {
      if (!v) return;
      g.append(svg("rect", { class: "bar", fill: c, x: x(i).toFixed(2), width: Math.max(bw - 1, 1).toFixed(2),
        y: y(base[i] + v).toFixed(1), height: (y(base[i]) - y(base[i] + v)).toFixed(1), "data-i": i, "data-offences": v }));
      base[i] += v;
    });
    g.append(svg("polyline", { class: "bans", stroke: c, points: r.bans.map((v, i) => (x(i) + bw / 2).toFixed(1) + "," + y(v).toFixed(1)).join(" ") }));
    const title = svg("title");
    title.textContent = r.rule + ": " + r.total_offences + " offences, " + r.total_bans + " new bans";
    g.append(title);
    box.append(g);
    legend.append(el("span", { "data-rule": r.rule }, swatch(c), r.rule + " — " +
      fmtNum(r.total_offences) + " offences, " + fmtNum(r.total_bans) + " new bans"));
  }
  if (!tl.rules.length) {
    box.append(text(W / 2, H / 2, "no offences in this range", "middle"));
  }
  const start = Date.parse(tl.start);
  const end = start + n * tl.step_seconds * 1000;
  const lbl = (t) => (tl.range === "7d" ? new Date(t).toISOString().slice(5, 13).replace("T", " ") + "h" : new Date(t).toISOString().slice(11, 16)) + "Z";
  box.append(text(P, H - 6, lbl(start), "start"), text(W / 2, H - 6, lbl((start + end) / 2), "middle"), text(W - P, H - 6, lbl(end), "end"));
  legend.append(el("span", { class: "muted" }, "bars: offences (stacked) · dashed lines: new bans"));
}

// ---- bans ----

function bansQuery(cursor) {
  const p = new URLSearchParams({ limit: PAGE });
  const q = $("f-q").value.trim(), rule = $("f-rule").value, host = $("f-host").value.trim();
  if (q) p.set("q", q);
  if (rule) p.set("rule", rule);
  if (host) p.set("host", host);
  if (state.sort) p.set("sort", (state.sort.dir < 0 ? "-" : "") + state.sort.key);
  if (cursor) p.set("cursor", cursor);
  return "/api/v1/bans?" + p.toString();
}

async function loadBans() {
  try {
    const page = await getJSON(bansQuery(state.cursors[state.page]));
    state.bans = page.bans;
    state.next = page.next_cursor || "";
    $("bans-total").textContent = "(" + fmtNum(page.total) + ")";
    const first = state.page * PAGE + 1;
    $("page-info").textContent = page.total ? "page " + (state.page + 1) + " of " + Math.max(1, Math.ceil(page.total / PAGE)) + " · " +
      fmtNum(first) + "–" + fmtNum(first + page.bans.length - 1) : "no bans";
    $("prev").disabled = state.page === 0;
    $("next").disabled = !state.next;
    renderBans();
  } catch (e) {
    showError("Bans: " + e.message);
  }
}

// The server sorts and pages (sort=key or -key): the table shows one
// page of the whole order.
function renderBans() {
  const bans = state.bans;
  const tb = $("bans").tBodies[0];
  tb.replaceChildren();
  for (const b of bans) {
    const target = b.net || b.addr;
    const tr = el("tr", { "data-addr": target, "data-rule": b.rule, "data-hosts": (b.hosts || []).join(","), "data-origin": b.origin || "", onclick: () => openWhy(b.addr) },
      el("td", {}, target),
      el("td", {}, b.rule),
      el("td", { class: "num" }, b.hits),
      el("td", {}, (b.hosts || []).join(", ") || "–"),
      el("td", { title: fmtTime(b.start) }, ago(b.start)),
      el("td", { title: "until " + fmtTime(b.until) }, fmtDur(b.remaining_seconds)),
      el("td", { title: b.origin ? "decided by gateway " + b.origin + ", shared by the fleet" : "" }, (b.manual ? "manual" : "auto") + (b.origin ? " · from " + b.origin : "")),
      el("td", { class: "reason" }, b.reason || ""));
    const act = el("td", { class: "w" });
    if (state.token) {
      act.append(el("button", { type: "button", class: "unban", "data-target": target, onclick: (ev) => { ev.stopPropagation(); unban(target); } }, "Unban"));
      act.append(el("button", { type: "button", class: "extend", "data-target": target, onclick: (ev) => { ev.stopPropagation(); extend(target); } }, "Extend 24h"));
    }
    tr.append(act);
    tb.append(tr);
  }
  if (!bans.length) tb.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No active ban matches.")));
}

async function unban(target) {
  try {
    await write("DELETE", "/api/v1/bans/" + target);
    showError("");
  } catch (e) {
    showError("Unban " + target + ": " + e.message);
  }
  await loadBans();
  if (state.why) openWhy(state.why);
}

async function extend(target) {
  try {
    await write("POST", "/api/v1/bans", { targets: [target], for: "24h", reason: "extended from the dashboard" });
    showError("");
  } catch (e) {
    showError("Extend " + target + ": " + e.message);
  }
  await loadBans();
}

function refreshRuleFilter() {
  const sel = $("f-rule");
  const have = new Set(Array.from(sel.options).map((o) => o.value));
  for (const r of state.rules) if (!have.has(r)) sel.append(el("option", { value: r }, r));
}

// ---- why ----

async function openWhy(addr) {
  state.why = addr;
  const panel = $("why-panel");
  panel.hidden = false;
  $("why-addr").textContent = addr;
  try {
    const w = await getJSON("/api/v1/why/" + encodeURIComponent(addr));
    const b = w.ban;
    $("why-ban").textContent = b ? "Banned by " + b.rule + " until " + fmtTime(b.until) + " (" + b.hits + " hits" +
      (b.hosts && b.hosts.length ? " reported by " + b.hosts.join(", ") : "") + ")" + (b.reason ? ": " + b.reason : "") : "Not banned now.";
    const tb = $("why-events").tBodies[0];
    tb.replaceChildren();
    for (const ev of w.events || []) {
      tb.append(el("tr", {}, el("td", {}, fmtTime(ev.time)), el("td", {}, ev.host || "–"), el("td", {}, ev.queue_id || "–"),
        el("td", {}, ev.kind), el("td", {}, ev.rule), el("td", { title: ev.detail || "" }, ev.verdict), el("td", { class: "text" }, ev.text || "")));
    }
    if (!(w.events || []).length) tb.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No offence recorded.")));
  } catch (e) {
    $("why-ban").textContent = "Why " + addr + ": " + e.message;
  }
}

// ---- write token ----

function renderTokenUI() {
  const on = !!state.token;
  $("token-btn").hidden = on || !state.writes;
  $("token-state").hidden = !on;
  $("token-forget").hidden = !on;
  document.body.classList.toggle("can-write", on);
  renderBans();
}

async function useToken(tok) {
  const r = await fetch("/api/v1/auth", { headers: { Authorization: "Bearer " + tok }, cache: "no-store" });
  if (!r.ok) {
    const j = await r.json().catch(() => ({}));
    throw new Error(j.error || r.status + " " + r.statusText);
  }
  state.token = tok;
  sessionStorage.setItem(TOKEN_KEY, tok);
  renderTokenUI();
}

function initToken() {
  $("token-btn").addEventListener("click", () => {
    $("token-form").hidden = false;
    $("token-btn").hidden = true;
    $("token-input").focus();
  });
  $("token-cancel").addEventListener("click", () => {
    $("token-form").hidden = true;
    renderTokenUI();
  });
  $("token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await useToken($("token-input").value.trim());
      $("token-input").value = "";
      $("token-form").hidden = true;
      showError("");
    } catch (e) {
      showError("Token refused: " + e.message);
    }
  });
  $("token-forget").addEventListener("click", () => {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    renderTokenUI();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) useToken(saved).catch(() => sessionStorage.removeItem(TOKEN_KEY));
}

// ---- start ----

function init() {
  for (const b of $("range-tabs").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      for (const o of $("range-tabs").querySelectorAll("button")) o.classList.toggle("on", o === b);
      pollTimeline();
    });
  }
  $("bans-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.cursors = [""];
    state.page = 0;
    loadBans();
  });
  $("prev").addEventListener("click", () => { if (state.page > 0) { state.page--; loadBans(); } });
  $("next").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page++;
    loadBans();
  });
  for (const th of $("bans").querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sort = state.sort && state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: 1 };
      for (const o of $("bans").querySelectorAll("th[data-sort]")) o.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", state.sort.dir < 0 ? "descending" : "ascending");
      state.page = 0;
      state.cursors = [""];
      loadBans();
    });
  }
  $("why-close").addEventListener("click", () => { $("why-panel").hidden = true; state.why = null; });
  initToken();
  pollDashboard();
  pollTimeline();
  loadBans();
  setInterval(pollDashboard, POLL_DASH);
  setInterval(pollTimeline, POLL_TIMELINE);
  setInterval(() => { if (!document.activeElement || !document.activeElement.closest("#bans-filter")) loadBans(); }, POLL_BANS);
}

init();
