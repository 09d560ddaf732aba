// The Recommendations card (GET /admin/recommendations): ranked, each entry
// a <details> kept by key, so an opened one stays open across polls. `fmt`
// carries the dashboard's element and number helpers.
const JunctionRecs = (() => {
  function render(report, fmt) {
    const { h, fmtInt, fmtDuration, fmtRate } = fmt;
    const $ = (sel) => document.querySelector(sel);
    const list = $("#recs .recs-list");
    const w = report.window || {};
    $("#recs-window").textContent = `${fmtInt(w.requests)} requests over ${w.seconds ? fmtDuration(w.seconds * 1000) : "–"}`;
    const recs = Array.isArray(report.recommendations) ? report.recommendations : [];
    const old = new Map([...list.children].map((li) => [li.dataset.rec, li]));
    const items = recs.map((r) => {
      const key = `${r.kind} ${r.target}`;
      let li = old.get(key);
      if (!li) {
        li = h("li", { "data-rec": key });
        const details = h("details", {},
          h("summary", {}, h("span", { class: `rec-kind rec-${r.kind}` }, r.kind), h("span", { class: "rec-title" }), h("span", { class: "rec-saves sub" })),
          h("dl", { class: "rec-body" }), h("pre", { class: "rec-yaml" }));
        li.append(details);
      }
      li.querySelector(".rec-title").textContent = r.title;
      li.querySelector(".rec-saves").textContent = `saves ${fmtRate(r.score)} s of waiting`;
      const dl = li.querySelector(".rec-body");
      dl.replaceChildren(...[["Evidence", r.evidence], ["Gain", r.gain], ["Risk", r.risk]].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
      li.querySelector(".rec-yaml").textContent = r.yaml;
      return li;
    });
    list.replaceChildren(...items);
    if (!items.length) list.replaceChildren(h("li", { class: "empty" }, "Nothing to recommend yet."));
    const limits = Array.isArray(report.limitations) ? report.limitations : [];
    $("#recs .recs-limits").replaceChildren(...limits.map((l) => h("li", { class: "sub" }, `Not assessed: ${l}`)));
  }
  return { render };
})();
