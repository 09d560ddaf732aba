// Dependency graph drawn as SVG: a layered left-to-right layout
// (callers → routes/topics → upstreams/subscribers), bezier edges labelled with
// rate, p99 and errors; async edges dashed; the slowest path in red.
// The SVG is rebuilt only when the set of nodes or edges changes; otherwise
// numbers and classes are updated in place (tooltips and hovers survive polls).
const JunctionGraph = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const KIND_ORDER = { caller: 0, route: 1, topic: 2, upstream: 3, subscriber: 4 };
  const KIND_COLOR = { caller: "#4f46e5", route: "#0284c7", topic: "#9333ea", upstream: "#059669", subscriber: "#d97706" };
  const STATE_COLOR = { closed: "#15803d", open: "#b91c1c", "half-open": "#b45309" };
  const NODE_W = 172, NODE_H = 52, GAP_X = 215, GAP_Y = 24, PAD = 14;
  let current = { sig: null, nodes: new Map(), edges: new Map(), svg: null };

  function s(tag, attrs, ...kids) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const k of kids) e.append(k);
    return e;
  }
  const short = (t, n) => (t.length > n ? t.slice(0, n - 1) + "…" : t);
  const fmtMs = (v) => (v >= 1000 ? (v / 1000).toFixed(v >= 10000 ? 0 : 1) + " s" : (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " ms");
  const fmtRate = (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + "/s";

  // Columns by longest path from the sources (callers, then routes, then
  // upstreams and topics, then subscribers), so edges join neighbouring
  // columns. Relaxation is bounded, so cycles end.
  function layout(snap) {
    const ids = snap.nodes.map((n) => n.id);
    const byId = new Map(snap.nodes.map((n) => [n.id, n]));
    const preds = new Map(ids.map((id) => [id, []]));
    const succs = new Map(ids.map((id) => [id, []]));
    for (const e of snap.edges) {
      if (!byId.has(e.from) || !byId.has(e.to) || e.from === e.to) continue;
      succs.get(e.from).push(e.to);
      preds.get(e.to).push(e.from);
    }
    const base = { caller: 0, route: 1, topic: 1, upstream: 2, subscriber: 2 };
    const layer = new Map(ids.map((id) => [id, base[byId.get(id).kind] ?? 1]));
    for (let round = 0; round < ids.length; round++) {
      let changed = false;
      for (const e of snap.edges) {
        if (!byId.has(e.from) || !byId.has(e.to) || e.from === e.to) continue;
        const want = layer.get(e.from) + 1;
        if (layer.get(e.to) < want && want <= ids.length) { layer.set(e.to, want); changed = true; }
      }
      if (!changed) break;
    }
    const used = [...new Set(layer.values())].sort((a, b) => a - b);
    const columns = used.map((l) => ids.filter((id) => layer.get(id) === l));
    for (const col of columns) {
      col.sort((a, b) => KIND_ORDER[byId.get(a).kind] - KIND_ORDER[byId.get(b).kind] || byId.get(a).label.localeCompare(byId.get(b).label));
    }
    // Barycenter sweeps reduce crossings: order by the mean row of neighbours.
    const row = new Map();
    const index = () => columns.forEach((col) => col.forEach((id, i) => row.set(id, i)));
    index();
    for (let sweep = 0; sweep < 4; sweep++) {
      const forward = sweep % 2 === 0;
      const order = forward ? columns.slice(1) : columns.slice(0, -1).reverse();
      for (const col of order) {
        const key = new Map(col.map((id) => {
          const ns = (forward ? preds : succs).get(id);
          return [id, ns.length ? ns.reduce((a, n) => a + row.get(n), 0) / ns.length : row.get(id)];
        }));
        col.sort((a, b) => key.get(a) - key.get(b));
        col.forEach((id, i) => row.set(id, i));
      }
    }
    index();
    const tallest = Math.max(1, ...columns.map((c) => c.length));
    const height = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * PAD + 24;
    const width = columns.length * NODE_W + (columns.length - 1) * GAP_X + 2 * PAD;
    const pos = new Map();
    columns.forEach((col, c) => {
      const colH = col.length * NODE_H + (col.length - 1) * GAP_Y;
      const top = (height - colH) / 2;
      col.forEach((id, i) => pos.set(id, { x: PAD + c * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
    });
    return { pos, width, height };
  }

  // `t` is where along the curve the label sits: near the target when the
  // source fans out, near the source when the target fans in.
  function edgeGeometry(a, b, t) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x - 6, y2 = b.y + NODE_H / 2;
    let c1, c2;
    if (x2 > x1 + 20) {
      const dx = (x2 - x1) / 2;
      c1 = [x1 + dx, y1]; c2 = [x2 - dx, y2];
    } else {
      // Backward or same-column edge: loop underneath.
      c1 = [x1 + 80, y1 + NODE_H * 1.6]; c2 = [x2 - 80, y2 + NODE_H * 1.6];
    }
    const u = 1 - t, w = [u * u * u, 3 * u * u * t, 3 * u * t * t, t * t * t];
    const mid = [w[0] * x1 + w[1] * c1[0] + w[2] * c2[0] + w[3] * x2, w[0] * y1 + w[1] * c1[1] + w[2] * c2[1] + w[3] * y2];
    return { d: `M${x1},${y1} C${c1[0]},${c1[1]} ${c2[0]},${c2[1]} ${x2},${y2}`, mid, gap: [x1, x2] };
  }

  function markers() {
    const defs = s("defs");
    for (const [id, color] of [["arrow", "#94a3b8"], ["arrow-async", "#a78bfa"], ["arrow-slow", "#e11d48"], ["arrow-failing", "#f59e0b"]]) {
      defs.append(s("marker", { id, viewBox: "0 0 10 10", refX: "8", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", fill: color })));
    }
    return defs;
  }

  function build(container, snap) {
    const { pos, width, height } = layout(snap);
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width: String(width), height: String(height), role: "img", "aria-label": "Dependency graph" });
    // Shrink to fit the card, but not below 70 %: past that, scroll sideways.
    svg.style.minWidth = `${Math.round(width * 0.7)}px`;
    svg.append(markers());
    const edgeLayer = s("g"), labelLayer = s("g"), nodeLayer = s("g");
    svg.append(edgeLayer, nodeLayer, labelLayer);
    const nodes = new Map(), edges = new Map();
    const fanOut = new Map(), fanIn = new Map();
    for (const e of snap.edges) {
      fanOut.set(e.from, (fanOut.get(e.from) || 0) + 1);
      fanIn.set(e.to, (fanIn.get(e.to) || 0) + 1);
    }
    for (const e of snap.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const key = `${e.from}->${e.to}`;
      const out = fanOut.get(e.from), inc = fanIn.get(e.to);
      const { d, mid, gap } = edgeGeometry(a, b, out > inc ? 0.64 : inc > out ? 0.36 : 0.5);
      const title = s("title");
      const path = s("path", { d });
      const g = s("g", { class: "g-edge", "data-edge": key }, path, title);
      const text = s("text", { x: String(mid[0]), y: String(mid[1] + 4), "text-anchor": "middle" });
      const pill = s("rect", { class: "pill", rx: "9", height: "19", y: String(mid[1] - 10) });
      const label = s("g", { class: "g-edge", "data-edge-label": key }, pill, text);
      edgeLayer.append(g);
      labelLayer.append(label);
      edges.set(key + "|" + e.kind, { g, label, path, title, text, pill, mid, gap });
    }
    for (const n of snap.nodes) {
      const p = pos.get(n.id);
      const title = s("title");
      const kind = s("text", { class: "kind", x: "16", y: "38" });
      const g = s("g", { class: "g-node", "data-node": n.id, transform: `translate(${p.x},${p.y})` },
        s("rect", { class: "box", width: String(NODE_W), height: String(NODE_H), rx: "10" }),
        s("rect", { x: "0", y: "0", width: "5", height: String(NODE_H), rx: "2.5", fill: KIND_COLOR[n.kind] || "#64748b" }),
        s("text", { class: "label", x: "16", y: "22" }, short(n.label, 21)),
        kind, title);
      nodeLayer.append(g);
      nodes.set(n.id, { g, kind, title });
    }
    container.replaceChildren(svg);
    current = { sig: current.sig, nodes, edges, svg };
  }

  function update(snap, states) {
    const slow = new Set(snap.slowest_path || []);
    for (const n of snap.nodes) {
      const r = current.nodes.get(n.id);
      if (!r) continue;
      r.g.classList.toggle("slow", slow.has(n.id));
      const state = n.kind === "upstream" ? states.get(n.label) : undefined;
      r.kind.replaceChildren(n.kind);
      if (state) r.kind.append(s("tspan", { fill: STATE_COLOR[state] || "#64748b" }, ` · ${state}`));
      r.title.textContent = `${n.label} (${n.kind})${state ? ", breaker " + state : ""}`;
    }
    for (const e of snap.edges) {
      const r = current.edges.get(`${e.from}->${e.to}|${e.kind}`);
      if (!r) continue;
      const failing = e.error_ratio >= 0.05;
      for (const g of [r.g, r.label]) {
        g.setAttribute("class", `g-edge ${e.kind}${e.on_slowest_path ? " slow" : ""}${failing ? " failing" : ""}`);
      }
      const marker = e.on_slowest_path ? "arrow-slow" : failing ? "arrow-failing" : e.kind === "async" ? "arrow-async" : "arrow";
      r.path.setAttribute("marker-end", `url(#${marker})`);
      const w = 1.5 + Math.min(4.5, Math.log10(1 + e.rate_per_sec) * 2) + (e.on_slowest_path ? 1 : 0);
      r.path.setAttribute("stroke-width", w.toFixed(2));
      r.text.replaceChildren(e.calls === 0 && e.rate_per_sec === 0 ? "idle" : `${fmtRate(e.rate_per_sec)} · p99 ${fmtMs(e.p99_ms)}`);
      if (e.error_ratio > 0) r.text.append(s("tspan", { class: "err" }, ` · ${(e.error_ratio * 100).toFixed(1)}% err`));
      r.title.textContent = `${e.from} → ${e.to} (${e.kind})\n${e.rate_per_sec.toFixed(2)} calls/s · p50 ${fmtMs(e.p50_ms)} · p95 ${fmtMs(e.p95_ms)} · p99 ${fmtMs(e.p99_ms)}\n` +
        `errors ${(e.error_ratio * 100).toFixed(1)}% · retried ${(e.retry_ratio * 100).toFixed(1)}% · ${e.calls} calls, ${e.errors} failed since start`;
    }
  }

  // Labels are placed in order of height; one that would overlap a placed
  // label moves down just below it, so every pill stays readable.
  function placeLabels() {
    const placed = [];
    const all = [...current.edges.values()].sort((a, b) => a.mid[1] - b.mid[1] || a.mid[0] - b.mid[0]);
    for (const r of all) {
      const tw = r.text.getComputedTextLength ? r.text.getComputedTextLength() : 120;
      const box = { x: r.mid[0] - tw / 2 - 8, w: tw + 16, y: r.mid[1] - 10, h: 19 };
      // Keep the pill between the two columns when it fits there.
      if (r.gap[1] - r.gap[0] > box.w + 12) box.x = Math.min(Math.max(box.x, r.gap[0] + 6), r.gap[1] - 6 - box.w);
      for (let moved = true, guard = 0; moved && guard < placed.length + 1; guard++) {
        moved = false;
        for (const p of placed) {
          const overlapX = box.x < p.x + p.w + 4 && p.x < box.x + box.w + 4;
          const overlapY = box.y < p.y + p.h + 3 && p.y < box.y + box.h + 3;
          if (overlapX && overlapY) { box.y = p.y + p.h + 3; moved = true; }
        }
      }
      placed.push(box);
      r.text.setAttribute("x", String(box.x + box.w / 2));
      r.text.setAttribute("y", String(box.y + 14));
      r.pill.setAttribute("y", String(box.y));
      r.pill.setAttribute("width", String(box.w));
      r.pill.setAttribute("x", String(box.x));
    }
  }

  // Draws `snap` into `container`; `states` maps upstream name → breaker state.
  function draw(container, snap, states) {
    if (!snap || !Array.isArray(snap.nodes) || snap.nodes.length === 0) {
      if (current.sig !== "") {
        const empty = document.createElement("div");
        empty.className = "empty";
        empty.textContent = "No traffic yet: the graph fills in as calls pass through Junction.";
        container.replaceChildren(empty);
        current = { sig: "", nodes: new Map(), edges: new Map(), svg: null };
      }
      return;
    }
    const sig = JSON.stringify([snap.nodes.map((n) => n.id + ":" + n.kind), snap.edges.map((e) => `${e.from}->${e.to}|${e.kind}`)]);
    if (sig !== current.sig || !container.contains(current.svg)) {
      build(container, snap);
      current.sig = sig;
    }
    update(snap, states || new Map());
    placeLabels();
  }

  return { draw, fmtMs };
})();
