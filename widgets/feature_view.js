// FeatureView: a sparse autoencoder's features. A searchable list; for the selected feature its top-activating
// contexts (tokens shaded by its activation), an activation histogram and the tokens it boosts / suppresses; prompts
// shaded by it, where clicking a token lists the features active there. Feature and token data are requested
// (from the kernel when live, from the embedded data in a standalone page).
import { h, select, showToken, BLUES, lutColor, inkFor, staticModel, scaffold, esc } from "./common.js";

const MAX_ROWS = 300; // list rows drawn at once (an SAE may have tens of thousands of features)
const HIST_W = 300;
const HIST_H = 90;

// Styles of this view only (the shared stylesheet stays the other views').
const CSS = `
.wb-featview .wb-fbody { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
.wb-featview .wb-flist { width: 270px; max-height: 560px; overflow-y: auto; border: 1px solid #ddd; }
.wb-featview .wb-frow { padding: 2px 6px; cursor: pointer; border-bottom: 1px solid #f0f0f0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; font-size: 12px; }
.wb-featview .wb-frow:hover { background: #f3f7fb; }
.wb-featview .wb-frow.wb-sel { background: #dbe9f6; font-weight: 600; }
.wb-featview .wb-frow .wb-fid { display: inline-block; min-width: 46px; font-family: ui-monospace, Menlo, monospace; }
.wb-featview .wb-frow .wb-fdens { color: #777; display: inline-block; min-width: 56px; }
.wb-featview .wb-fmain { flex: 1; min-width: 320px; max-width: 760px; }
.wb-featview .wb-fhead { font-weight: 600; margin-bottom: 6px; }
.wb-featview .wb-fstats { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }
.wb-featview .wb-fhist { border-bottom: 1px solid #999; }
.wb-featview table.wb-flogits { border-collapse: collapse; font-size: 12px; }
.wb-featview table.wb-flogits td { padding: 0 6px; }
.wb-featview .wb-fup { color: #2166ac; }
.wb-featview .wb-fdown { color: #b2182b; }
.wb-featview h4 { margin: 10px 0 4px; font-size: 13px; }
.wb-featview .wb-fchip { display: inline-block; margin: 2px 4px 2px 0; padding: 0 5px; border: 1px solid #9ecae1; border-radius: 8px; cursor: pointer; font-size: 12px; }
.wb-featview .wb-fchip:hover { background: #dbe9f6; }
.wb-featview .wb-fprompt { line-height: 1.9; }
`;

