// Junction dashboard: polls the admin API every second and renders it.
// Tables are reconciled row by row (keyed by name or id), so buttons and
// hovers survive a poll. All text goes through textContent: names and
// reasons are never parsed as HTML.
(() => {
  const TOKEN_KEY = "junction.admin.token";
  const POLL_MS = 1000;
  const $ = (sel) => document.querySelector(sel);
  const rpsHistory = new Map(); // route name → recent rps, for sparklines
  const suppressed = new Map(); // dlq id → time until which a replayed row stays hidden
  let token = "";
  let lastOk = 0;
  let upstreamStates = new Map();
  let loginShown = false;

  // === helpers ===
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const fmtInt = (v) => (num(v) === null ? "–" : Math.round(v).toLocaleString("en-US"));
  const fmtRate = (v) => (num(v) === null ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  // A latency of exactly 0 means the window saw no calls.
  const fmtMs = (v) => (num(v) === null || v === 0 ? "–" : JunctionGraph.fmtMs(v));
  const fmtPct = (r) => (num(r) === null ? "–" : (r * 100).toFixed(r > 0 && r < 0.001 ? 2 : 1) + "%");
  const errClass = (r) => (r >= 0.05 ? "err-high" : r > 0 ? "err-some" : "");
  function fmtBytes(v) {
    if (num(v) === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[i]}`;
  }
  function fmtDuration(ms) {
    if (num(ms) === null) return "–";
    const s = ms / 1000;
    if (s < 60) return s < 10 ? `${s.toFixed(1)} s` : `${s.toFixed(0)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
    const hr = Math.floor(m / 60);
    return hr < 48 ? `${hr}h ${String(m % 60).padStart(2, "0")}m` : `${Math.floor(hr / 24)}d ${hr % 24}h`;
  }
  const fmtAgo = (ms) => (ms < 1500 ? "just now" : `${fmtDuration(ms)} ago`);
  function set(td, content, cls) {
    if (cls !== undefined && td.className !== cls) td.className = cls;
    if (typeof content === "string") {
      if (td.textContent !== content || td.children.length) td.textContent = content;
    } else {
      td.replaceChildren(content);
    }
  }
  function toast(text, isError) {
    const t = h("div", { class: "toast" + (isError ? " error" : "") }, text);
    $("#toasts").append(t);
    setTimeout(() => t.remove(), isError ? 6000 : 3500);
  }

  // Keeps one <tr> per key: creates, updates in place, reorders, removes.
  function syncRows(table, items, keyAttr, keyOf, cols, fill, emptyText) {
    const tbody = table.tBodies[0];
    const existing = new Map([...tbody.querySelectorAll(`tr[${keyAttr}]`)].map((tr) => [tr.getAttribute(keyAttr), tr]));
    const empty = tbody.querySelector("tr.empty");
    if (!items.length) {
      existing.forEach((tr) => tr.remove());
      if (!empty) tbody.append(h("tr", { class: "empty" }, h("td", { class: "empty-row", colspan: String(cols) }, emptyText)));
      else if (empty.textContent !== emptyText) empty.firstChild.textContent = emptyText;
      return;
    }
    if (empty) empty.remove();
    items.forEach((it, i) => {
      const key = String(keyOf(it));
      let tr = existing.get(key);
      if (tr) existing.delete(key);
      else {
        tr = h("tr", { [keyAttr]: key });
        for (let c = 0; c < cols; c++) tr.append(h("td"));
      }
      fill(tr.cells, it, tr);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    existing.forEach((tr) => tr.remove());
  }

  // === API ===
  class HttpError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }
  async function api(path, init) {
    const headers = { Accept: "application/json" };
    if (init && init.body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await fetch(path, { cache: "no-store", ...init, headers });
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!resp.ok) throw new HttpError(resp.status, (body && (body.detail || body.title)) || text || resp.statusText);
    return body;
  }

  // === status and sign-in ===
  function setStatus(state, detail) {
    const el = $("#status");
    el.dataset.state = state;
    const text = { live: "Live", connecting: "Connecting…", offline: "Offline · retrying", unauthorized: "Sign-in required" }[state];
    el.querySelector(".status-text").textContent = text;
    el.title = detail || "";
  }
  function loadToken() {
    try {
      const params = new URLSearchParams(location.search);
      if (params.has("token")) {
        localStorage.setItem(TOKEN_KEY, params.get("token"));
        params.delete("token");
        const q = params.toString();
        window.history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
      }
      token = localStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      token = new URLSearchParams(location.search).get("token") || "";
    }
    $("#sign-out").hidden = !token;
  }
  function showLogin(refused) {
    if (loginShown) return;
    loginShown = true;
    $("#login-error").textContent = refused ? "That token was refused. Try again." : "";
    $("#login").hidden = false;
    $("#token-input").focus();
  }
  $("#login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token-input").value.trim();
    try { localStorage.setItem(TOKEN_KEY, token); } catch (_) { /* session only */ }
    $("#login").hidden = true;
    loginShown = false;
    $("#sign-out").hidden = !token;
    poll();
  });
  $("#sign-out").addEventListener("click", () => {
    try { localStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing stored */ }
    token = "";
    location.reload();
  });

  // === overview ===
  function sparkline(values) {
    const w = 84, ht = 22, max = Math.max(1e-9, ...values);
    const pts = values.map((v, i) => [values.length < 2 ? w : (i / (values.length - 1)) * w, ht - 2 - (v / max) * (ht - 4)]);
    const line = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", ht);
    const area = document.createElementNS(NS, "path");
    area.setAttribute("class", "area"); area.setAttribute("d", `${line} L${w},${ht} L${pts[0][0]},${ht} Z`);
    const path = document.createElementNS(NS, "path");
    path.setAttribute("class", "line"); path.setAttribute("d", line);
    svg.append(area, path);
    return svg;
  }

  function renderKpis(ov) {
    const routes = ov.routes || [], ups = ov.upstreams || [], queues = ov.queues || [];
    const rps = routes.reduce((a, r) => a + (num(r.rps) || 0), 0);
    const errs = routes.reduce((a, r) => a + (num(r.rps) || 0) * (num(r.error_ratio) || 0), 0);
    const kpi = (id, text, cls) => { const el = $(id); el.textContent = text; el.className = "kpi-value" + (cls ? " " + cls : ""); };
    kpi("#kpi-rps", fmtRate(rps));
    const ratio = rps > 0 ? errs / rps : 0;
    kpi("#kpi-errors", fmtPct(ratio), ratio >= 0.05 ? "bad" : ratio > 0 ? "warn" : "good");
    const open = ups.filter((u) => u.state === "open").length, half = ups.filter((u) => u.state === "half-open").length;
    kpi("#kpi-breakers", open ? `${open} open` : half ? `${half} probing` : ups.length ? "All closed" : "–", open ? "bad" : half ? "warn" : "good");
    $("#kpi-breakers-sub").textContent = `${ups.length} upstream${ups.length === 1 ? "" : "s"}` + (open && half ? ` · ${half} half-open` : "");
    const c = ov.cache;
    kpi("#kpi-cache", c ? fmtPct(c.hit_ratio) : "Off");
    $("#kpi-cache-sub").textContent = c ? `${fmtBytes(c.bytes_saved)} not re-fetched` : "no route caches";
    const depth = queues.reduce((a, q) => a + (num(q.depth) || 0), 0);
    const dead = queues.reduce((a, q) => a + (num(q.dlq_depth) || 0), 0);
    const lag = Math.max(0, ...queues.map((q) => num(q.oldest_pending_age_ms) || 0));
    kpi("#kpi-queue", fmtInt(depth));
    $("#kpi-queue-sub").textContent = lag > 0 ? `oldest waiting ${fmtDuration(lag)}` : "pending events";
    kpi("#kpi-dlq", fmtInt(dead), dead > 0 ? "bad" : "");
  }

  function renderOverview(ov) {
    $("#uptime").textContent = num(ov.uptime_s) === null ? "" : `Up ${fmtDuration(ov.uptime_s * 1000)}`;
    renderKpis(ov);
    const routes = ov.routes || [];
    for (const r of routes) {
      const hist = rpsHistory.get(r.name) || [];
      hist.push(num(r.rps) || 0);
      if (hist.length > 60) hist.shift();
      rpsHistory.set(r.name, hist);
    }
    syncRows($("#routes"), routes, "data-route", (r) => r.name, 7, (td, r) => {
      set(td[0], h("span", {}, h("span", { class: "name" }, r.name), h("span", { class: "chip " + (r.kind || "") }, r.kind || "?")));
      set(td[1], sparkline(rpsHistory.get(r.name) || [0]), "hide-sm");
      set(td[2], fmtRate(r.rps), "num");
      set(td[3], fmtMs(r.p50_ms), "num");
      set(td[4], fmtMs(r.p99_ms), "num");
      set(td[5], fmtPct(r.error_ratio), "num " + errClass(r.error_ratio));
      set(td[6], fmtInt(r.count_total), "num hide-sm");
    }, "No routes configured.");

    const ups = ov.upstreams || [];
    upstreamStates = new Map(ups.map((u) => [u.name, u.state]));
    syncRows($("#upstreams"), ups, "data-upstream", (u) => u.name, 7, (td, u) => {
      set(td[0], u.name, "name");
      const state = ["closed", "open", "half-open"].includes(u.state) ? u.state : "unknown";
      const badge = td[1].firstChild;
      if (!badge || badge.dataset.state !== state || badge.textContent !== String(u.state)) {
        td[1].replaceChildren(h("span", { class: "badge " + state, "data-state": state }, h("span", { class: "state" }, String(u.state || "unknown"))));
      }
      set(td[2], fmtPct(u.error_ratio), "num " + errClass(u.error_ratio));
      set(td[3], fmtRate(u.rps), "num");
      set(td[4], fmtMs(u.p99_ms), "num");
      const max = num(u.max_concurrency), inflight = num(u.in_flight) || 0;
      const frac = max ? Math.min(1, inflight / max) : 0;
      set(td[5], h("span", {}, h("span", { class: "bar" + (frac > 0.8 ? " hot" : "") }, h("i", { style: `width:${(frac * 100).toFixed(1)}%` })),
        h("span", { class: "sub" }, `${fmtInt(inflight)} / ${max === null ? "∞" : fmtInt(max)}`)), "hide-sm");
      const probe = num(u.next_probe_in_ms);
      if (probe === null) { delete td[6].dataset.deadline; set(td[6], "–", "num dim"); }
      else { td[6].dataset.deadline = String(performance.now() + probe); td[6].className = "num"; }
    }, "No upstreams configured.");

    renderCache(ov.cache);
    syncRows($("#queues"), ov.queues || [], "data-topic", (q) => q.topic, 4, (td, q) => {
      set(td[0], q.topic, "name");
      set(td[1], fmtInt(q.depth), "num");
      set(td[2], fmtInt(q.dlq_depth), "num " + (q.dlq_depth > 0 ? "err-high" : ""));
      set(td[3], q.oldest_pending_age_ms === null || q.oldest_pending_age_ms === undefined ? "–" : fmtDuration(q.oldest_pending_age_ms),
        "num " + (q.oldest_pending_age_ms > 60000 ? "err-some" : ""));
    }, "No async routes, so no queues.");
    // Why a subscriber is not delivering, in words (the state from the API).
    const SUB_STATES = {
      delivering: ["Delivering", "closed", "Taking and sending deliveries"],
      paused: ["Paused", "open", "Its upstream's breaker is open: nothing is sent until the next probe (attempts are not spent)"],
      disabled: ["Disabled", "open", "Failing for longer than disable_after: deliveries are dead-lettered without being sent"],
      rate_limited: ["Rate-limited", "half-open", "Waiting for its rate limit"],
    };
    syncRows($("#subscribers"), ov.subscribers || [], "data-subscriber", (s) => s.name, 9, (td, s) => {
      set(td[0], s.name, "name");
      set(td[1], s.topic || "–", "sub");
      const [label, cls, why] = SUB_STATES[s.state] || [s.state || "–", "unknown", ""];
      const badge = td[2].firstChild;
      if (!badge || badge.textContent !== label || !badge.classList.contains(cls)) set(td[2], h("span", { class: `badge state ${cls}` }, label));
      td[2].title = why;
      const known = (v) => v !== null && v !== undefined;
      set(td[3], known(s.backlog) ? fmtInt(s.backlog) : "–", "num " + (s.backlog > 0 && s.state !== "delivering" ? "err-some" : ""));
      set(td[4], known(s.oldest_pending_age_ms) ? fmtDuration(s.oldest_pending_age_ms) : "–",
        "num " + (s.oldest_pending_age_ms > 60000 ? "err-some" : ""));
      set(td[5], fmtInt(s.delivered), "num");
      set(td[6], fmtInt(s.retrying), "num " + (s.retrying > 0 ? "err-some" : ""));
      set(td[7], fmtInt(s.dead), "num " + (s.dead > 0 ? "err-high" : ""));
      set(td[8], fmtMs(s.p99_ms), "num");
    }, "No subscribers.");
  }

  function renderCache(c) {
    const body = $("#cache .cache-body");
    if (!c) { body.replaceChildren(h("div", { class: "empty" }, "No route caches responses.")); return; }
    const ratio = Math.max(0, Math.min(1, num(c.hit_ratio) || 0));
    const NS = "http://www.w3.org/2000/svg";
    const svgEl = (tag, attrs) => { const e = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
    const r = 38, circ = 2 * Math.PI * r;
    const donut = svgEl("svg", { class: "donut", width: "96", height: "96", viewBox: "0 0 96 96" });
    donut.append(svgEl("circle", { class: "track", cx: "48", cy: "48", r: String(r), fill: "none", "stroke-width": "10" }));
    donut.append(svgEl("circle", { class: "value", cx: "48", cy: "48", r: String(r), fill: "none", "stroke-width": "10", "stroke-linecap": "round",
      "stroke-dasharray": `${(ratio * circ).toFixed(1)} ${circ.toFixed(1)}`, transform: "rotate(-90 48 48)" }));
    const label = svgEl("text", { x: "48", y: "54", "text-anchor": "middle" });
    label.textContent = `${Math.round(ratio * 100)}%`;
    donut.append(label);
    const dl = h("dl", { class: "stats" });
    for (const [k, v] of [["Hits", fmtInt(c.hits)], ["Misses", fmtInt(c.misses)], ["Entries", fmtInt(c.entries)], ["Size", fmtBytes(c.bytes)], ["Bytes saved", fmtBytes(c.bytes_saved)]]) {
      dl.append(h("dt", {}, k), h("dd", {}, v));
    }
    body.replaceChildren(donut, dl);
  }

  // === drill-down ===
  // A click on a route, upstream or subscriber row opens its last hour;
  // it refreshes with the recommendations' pace while open.
  let drillOf = null;
  async function refreshDrill() {
    if (!drillOf) return;
    const card = $("#drill");
    try {
      const data = await api(`admin/drill?${drillOf.kind}=${encodeURIComponent(drillOf.name)}`);
      if (data && drillOf && data.name === drillOf.name) JunctionDrill.render(card.querySelector(".drill-body"), data);
    } catch (e) {
      card.querySelector(".drill-body").replaceChildren(h("div", { class: "empty" }, e.message || String(e)));
    }
  }
  document.addEventListener("click", (e) => {
    const tr = e.target.closest("#routes tr[data-route], #upstreams tr[data-upstream], #subscribers tr[data-subscriber]");
    if (!tr) return;
    const [kind, name] = tr.dataset.route !== undefined ? ["route", tr.dataset.route]
      : tr.dataset.upstream !== undefined ? ["upstream", tr.dataset.upstream] : ["subscriber", tr.dataset.subscriber];
    drillOf = { kind, name };
    const card = $("#drill");
    card.hidden = false;
    $("#drill-title").textContent = `${kind[0].toUpperCase()}${kind.slice(1)} ${name}`;
    card.querySelector(".drill-body").replaceChildren(h("div", { class: "empty" }, "Loading…"));
    card.scrollIntoView({ block: "nearest" });
    refreshDrill();
  });
  $("#drill-close").addEventListener("click", () => { drillOf = null; $("#drill").hidden = true; });

  // === recommendations ===
  // Polled every few seconds (the analysis moves slowly); each entry is a
  // <details> kept by key, so an opened one stays open across polls.
  const RECS_EVERY_MS = 5000;
  let recsAt = 0;
  const renderRecs = (report) => JunctionRecs.render(report, { h, fmtInt, fmtDuration, fmtRate });

  // === dead letters ===
  // The listing follows the filter form; the bulk buttons act on the checked
  // rows when there are any, else on everything the filters match.
  let dlqItems = [];
  let dlqMore = false;
  const selected = new Set();
  function dlqFilters() {
    const out = {};
    for (const [k, v] of new FormData($("#dlq-filters"))) if (String(v).trim()) out[k] = String(v).trim();
    return out;
  }
  function dlqQuery() {
    const q = new URLSearchParams({ limit: "50", ...dlqFilters() });
    return `admin/dlq?${q}`;
  }
  function renderDlq(page, missing) {
    const now = Date.now();
    for (const [id, until] of suppressed) if (until < now) suppressed.delete(id);
    dlqItems = missing ? [] : (page.items || []).filter((d) => !suppressed.has(String(d.id)));
    dlqMore = Boolean(page && page.next);
    const listed = new Set(dlqItems.map((d) => String(d.id)));
    for (const id of selected) if (!listed.has(id)) selected.delete(id);
    const filtered = Object.keys(dlqFilters()).length > 0;
    const empty = missing ? "No async routes, so no dead-letter queue."
      : filtered ? "No dead letter matches these filters." : "No dead letters. Every delivery got through.";
    syncRows($("#dlq"), dlqItems, "data-dlq-id", (d) => d.id, 8, (td, d) => {
      const id = String(d.id);
      if (!td[0].firstChild) {
        const box = h("input", { type: "checkbox", class: "pick", "aria-label": `Select ${id}` });
        box.addEventListener("change", () => { if (box.checked) selected.add(id); else selected.delete(id); renderBulk(); });
        td[0].append(box);
      }
      td[0].firstChild.checked = selected.has(id);
      set(td[1], h("span", {}, h("span", { class: "mono name" }, id), h("br"), h("span", { class: "sub mono msg-link", "data-msg-id": String(d.message_id || ""), title: "Show the message" }, "msg " + String(d.message_id || "–"))));
      set(td[2], d.topic || "–");
      set(td[3], d.subscriber || "–", "name");
      set(td[4], fmtInt(d.attempts), "num");
      const last = (d.history || []).length ? d.history[d.history.length - 1].outcome : "";
      set(td[5], d.reason || "–", "reason");
      td[5].title = [d.reason, last && `last attempt: ${last}`].filter(Boolean).join("\n");
      td[6].dataset.at = String(d.dead_at_ms);
      td[6].title = num(d.dead_at_ms) ? new Date(d.dead_at_ms).toLocaleString() : "";
      td[6].className = "num sub";
      if (!td[7].firstChild) {
        const rb = h("button", { class: "btn replay", type: "button" }, "Replay");
        rb.addEventListener("click", () => actOne(id, "replay", rb));
        const pb = h("button", { class: "btn purge", type: "button" }, "Purge");
        pb.addEventListener("click", () => actOne(id, "purge", pb));
        td[7].className = "num nowrap";
        td[7].append(rb, pb);
      }
    }, empty);
    $("#dlq-count").textContent = missing ? "" : `${dlqItems.length}${dlqMore ? "+" : ""} listed`;
    $("#dlq-select-all").checked = dlqItems.length > 0 && selected.size === dlqItems.length;
    renderBulk(missing);
    tick();
  }

  // Bulk buttons: "… N selected" or "… all matching", with a confirming second click.
  const confirming = new Map(); // button id → timer
  function renderBulk(missing) {
    for (const [id, verb] of [["#replay-all", "Replay"], ["#purge-all", "Purge"]]) {
      const btn = $(id);
      btn.disabled = Boolean(missing) || dlqItems.length === 0;
      if (!confirming.has(id)) btn.textContent = selected.size ? `${verb} ${selected.size} selected` : `${verb} all matching`;
    }
  }
  function bulkBody() {
    const body = dlqFilters();
    if (selected.size) body.ids = [...selected];
    return body;
  }
  async function bulk(id, action) {
    const btn = $(id);
    if (!confirming.has(id)) {
      const n = selected.size || `${dlqItems.length}${dlqMore ? "+" : ""}`;
      btn.textContent = `Confirm: ${action} ${n}`;
      confirming.set(id, setTimeout(() => { confirming.delete(id); renderBulk(); }, 4000));
      return;
    }
    clearTimeout(confirming.get(id));
    confirming.delete(id);
    btn.disabled = true;
    btn.textContent = action === "replay" ? "Replaying…" : "Purging…";
    const body = bulkBody();
    const gone = body.ids ? body.ids : dlqItems.map((d) => String(d.id));
    try {
      const res = await api(`admin/dlq/${action}`, { method: "POST", body: JSON.stringify(body) });
      for (const d of gone) suppressed.set(d, Date.now() + 5000);
      selected.clear();
      renderDlq({ items: dlqItems }, false);
      const n = res && num(action === "replay" ? res.replayed : res.purged);
      const did = action === "replay" ? "Replaying" : "Purged";
      toast(n === null ? `${did} the matching dead letters.` : `${did} ${n} dead letter${n === 1 ? "" : "s"}.`);
    } catch (e) {
      toast(`${action === "replay" ? "Replay" : "Purge"} failed: ${e.message}`, true);
      if (e.status === 401) showLogin(true);
    } finally {
      renderBulk();
    }
  }
  $("#replay-all").addEventListener("click", () => bulk("#replay-all", "replay"));
  $("#purge-all").addEventListener("click", () => bulk("#purge-all", "purge"));
  $("#dlq-select-all").addEventListener("change", (e) => {
    selected.clear();
    if (e.target.checked) for (const d of dlqItems) selected.add(String(d.id));
    renderDlq({ items: dlqItems, next: dlqMore ? "more" : null }, false);
  });
  let filterTimer = null;
  const refilter = () => { clearTimeout(filterTimer); selected.clear(); filterTimer = setTimeout(poll, 250); };
  $("#dlq-filters").addEventListener("input", refilter);
  $("#dlq-filters").addEventListener("reset", () => setTimeout(refilter, 0));
  $("#dlq-filters").addEventListener("submit", (e) => { e.preventDefault(); refilter(); });

  async function actOne(id, action, btn) {
    btn.disabled = true;
    btn.textContent = action === "replay" ? "Replaying…" : "Purging…";
    try {
      const res = action === "replay"
        ? await api(`admin/dlq/${encodeURIComponent(id)}/replay`, { method: "POST" })
        : await api(`admin/dlq/${encodeURIComponent(id)}`, { method: "DELETE" });
      suppressed.set(id, Date.now() + 5000);
      selected.delete(id);
      const row = btn.closest("tr");
      if (row) row.remove();
      renderDlq({ items: dlqItems }, false);
      toast(`Dead letter ${id}: ${(res && res.status) || action}.`);
    } catch (e) {
      btn.disabled = false;
      btn.textContent = action === "replay" ? "Replay" : "Purge";
      toast(`${action === "replay" ? "Replay" : "Purge"} of ${id} failed: ${e.message}`, true);
      if (e.status === 401) showLogin(true);
    }
  }

  // === polling ===
  function renderGraph(snap) {
    JunctionGraph.draw($("#graph"), snap, upstreamStates);
    const foot = $("#slowest");
    const path = (snap && snap.slowest_path) || [];
    if (!path.length) { foot.textContent = ""; return; }
    const labels = new Map((snap.nodes || []).map((n) => [n.id, n.label]));
    foot.replaceChildren("Slowest path: ", h("b", {}, path.map((id) => labels.get(id) || id).join(" → ")),
      ` · p99 sum ${fmtMs(snap.slowest_path_p99_ms)}`);
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const [ov, graph, dlq] = await Promise.allSettled([api("admin/overview"), api("admin/dependencies"), api(dlqQuery())]);
      if ([ov, graph, dlq].some((r) => r.status === "rejected" && r.reason.status === 401)) {
        setStatus("unauthorized", "the admin API answered 401");
        showLogin(Boolean(token));
        return;
      }
      if (ov.status === "fulfilled" && ov.value) {
        lastOk = Date.now();
        setStatus("live");
        renderOverview(ov.value);
      } else {
        setStatus("offline", ov.status === "rejected" ? ov.reason.message : "empty answer");
      }
      if (graph.status === "fulfilled") renderGraph(graph.value);
      if (Date.now() - recsAt >= RECS_EVERY_MS) {
        recsAt = Date.now();
        refreshDrill();
        api("admin/recommendations").then((r) => r && renderRecs(r)).catch(() => { recsAt = 0; });
      }
      if (dlq.status === "fulfilled" && dlq.value) renderDlq(dlq.value, false);
      else if (dlq.status === "rejected" && dlq.reason.status === 404) renderDlq(null, true);
      else if (dlq.status === "rejected" && dlq.reason.status === 400) $("#dlq-count").textContent = dlq.reason.message;
    } catch (e) {
      setStatus("offline", String(e));
    } finally {
      polling = false;
    }
  }

  // Countdowns and "ago" labels move between polls.
  function tick() {
    const now = performance.now();
    for (const td of document.querySelectorAll("[data-deadline]")) {
      const left = Number(td.dataset.deadline) - now;
      td.textContent = left > 0 ? `in ${(left / 1000).toFixed(1)} s` : "probing…";
    }
    for (const td of document.querySelectorAll("#dlq [data-at]")) {
      const at = Number(td.dataset.at);
      td.textContent = Number.isFinite(at) && at > 0 ? fmtAgo(Date.now() - at) : "–";
    }
    $("#updated").textContent = lastOk ? `Updated ${fmtAgo(Date.now() - lastOk)}` : "";
  }

  JunctionMessages.init(api);
  loadToken();
  poll();
  setInterval(poll, POLL_MS);
  setInterval(tick, 200);
})();
