// AttentionView: a layers x heads grid of thumbnails and a large pattern for the selected head.
// The pattern of the shown head is requested on demand (from the kernel when live, from the embedded
// data in a standalone page), so long inputs never ship every head at full resolution at once.
import { h, select, showToken, BLUES, drawMatrix, staticModel, scaffold, inflate, esc } from "./common.js";

const BIG = 440; // CSS pixels of the large pattern

function render({ model, el }) {
  const t0 = performance.now();
  const { root, bar, set, rq, tip } = scaffold(model, el, "wb-attn");
  const layers = model.get("layers");
  const heads = model.get("heads");
  const prompts = model.get("prompts");
  if (prompts.length > 1) {
    bar.appendChild(
      select("prompt", prompts.map((p, i) => [i, `${i}: ${p.tokens.slice(0, 6).join("").slice(0, 30)}\u2026`]), model.get("prompt"), (v) => set("prompt", +v)),
    );
  }
  const layerSel = select("layer", layers.map((l) => [l, `L${l}`]), model.get("layer"), (v) => set("layer", +v));
  const headSel = select("head", heads.map((x) => [x, `H${x}`]), model.get("head"), (v) => set("head", +v));
  bar.appendChild(layerSel);
  bar.appendChild(headSel);
  const status = h("span", "wb-status", "loading\u2026");
  bar.appendChild(status);

  const body = h("div", "wb-attn-body");
  root.appendChild(body);
  const grid = h("div", "wb-grid");
  grid.style.gridTemplateColumns = `auto repeat(${heads.length}, auto)`;
  body.appendChild(grid);
  const thumbs = new Map();
  grid.appendChild(h("div", "wb-grid-label"));
  for (const x of heads) grid.appendChild(h("div", "wb-grid-label", `H${x}`));
  for (const l of layers) {
    grid.appendChild(h("div", "wb-grid-label", `L${l}`));
    for (const x of heads) {
      const c = h("canvas", "wb-thumb");
      c.dataset.layer = l;
      c.dataset.head = x;
      c.title = `layer ${l} head ${x}`;
      c.addEventListener("click", () => {
        set("layer", l);
        set("head", x);
      });
      grid.appendChild(c);
      thumbs.set(`${l}:${x}`, c);
    }
  }

  const main = h("div", "wb-attn-main");
  body.appendChild(main);
  const figure = h("div", "wb-figure");
  main.appendChild(figure);
  const axis = h("div", "wb-axis", "query \u2193   key \u2192");
  figure.appendChild(axis);
  const stack = h("div", "wb-stack");
  stack.style.width = stack.style.height = `${BIG}px`;
  figure.appendChild(stack);
  const big = h("canvas", "wb-big");
  const over = h("canvas", "wb-over");
  stack.appendChild(big);
  stack.appendChild(over);
  const side = h("div", "wb-side");
  main.appendChild(side);
  side.appendChild(h("div", "wb-legend", "hover or click a token: blue = what it attends to, orange underline = what attends to it"));
  const toks = h("div", "wb-tokens");
  side.appendChild(toks);
  const info = h("div", "wb-info");
  root.appendChild(info);

  let P = null; // Uint8Array [n * n] of the shown head
  let n = 0;
  let spans = [];
  let focus = -1;
  let pinned = -1;

  function buildTokens() {
    toks.textContent = "";
    const tokens = prompts[model.get("prompt")].tokens;
    spans = tokens.map((t, i) => {
      const s = h("span", "wb-tok", showToken(t));
      s.dataset.i = i;
      s.addEventListener("mouseenter", () => pinned < 0 && setFocus(i));
      s.addEventListener("mouseleave", () => pinned < 0 && setFocus(-1));
      s.addEventListener("click", () => {
        pinned = pinned === i ? -1 : i;
        setFocus(pinned < 0 ? i : pinned);
      });
      toks.appendChild(s);
      return s;
    });
  }

  function setFocus(i) {
    focus = i;
    for (let j = 0; j < spans.length; j++) {
      const s = spans[j];
      if (i < 0 || !P) {
        s.style.backgroundColor = "";
        s.style.boxShadow = "";
        s.style.color = "";
        s.classList.remove("wb-focus");
        continue;
      }
      const a = P[i * n + j] / 255; // i attends to j
      const b = P[j * n + i] / 255; // j attends to i
      s.style.backgroundColor = a > 0 ? `rgba(33,102,172,${Math.min(1, 0.08 + a)})` : "";
      s.style.color = a > 0.55 ? "#fff" : "";
      s.style.boxShadow = b > 0 ? `inset 0 -3px 0 rgba(230,97,1,${Math.min(1, 0.15 + b)})` : "";
      s.classList.toggle("wb-focus", j === i);
    }
    drawOverlay();
  }

  function drawOverlay() {
    const dpr = window.devicePixelRatio || 1;
    over.width = over.height = BIG * dpr;
    const ctx = over.getContext("2d");
    ctx.clearRect(0, 0, over.width, over.height);
    if (focus < 0 || !n) return;
    const cell = (BIG * dpr) / n;
    const w = Math.max(cell, 1.5 * dpr);
    ctx.strokeStyle = "rgba(230,97,1,0.9)";
    ctx.lineWidth = w > 3 ? 1.5 * dpr : w;
    if (w > 3) {
      ctx.strokeRect(0, focus * cell, n * cell, cell); // the row: what it attends to
      ctx.strokeRect(focus * cell, 0, cell, n * cell); // the column: what attends to it
    } else {
      ctx.fillStyle = "rgba(230,97,1,0.5)";
      ctx.fillRect(0, focus * cell, n * cell, w);
      ctx.fillRect(focus * cell, 0, w, n * cell);
    }
  }

  over.addEventListener("mousemove", (ev) => {
    if (!P) return;
    const r = over.getBoundingClientRect();
    const q = Math.min(n - 1, Math.floor(((ev.clientY - r.top) / r.height) * n));
    const k = Math.min(n - 1, Math.floor(((ev.clientX - r.left) / r.width) * n));
    const tokens = prompts[model.get("prompt")].tokens;
    tip.show(ev, `<b>${esc(showToken(tokens[q]))}</b> (${q}) \u2192 <b>${esc(showToken(tokens[k]))}</b> (${k})<br>attention \u2248 ${(P[q * n + k] / 255).toFixed(3)}`);
    if (pinned < 0) setFocus(q);
  });
  over.addEventListener("mouseleave", () => {
    tip.hide();
    if (pinned < 0) setFocus(-1);
  });

  let want = "";
  async function loadHead() {
    const prompt = model.get("prompt");
    const layer = model.get("layer");
    const head = model.get("head");
    const key = `${prompt}:${layer}:${head}`;
    want = key;
    layerSel.select.value = String(layer);
    headSel.select.value = String(head);
    for (const [k, c] of thumbs) c.classList.toggle("wb-sel", k === `${layer}:${head}`);
    status.textContent = "loading\u2026";
    try {
      const { meta, buffers } = await rq.ask({ what: "head", prompt, layer, head });
      if (want !== key) return; // a newer selection won
      n = meta.n;
      P = buffers[0];
      drawMatrix(big, P, n, n, BLUES);
      big.style.width = big.style.height = `${BIG}px`;
      setFocus(pinned >= 0 && pinned < n ? pinned : -1);
      const e = meta.entropy;
      info.innerHTML = `<b>L${layer} H${head}</b> \u00b7 ${n} tokens \u00b7 mean entropy <span class="wb-entropy">${e.toFixed(4)}</span> nats \u00b7 max attention ${meta.max.toFixed(4)} \u00b7 from ${esc(meta.source)}${meta.note ? ` \u00b7 ${esc(meta.note)}` : ""}`;
      root.dataset.entropy = e.toFixed(6);
      let sum = 0;
      for (let i = 0; i < P.length; i++) sum += P[i];
      root.dataset.checksum = String(sum); // lets tests compare the decoded pattern with Python's
      root.dataset.source = meta.source;
      status.textContent = "";
      root.dataset.loaded = key;
      if (!root.dataset.firstHeadMs) root.dataset.firstHeadMs = (performance.now() - t0).toFixed(1);
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }

  async function loadThumbs() {
    const prompt = model.get("prompt");
    try {
      const { meta, buffers } = await rq.ask({ what: "thumbs", prompt });
      const t = meta.t;
      let off = 0;
      for (const l of meta.layers) {
        for (const x of meta.heads) {
          const c = thumbs.get(`${l}:${x}`);
          if (c) drawMatrix(c, buffers[0], t, t, BLUES, off);
          off += t * t;
        }
      }
      root.dataset.thumbs = String(prompt);
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }

  buildTokens();
  const onPrompt = () => {
    pinned = -1;
    buildTokens();
    loadHead().then(loadThumbs);
  };
  const onSel = () => loadHead();
  model.on("change:prompt", onPrompt);
  model.on("change:layer", onSel);
  model.on("change:head", onSel);
  loadHead().then(loadThumbs);
  return () => {
    rq.dispose();
    model.off("change:prompt", onPrompt);
    model.off("change:layer", onSel);
    model.off("change:head", onSel);
  };
}

// Answers requests in a standalone page from the data Python embedded (see workbench/viz/attention.py).
function staticResponder(data) {
  const cache = new Map();
  async function layerBytes(p, li) {
    const key = `${p}:${li}`;
    if (!cache.has(key)) cache.set(key, inflate(data.prompts[p].layers[li]));
    return cache.get(key);
  }
  return async (req) => {
    const pd = data.prompts[req.prompt];
    if (!pd) throw new Error(`no prompt ${req.prompt}`);
    if (req.what === "thumbs") {
      return [{ t: pd.t, layers: data.layers, heads: data.heads }, [await inflate(pd.thumbs)]];
    }
    const li = data.layers.indexOf(req.layer);
    const hi = data.heads.indexOf(req.head);
    if (li < 0 || hi < 0) throw new Error(`layer ${req.layer} head ${req.head} not exported`);
    const raw = await layerBytes(req.prompt, li);
    const { n, m, bits } = pd;
    const f = Math.ceil(n / m);
    const per = bits === 8 ? m * m : Math.ceil((m * m) / 2);
    const src = raw.subarray(hi * per, (hi + 1) * per);
    const small = new Uint8Array(m * m);
    if (bits === 8) small.set(src);
    else for (let i = 0; i < m * m; i++) small[i] = (((i & 1 ? src[i >> 1] >> 4 : src[i >> 1]) & 15) * 255) / 15;
    let out = small;
    if (f > 1) {
      out = new Uint8Array(n * n);
      for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) out[q * n + k] = small[Math.floor(q / f) * m + Math.floor(k / f)];
    }
    const st = pd.stats[li][hi];
    const note = [bits < 8 ? `stored at ${bits}-bit precision` : "", f > 1 ? `stored at 1/${f} resolution` : ""].filter(Boolean).join(", ");
    return [{ n, layer: req.layer, head: req.head, entropy: st[0], max: st[1], source: data.source, note }, [out]];
  };
}

export default { render };
export { staticResponder, staticModel };  // not `render`: anywidget warns about a named render export