function render({ model, el }) {
  const { root, bar, set, rq, tip } = scaffold(model, el, "wb-featview");
  root.appendChild(h("style", null, CSS));
  const rows = model.get("features");
  const prompts = model.get("prompts");

  const search = h("input", "wb-fsearch");
  search.type = "search";
  search.placeholder = "search: #index or a boosted token";
  const searchCtl = h("label", "wb-ctl");
  searchCtl.appendChild(h("span", "wb-ctl-label", "features"));
  searchCtl.appendChild(search);
  bar.appendChild(searchCtl);
  const count = h("span", "wb-fcount");
  bar.appendChild(count);
  bar.appendChild(h("span", "wb-legend", `${model.get("hook_name")} \u00b7 ${model.get("n_features")} features \u00b7 ${model.get("n_tokens")} corpus tokens`));
  const status = h("span", "wb-status");
  bar.appendChild(status);

  const body = h("div", "wb-fbody");
  root.appendChild(body);
  const list = h("div", "wb-flist");
  body.appendChild(list);
  const main = h("div", "wb-fmain");
  body.appendChild(main);
  const head = h("div", "wb-fhead");
  main.appendChild(head);
  const statsRow = h("div", "wb-fstats");
  main.appendChild(statsRow);
  const histBox = h("div", "wb-figure");
  const hist = h("canvas", "wb-fhist");
  const histAxis = h("div", "wb-axis");
  histBox.appendChild(h("div", "wb-axis", "activation histogram (where it fires)"));
  histBox.appendChild(hist);
  histBox.appendChild(histAxis);
  statsRow.appendChild(histBox);
  const logits = h("table", "wb-flogits");
  statsRow.appendChild(logits);
  main.appendChild(h("h4", null, "Top activating contexts"));
  const contexts = h("div", "wb-fcontexts");
  main.appendChild(contexts);
  const promptHead = h("h4", null, "Prompts (click a token: the features active there)");
  const promptBar = h("div", "wb-bar");
  const promptEl = h("div", "wb-fprompt");
  const tokenEl = h("div", "wb-ftoken");
  if (prompts.length) {
    main.appendChild(promptHead);
    if (prompts.length > 1) {
      const opts = prompts.map((p, i) => [i, `${i}: ${p.tokens.slice(0, 8).join("").slice(0, 40)}\u2026`]);
      promptBar.appendChild(select("prompt", opts, model.get("prompt"), (v) => set("prompt", +v)));
      main.appendChild(promptBar);
    }
    main.appendChild(promptEl);
    main.appendChild(tokenEl);
  }

  // ---- the list
  function matches(row, q) {
    if (!q) return true;
    const m = /^#?(\d+)$/.exec(q);
    if (m) return String(row[0]).startsWith(m[1]);
    return row[3].join(" ").toLowerCase().includes(q.toLowerCase());
  }
  function drawList() {
    const q = search.value.trim();
    list.textContent = "";
    const found = rows.filter((r) => matches(r, q));
    for (const r of found.slice(0, MAX_ROWS)) {
      const row = h("div", "wb-frow");
      row.dataset.f = r[0];
      row.appendChild(h("span", "wb-fid", `#${r[0]}`));
      const boosts = r[3].map(showToken).join(" ");
      row.appendChild(h("span", "wb-fdens", r[1] > 0 ? `${(100 * r[1]).toPrecision(2)}%` : "dead"));
      row.appendChild(h("span", null, boosts));
      row.title = `feature ${r[0]}: fires on ${(100 * r[1]).toPrecision(3)}% of tokens, max ${r[2]}; boosts ${boosts}`;
      row.addEventListener("click", () => set("feature", r[0]));
      row.classList.toggle("wb-sel", r[0] === model.get("feature"));
      list.appendChild(row);
    }
    count.textContent = found.length > MAX_ROWS ? `${found.length} match (first ${MAX_ROWS} listed)` : `${found.length} match`;
    root.dataset.shown = String(Math.min(found.length, MAX_ROWS));
  }
  search.addEventListener("input", drawList);

  // ---- tokens shaded by an activation
  function paint(container, tokens, values, mx, center = -1, onClick = null) {
    tokens.forEach((t, i) => {
      const s = h("span", "wb-tok", showToken(t));
      s.dataset.i = i;
      const v = values[i];
      if (v != null && v > 0) {
        const b = (255 * v) / (mx || 1);
        s.style.backgroundColor = lutColor(BLUES, b);
        s.style.color = inkFor(BLUES, b);
      }
      if (i === center) s.style.fontWeight = "700";
      s.addEventListener("mouseenter", (ev) => tip.show(ev, `<b>${esc(showToken(t))}</b> (${i})<br>activation: ${v == null ? "n/a" : v.toFixed(4)}`));
      s.addEventListener("mouseleave", () => tip.hide());
      if (onClick) s.addEventListener("click", () => onClick(i));
      container.appendChild(s);
    });
  }

  function drawHist(counts, width) {
    const dpr = window.devicePixelRatio || 1;
    hist.width = HIST_W * dpr;
    hist.height = HIST_H * dpr;
    hist.style.width = `${HIST_W}px`;
    hist.style.height = `${HIST_H}px`;
    const ctx = hist.getContext("2d");
    ctx.clearRect(0, 0, hist.width, hist.height);
    const top = Math.max(1, ...counts);
    const bw = hist.width / counts.length;
    ctx.fillStyle = "#2166ac";
    counts.forEach((c, i) => {
      const y = (hist.height * c) / top;
      ctx.fillRect(i * bw, hist.height - y, Math.max(1, bw - dpr), y);
    });
    histAxis.textContent = `0 \u2026 ${(width * counts.length).toPrecision(3)} \u00b7 tallest bar ${top} tokens`;
    root.dataset.histTotal = String(counts.reduce((a, b) => a + b, 0));
  }

  function drawLogits(meta) {
    logits.textContent = "";
    if (!meta.boosted.length && !meta.suppressed.length) {
      logits.appendChild(h("tr")).appendChild(h("td", "wb-legend", "no direct logit effects (the SAE is not on the residual stream)"));
      return;
    }
    const hr = h("tr");
    hr.appendChild(h("th", "wb-fup", "boosts"));
    hr.appendChild(h("th"));
    hr.appendChild(h("th", "wb-fdown", "suppresses"));
    hr.appendChild(h("th"));
    logits.appendChild(hr);
    const n = Math.max(meta.boosted.length, meta.suppressed.length);
    for (let i = 0; i < n; i++) {
      const tr = h("tr");
      for (const [pair, cls] of [[meta.boosted[i], "wb-fup"], [meta.suppressed[i], "wb-fdown"]]) {
        tr.appendChild(h("td", `wb-tok ${cls}`, pair ? showToken(pair[0]) : ""));
        tr.appendChild(h("td", cls, pair && pair[1] != null ? (pair[1] > 0 ? "+" : "") + pair[1].toFixed(3) : ""));
      }
      logits.appendChild(tr);
    }
  }

  let meta = null;
  function drawPrompt() {
    promptEl.textContent = "";
    if (!prompts.length || !meta) return;
    const p = model.get("prompt");
    paint(promptEl, prompts[p].tokens, meta.prompt_values[p], meta.max, -1, (i) => loadToken(p, i));
  }

  let want = -1;
  async function loadFeature() {
    const f = model.get("feature");
    want = f;
    for (const r of list.querySelectorAll(".wb-frow")) r.classList.toggle("wb-sel", +r.dataset.f === f);
    status.textContent = "loading\u2026";
    try {
      const res = await rq.ask({ what: "feature", feature: f });
      if (want !== f) return; // a newer selection won
      meta = res.meta;
      head.textContent = `Feature #${f} \u00b7 fires on ${(100 * meta.density).toPrecision(3)}% of tokens (${meta.fires}) \u00b7 max ${meta.max.toPrecision(4)} \u00b7 mean where active ${meta.mean.toPrecision(4)}`;
      drawHist(meta.hist.counts, meta.hist.width);
      drawLogits(meta);
      contexts.textContent = "";
      if (!meta.contexts.length) contexts.appendChild(h("div", "wb-legend", "this feature never fires on the corpus (dead)"));
      for (const c of meta.contexts) {
        const row = h("div", "wb-example");
        row.dataset.ctx = c.ctx;
        row.appendChild(h("span", "wb-score", c.score.toFixed(3)));
        paint(row, c.tokens, c.values, meta.max, c.center);
        contexts.appendChild(row);
      }
      drawPrompt();
      status.textContent = "";
      root.dataset.source = meta.source;
      root.dataset.loaded = String(f);
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }

  async function loadToken(p, i) {
    for (const s of promptEl.querySelectorAll(".wb-tok")) s.classList.toggle("wb-focus", +s.dataset.i === i);
    try {
      const res = await rq.ask({ what: "token", prompt: p, pos: i });
      tokenEl.textContent = "";
      const tok = prompts[p].tokens[i];
      tokenEl.appendChild(h("div", "wb-legend", `features active on ${showToken(tok)} (position ${i}): ${res.meta.features.length ? "" : "none"}`));
      for (const [f, v] of res.meta.features) {
        const chip = h("span", "wb-fchip", `#${f} ${v.toFixed(3)}`);
        chip.dataset.f = f;
        chip.addEventListener("click", () => set("feature", f));
        tokenEl.appendChild(chip);
      }
      root.dataset.token = `${p}:${i}`;
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }

  const onPrompt = () => {
    tokenEl.textContent = "";
    drawPrompt();
  };
  drawList();
  model.on("change:feature", loadFeature);
  model.on("change:prompt", onPrompt);
  loadFeature();
  return () => {
    rq.dispose();
    model.off("change:feature", loadFeature);
    model.off("change:prompt", onPrompt);
  };
}

// Answers requests in a standalone page from the data Python embedded (see workbench/viz/feature_view.py); prompt
// shading comes from each token's list of active features.
function staticResponder(data) {
  return async (req) => {
    if (req.what === "token") {
      const toks = data.tokens[req.prompt];
      if (!toks || !toks[req.pos]) throw new Error(`no token ${req.pos} in prompt ${req.prompt}`);
      return [{ prompt: req.prompt, pos: req.pos, features: toks[req.pos].slice(0, 12), source: data.source }, []];
    }
    const f = data.features[String(req.feature)];
    if (!f) throw new Error(`feature ${req.feature} is not in this page (pass features=[...] before exporting)`);
    const promptValues = data.tokens.map((p) => p.map((tok) => {
      const hit = tok.find(([g]) => g === req.feature);
      return hit ? hit[1] : 0;
    }));
    return [{ ...f, prompt_values: promptValues, source: data.source }, []];
  };
}

export default { render };
export { staticResponder, staticModel };  // not `render`: anywidget warns about a named render export
