// Drill-down of one route, upstream or subscriber (GET /admin/drill): the
// last hour at 10 s (calls with errors in red, mean and slowest latency),
// the latency histogram and the answers by status since start.
const JunctionDrill = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 120, PAD = 28;
  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  const fmtMs = (v) => JunctionGraph.fmtMs(v);
  function axis(g, label, max, unit) {
    g.append(svg("text", { x: 0, y: 10, class: "d-axis" }, `${label} (max ${unit(max)})`));
    g.append(svg("line", { x1: PAD, x2: W, y1: H - 14, y2: H - 14, class: "d-base" }));
    g.append(svg("text", { x: PAD, y: H - 2, class: "d-axis" }, "1 h ago"));
    g.append(svg("text", { x: W, y: H - 2, class: "d-axis", "text-anchor": "end" }, "now"));
  }
  // Calls per point (bars), errors over them in red.
  function callsChart(points, step) {
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "d-chart d-calls", role: "img" });
    const max = Math.max(1, ...points.map((p) => p.calls));
    axis(s, `calls per ${step} s`, max, (v) => String(v));
    const bw = (W - PAD) / points.length, top = 16, span = H - 14 - top;
    points.forEach((p, i) => {
      if (!p.calls) return;
      const x = PAD + i * bw, hgt = (p.calls / max) * span;
      const bar = svg("rect", { x, y: H - 14 - hgt, width: Math.max(1, bw - 0.3), height: hgt, class: "d-bar" });
      bar.append(svg("title", {}, `${p.calls} calls, ${p.errors} failed, ${Math.round(p.ago_s / 60)} min ago`));
      s.append(bar);
      if (p.errors) {
        const eh = (p.errors / max) * span;
        s.append(svg("rect", { x, y: H - 14 - eh, width: Math.max(1, bw - 0.3), height: eh, class: "d-err" }));
      }
    });
    return s;
  }
  // Mean and slowest latency per point.
  function latencyChart(points) {
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "d-chart d-latency", role: "img" });
    const max = Math.max(0.001, ...points.map((p) => p.max_ms));
    axis(s, "latency: mean and slowest", max, fmtMs);
    const bw = (W - PAD) / points.length, top = 16, span = H - 14 - top;
    for (const [key, cls] of [["max_ms", "d-max"], ["mean_ms", "d-mean"]]) {
      let d = "";
      points.forEach((p, i) => {
        if (!p.calls) return;
        const x = (PAD + i * bw + bw / 2).toFixed(1), y = (H - 14 - (p[key] / max) * span).toFixed(1);
        d += (d ? " L" : "M") + x + " " + y;
        // A dot per point: a lone point draws no line.
        s.append(svg("circle", { cx: x, cy: y, r: 1.6, class: cls + "-dot" }));
      });
      if (d) s.append(svg("path", { d, class: cls }));
    }
    return s;
  }
  function histogram(bins) {
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "d-chart d-hist", role: "img" });
    const max = Math.max(1, ...bins.map((b) => b.count));
    s.append(svg("text", { x: 0, y: 10, class: "d-axis" }, "latency histogram since start (calls per bucket)"));
    const bw = Math.min(40, (W - PAD) / Math.max(1, bins.length)), top = 16, span = H - 28 - top;
    bins.forEach((b, i) => {
      const x = PAD + i * bw, hgt = Math.max(1, (b.count / max) * span);
      const bar = svg("rect", { x, y: H - 28 - hgt, width: bw - 2, height: hgt, class: "d-bar" });
      bar.append(svg("title", {}, `≤ ${fmtMs(b.le_ms)}: ${b.count}`));
      s.append(bar);
      if (i % Math.ceil(bins.length / 8) === 0) s.append(svg("text", { x: x + bw / 2, y: H - 14, class: "d-axis", "text-anchor": "middle" }, fmtMs(b.le_ms)));
    });
    return s;
  }
  function statuses(list, calls) {
    const t = el("table", "table d-status");
    const head = el("tr");
    for (const c of ["Status", "Answers", "Share"]) head.append(el("th", c === "Status" ? "" : "num", c));
    t.append(el("thead"), el("tbody"));
    t.tHead.append(head);
    for (const s of list) {
      const tr = el("tr");
      tr.dataset.status = String(s.status);
      tr.append(el("td", s.status >= 500 ? "err-high" : "", s.status === 0 ? "others" : String(s.status)),
        el("td", "num", String(s.count)), el("td", "num", calls ? `${((s.count / calls) * 100).toFixed(1)}%` : "–"));
      t.tBodies[0].append(tr);
    }
    if (!list.length) {
      const tr = el("tr");
      tr.append(el("td", "empty", "No statuses (deliveries count calls only)."));
      t.tBodies[0].append(tr);
    }
    return t;
  }
  // Fills `body` with the drill-down of `data` (the API's answer).
  function render(body, data) {
    const hst = data.history;
    const q = el("p", "sub d-quantiles",
      `${hst.calls} calls since start · p50 ${fmtMs(hst.p50_ms)} · p90 ${fmtMs(hst.p90_ms)} · p99 ${fmtMs(hst.p99_ms)} · p99.9 ${fmtMs(hst.p999_ms)}`);
    const charts = el("div", "d-charts");
    charts.append(callsChart(hst.points, hst.step_s), latencyChart(hst.points), histogram(hst.latency));
    const side = el("div", "d-side");
    side.append(statuses(hst.statuses, hst.statuses.reduce((a, s) => a + s.count, 0)));
    body.replaceChildren(q, el("div", "d-grid"));
    body.lastChild.append(charts, side);
  }
  return { render };
})();
