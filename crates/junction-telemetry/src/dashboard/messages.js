// The message page: look a message up by id (or click a dead letter's
// "msg …"), and see each subscriber's state and attempts (GET
// /admin/messages/{id}). Times are shown in local time; the API gives RFC 3339.
const JunctionMessages = (() => {
  let api = null;
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const local = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const STATE_CLASS = { delivered: "closed", pending: "half-open", dead: "open" };

  function subscriber(s) {
    const sec = el("section", "msg-sub");
    sec.dataset.subscriber = s.subscriber;
    const head = el("div", "msg-sub-head");
    const state = s.state && s.state.state ? s.state.state : "unknown";
    head.append(el("strong", "name", s.subscriber), el("span", `badge msg-state ${STATE_CLASS[state] || "unknown"}`, state));
    const why = state === "pending" ? `next attempt ${local(s.next_attempt_at || s.state.next_attempt_at)}`
      : state === "dead" ? s.state.reason : "";
    head.append(el("span", "sub", `${s.attempts} attempt${s.attempts === 1 ? "" : "s"}${s.leased ? " · being delivered now" : ""}${why ? " · " + why : ""}`));
    sec.append(head);
    const table = el("table", "table msg-history");
    const hr = el("tr");
    for (const [c, cls] of [["#", "num"], ["Started", ""], ["Outcome", ""], ["Took", "num"]]) hr.append(el("th", cls, c));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(hr);
    for (const a of s.history || []) {
      const tr = el("tr");
      const failed = !/^status 2/.test(a.outcome);
      tr.append(el("td", "num", a.attempt), el("td", "", local(a.at)), el("td", failed ? "err-high" : "", a.outcome), el("td", "num", `${a.duration_ms} ms`));
      table.tBodies[0].append(tr);
    }
    if (!(s.history || []).length) {
      const tr = el("tr");
      tr.append(el("td", "empty", "No attempt yet."));
      table.tBodies[0].append(tr);
    }
    sec.append(table);
    return sec;
  }

  function render(m) {
    const wrap = el("div", "msg");
    wrap.dataset.msgId = m.id;
    const meta = el("dl", "stats msg-meta");
    for (const [k, v] of [["Message", m.id], ["Topic", m.topic], ["Ordering key", m.ordering_key || "–"],
      ["Accepted", local(m.enqueued_at)], ["Completed", m.completed_at ? local(m.completed_at) : "not yet"]]) {
      meta.append(el("dt", "", k), el("dd", k === "Message" ? "mono" : "", v));
    }
    wrap.append(meta, ...(m.subscribers || []).map(subscriber));
    return wrap;
  }

  // Shows message `id` in the card.
  async function open(id) {
    const card = document.querySelector("#messages");
    const page = card.querySelector(".msg-page");
    document.querySelector("#msg-id").value = id;
    page.replaceChildren(el("div", "empty", "Loading…"));
    try {
      page.replaceChildren(render(await api(`admin/messages/${encodeURIComponent(id)}`)));
    } catch (e) {
      page.replaceChildren(el("div", "empty", e.status === 404 ? `No message ${id}: unknown, or its record expired.`
        : e.status === 501 ? "This queue backend keeps no per-message status." : (e.message || String(e))));
    }
  }

  // Wires the search form and the dead letters' message links; `apiFn` is
  // the dashboard's authenticated fetch.
  function init(apiFn) {
    api = apiFn;
    document.querySelector("#msg-search").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = document.querySelector("#msg-id").value.trim();
      if (id) open(id);
    });
    document.addEventListener("click", (e) => {
      const link = e.target.closest("[data-msg-id]");
      if (!link || link.closest("#messages")) return;
      open(link.dataset.msgId);
      document.querySelector("#messages").scrollIntoView({ block: "nearest" });
    });
  }
  return { init, open };
})();
