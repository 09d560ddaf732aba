// The message page: look a message up by id (or click a dead letter's
// "msg …"), and see each subscriber's state and attempts (GET
// /admin/messages/{id}), what the subscriber answered to each failed attempt,
// and, for a dead delivery, a bounded look at the payload with secret fields
// masked (GET /admin/dlq/{id}/payload). Times are shown in local time; the
// API gives RFC 3339.
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

  function subscriber(msgId, s) {
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
      const outcome = el("td", failed ? "err-high" : "");
      outcome.append(a.response ? response(a.outcome, a.response) : document.createTextNode(a.outcome));
      tr.append(el("td", "num", a.attempt), el("td", "", local(a.at)), outcome, el("td", "num", `${a.duration_ms} ms`));
      table.tBodies[0].append(tr);
    }
    if (!(s.history || []).length) {
      const tr = el("tr");
      tr.append(el("td", "empty", "No attempt yet."));
      table.tBodies[0].append(tr);
    }
    sec.append(table);
    if (state === "dead") sec.append(peek(`${msgId}:${s.subscriber}`));
    return sec;
  }

  // An attempt's outcome that opens to the subscriber's answer.
  function response(outcome, r) {
    const d = el("details", "msg-response");
    d.append(el("summary", "", `${outcome} · ${r.body_bytes} byte${r.body_bytes === 1 ? "" : "s"}`));
    const headers = (r.headers || []).map(([k, v]) => `${k}: ${v}`).join("\n");
    d.append(el("pre", "mono msg-headers", headers || "(no headers)"));
    d.append(el("pre", "mono msg-body", r.body || "(empty body)"));
    if (r.truncated) d.append(el("div", "sub", "Cut to fit: the first bytes and headers only."));
    return d;
  }

  // A dead delivery's payload, read on demand with a size and masking switch.
  function peek(deadId) {
    const box = el("div", "msg-peek");
    const bar = el("div", "msg-peek-bar");
    const size = el("select", "msg-peek-size");
    size.setAttribute("aria-label", "Payload bytes");
    for (const [v, t] of [[1024, "1 KiB"], [4096, "4 KiB"], [65536, "64 KiB"]]) {
      const o = el("option", "", t);
      o.value = v;
      size.append(o);
    }
    size.value = "4096";
    const masked = el("input", "msg-peek-mask");
    masked.type = "checkbox";
    masked.checked = true;
    const label = el("label", "sub");
    label.append(masked, document.createTextNode(" mask secrets"));
    const show = el("button", "btn msg-peek-show", "Show payload");
    show.type = "button";
    const out = el("div", "msg-peek-out");
    show.addEventListener("click", async () => {
      out.replaceChildren(el("div", "empty", "Loading…"));
      try {
        const p = await api(`admin/dlq/${encodeURIComponent(deadId)}/payload?bytes=${size.value}&redact=${masked.checked}`);
        const note = p.masking === "json" || p.masking === "form" ? `${p.masked_fields} field${p.masked_fields === 1 ? "" : "s"} masked`
          : p.masking === "none" ? "nothing masked: not JSON or a form"
          : p.masking === "withheld" ? "withheld: it looks like JSON or a form but does not parse, so secrets in it cannot be masked" : "unmasked";
        const shown = p.truncated ? ` · first ${size.options[size.selectedIndex].text} of ${p.body_bytes} bytes` : ` · ${p.body_bytes} bytes`;
        out.replaceChildren(el("div", "sub msg-peek-note", `${p.content_type || "no content type"} · ${note}${shown}${p.encoding === "base64" ? " · base64" : ""}`),
          el("pre", "mono msg-payload", p.payload));
      } catch (e) {
        out.replaceChildren(el("div", "empty", e.message || String(e)));
      }
    });
    bar.append(show, size, label);
    box.append(bar, out);
    return box;
  }

  function render(m) {
    const wrap = el("div", "msg");
    wrap.dataset.msgId = m.id;
    const meta = el("dl", "stats msg-meta");
    for (const [k, v] of [["Message", m.id], ["Topic", m.topic], ["Ordering key", m.ordering_key || "–"],
      ["Accepted", local(m.enqueued_at)], ["Completed", m.completed_at ? local(m.completed_at) : "not yet"]]) {
      meta.append(el("dt", "", k), el("dd", k === "Message" ? "mono" : "", v));
    }
    wrap.append(meta, ...(m.subscribers || []).map((s) => subscriber(m.id, s)));
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
