// LogitLensView: layers x positions, each cell the top token of the residual stream decoded through the
// final layer norm and unembedding, coloured by the probability (or rank) of a target token.
import { h, select, showToken, BLUES, lutColor, inkFor, staticModel, scaffold, esc } from "./common.js";

// How each lens decodes a row (LogitLensView's `lens`).
const LENS_NOTES = {
  logit: "logit lens: final layer norm + unembedding",
  tuned: "tuned lens: a learned affine translator per layer, then final layer norm + unembedding",
};

function render({ model, el }) {
  const { root, bar, set, rq, tip } = scaffold(model, el, "wb-lensview");
  const lens = model.get("lens") || "logit";
  root.dataset.lens = lens;
  const prompts = model.get("prompts");
  const rows = model.get("row_labels");
  if (prompts.length > 1) {
    bar.appendChild(select("prompt", prompts.map((p, i) => [i, `${i}: ${p.tokens.slice(0, 6).join("").slice(0, 30)}\u2026`]), model.get("prompt"), (v) => set("prompt", +v)));
  }
  const targetSel = select("target", model.get("target_options"), model.get("target"), (v) => set("target", v));
  bar.appendChild(targetSel);
  if (model.get("live")) {
    const wrap = h("label", "wb-ctl");
    wrap.appendChild(h("span", "wb-ctl-label", "token"));
    const input = h("input", "wb-target-input");
    input.placeholder = "e.g. \u00b7Paris";
    input.size = 12;
    input.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" || !input.value) return;
      const text = input.value.replace(/^\u00b7/, " ");
      const value = `text:${text}`;
      if (![...targetSel.select.options].some((o) => o.value === value)) {
        const o = h("option", null, `"${showToken(text)}"`);
        o.value = value;
        targetSel.select.appendChild(o);
      }
      set("target", value);
    });
    wrap.appendChild(input);
    bar.appendChild(wrap);
  }
  const metricSel = select("colour by", [["prob", "probability"], ["rank", "rank"]], model.get("metric"), (v) => set("metric", v));
  bar.appendChild(metricSel);
  const status = h("span", "wb-status");
  bar.appendChild(status);
  const wrap = h("div", "wb-lens-wrap");
  root.appendChild(wrap);
  const info = h("div", "wb-info");
  root.appendChild(info);

  let grid = null;
  function cellValue(r, c) {
    if (model.get("metric") === "rank") {
      const rank = grid.target_rank[r][c];
      if (rank == null) return null;
      return 255 * (1 - Math.log(rank) / Math.log(grid.vocab));
    }
    const p = grid.target_prob[r][c];
    return p == null ? null : 255 * p;
  }

  function draw() {
    if (!grid) return;
    const tokens = prompts[model.get("prompt")].tokens;
    const table = h("table", "wb-lens");
    const head = h("tr");
    head.appendChild(h("th", "wb-row", ""));
    tokens.forEach((t, c) => {
      const th = h("th", null, showToken(t));
      th.title = `position ${c}`;
      head.appendChild(th);
    });
    table.appendChild(head);
    grid.top_tokens.forEach((row, r) => {
      const tr = h("tr");
      tr.dataset.row = rows[r];
      tr.appendChild(h("th", "wb-row", rows[r]));
      row.forEach((cands, c) => {
        const td = h("td", "wb-cell", showToken(cands[0]));
        td.dataset.r = r;
        td.dataset.c = c;
        const v = cellValue(r, c);
        if (v != null) {
          td.style.background = lutColor(BLUES, v);
          td.style.color = inkFor(BLUES, v);
        }
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    table.addEventListener("mouseover", (ev) => {
      const td = ev.target.closest("td");
      if (!td) return;
      const r = +td.dataset.r;
      const c = +td.dataset.c;
      const lines = grid.top_tokens[r][c].map((t, i) => `${(100 * grid.top_probs[r][c][i]).toFixed(1)}% <b>${esc(showToken(t))}</b>`);
      const tt = grid.target_tokens[c];
      const tgt = tt == null ? "" : `<br>target <b>${esc(showToken(tt))}</b>: p=${grid.target_prob[r][c].toExponential(2)}, rank ${grid.target_rank[r][c]}`;
      tip.show(ev, `<b>${esc(rows[r])}</b>, position ${c} (${esc(showToken(tokens[c]))})<br>${lines.join("<br>")}${tgt}`);
      table.querySelectorAll(".wb-hot").forEach((e) => e.classList.remove("wb-hot"));
      td.classList.add("wb-hot");
    });
    table.addEventListener("mouseleave", () => tip.hide());
    wrap.textContent = "";
    wrap.appendChild(table);
    info.innerHTML = `${esc(grid.label)} \u00b7 rows: residual stream after each layer (${esc(LENS_NOTES[lens] || lens)}) \u00b7 from ${esc(grid.source)}`;
  }

  let want = "";
  async function load() {
    const prompt = model.get("prompt");
    const target = model.get("target");
    const key = `${prompt}|${target}`;
    want = key;
    targetSel.select.value = target;
    status.textContent = "loading\u2026";
    try {
      const { meta } = await rq.ask({ what: "grid", prompt, target });
      if (want !== key) return;
      grid = meta;
      status.textContent = "";
      draw();
      root.dataset.loaded = key;
      root.dataset.targetRankLast = String(meta.target_rank[meta.target_rank.length - 1][tokensLen() - 1]);
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }
  const tokensLen = () => prompts[model.get("prompt")].tokens.length;
  const onMetric = () => {
    metricSel.select.value = model.get("metric");
    draw();
  };
  model.on("change:prompt", load);
  model.on("change:target", load);
  model.on("change:metric", onMetric);
  load();
  return () => {
    rq.dispose();
    model.off("change:prompt", load);
    model.off("change:target", load);
    model.off("change:metric", onMetric);
  };
}

// Rebuilds the grid the kernel would send from the page's compact data (see LogitLensView._export): top tokens
// once per prompt as indices into one string table, per target its probabilities, ranks and target tokens.
function staticResponder(data) {
  const name = (i) => (i == null ? null : data.strings[i]);
  return async (req) => {
    const g = (data.grids[req.prompt] || {})[req.target];
    if (!g) throw new Error(`target ${req.target} was not precomputed for this page (pass targets=[...] before exporting)`);
    const top = data.top[req.prompt];
    const grid = {
      top_tokens: top.ids.map((row) => row.map((cell) => cell.map(name))),
      top_probs: top.probs,
      target_prob: g.own ? top.probs.map((row) => row.map((cell) => cell[0])) : g.prob,
      target_rank: g.own ? top.probs.map((row) => row.map(() => 1)) : g.rank,
      target_tokens: g.own ? top.ids[0].map(() => null) : g.tokens.map(name),
      vocab: data.vocab, label: g.label, target: req.target, source: data.source,
    };
    return [grid, []];
  };
}

export default { render };
export { staticResponder, staticModel };  // not `render`: anywidget warns about a named render export
