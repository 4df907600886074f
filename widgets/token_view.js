// TokenView: text coloured by one value per token (loss, a neuron's activation, a component's direct logit
// attribution), a selector that asks the kernel for another value, and a neuron's top-activating examples.
import { h, select, showToken, BLUES, RDBU, lutColor, inkFor, staticModel, scaffold, esc } from "./common.js";

function render({ model, el }) {
  const { root, bar, set, rq, tip } = scaffold(model, el, "wb-tokenview");
  const kinds = [["loss", "per-token loss"], ["neuron", "MLP neuron"], ["dla", "direct logit attribution"]];
  const kindSel = select("value", kinds, model.get("kind"), (v) => set("kind", v));
  bar.appendChild(kindSel);
  const layerSel = select("layer", [...Array(model.get("n_layers")).keys()].map((l) => [l, `L${l}`]), model.get("layer"), (v) => set("layer", +v));
  bar.appendChild(layerSel);
  const opts = model.get("neuron_options");
  let neuronCtl;
  if (opts.length) {
    // standalone page: only the precomputed neurons
    neuronCtl = select("neuron", opts, `${model.get("layer")}:${model.get("neuron")}`, (v) => {
      const [l, n] = v.split(":").map(Number);
      set("layer", l);
      set("neuron", n);
    });
    layerSel.style.display = "none";
  } else {
    neuronCtl = h("label", "wb-ctl");
    neuronCtl.appendChild(h("span", "wb-ctl-label", `neuron (0\u2013${model.get("d_mlp") - 1})`));
    const input = h("input", "wb-neuron-input");
    input.type = "number";
    input.min = 0;
    input.max = model.get("d_mlp") - 1;
    input.value = model.get("neuron");
    input.addEventListener("change", () => set("neuron", Math.max(0, Math.min(model.get("d_mlp") - 1, +input.value || 0))));
    neuronCtl.appendChild(input);
    neuronCtl.input = input;
  }
  bar.appendChild(neuronCtl);
  const compSel = select("component", model.get("components").map((c) => [c, c]), model.get("component"), (v) => set("component", v));
  bar.appendChild(compSel);
  const status = h("span", "wb-status");
  bar.appendChild(status);
  const cbar = h("div", "wb-colorbar");
  root.appendChild(cbar);
  const textsEl = h("div", "wb-texts");
  root.appendChild(textsEl);
  const examplesEl = h("div", "wb-examples");
  root.appendChild(examplesEl);

  const key = () => {
    const k = model.get("kind");
    if (k === "neuron") return `neuron:${model.get("layer")}:${model.get("neuron")}`;
    if (k === "dla") return `dla:${model.get("component")}`;
    return "loss";
  };

  function syncControls() {
    const k = model.get("kind");
    kindSel.select.value = k;
    layerSel.style.display = k === "neuron" && !opts.length ? "" : "none";
    neuronCtl.style.display = k === "neuron" ? "" : "none";
    compSel.style.display = k === "dla" ? "" : "none";
    layerSel.select.value = String(model.get("layer"));
    if (neuronCtl.select) neuronCtl.select.value = `${model.get("layer")}:${model.get("neuron")}`;
    if (neuronCtl.input) neuronCtl.input.value = model.get("neuron");
    compSel.select.value = model.get("component");
  }

  function colourer(meta) {
    const lo = meta.lo;
    const hi = meta.hi;
    if (meta.diverging) {
      const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
      return [RDBU, (v) => 127.5 + (127.5 * v) / m, -m, m];
    }
    return [BLUES, (v) => (255 * (v - Math.min(0, lo))) / ((hi - Math.min(0, lo)) || 1), Math.min(0, lo), hi];
  }

  function paint(container, tokens, values, toByte, lut, label, center = -1) {
    tokens.forEach((t, i) => {
      const s = h("span", "wb-tok", showToken(t));
      s.dataset.i = i;
      const v = values[i];
      if (v != null) {
        const b = toByte(v);
        s.style.backgroundColor = lutColor(lut, b);
        s.style.color = inkFor(lut, b);
      }
      if (i === center) s.style.fontWeight = "700";
      s.addEventListener("mouseenter", (ev) => tip.show(ev, `<b>${esc(showToken(t))}</b> (${i})<br>${esc(label)}: ${v == null ? "n/a" : v.toFixed(4)}`));
      s.addEventListener("mouseleave", () => tip.hide());
      container.appendChild(s);
    });
  }

  function drawColorbar(lut, lo, hi, label) {
    cbar.textContent = "";
    cbar.appendChild(h("span", null, lo.toPrecision(3)));
    const c = h("canvas");
    c.width = 256;
    c.height = 1;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(256, 1);
    img.data.set(lut);
    ctx.putImageData(img, 0, 0);
    cbar.appendChild(c);
    cbar.appendChild(h("span", null, hi.toPrecision(3)));
    cbar.appendChild(h("span", "wb-colorbar-label", label));
  }

  let want = "";
  async function load() {
    syncControls();
    const k = key();
    want = k;
    status.textContent = "loading\u2026";
    try {
      const { meta } = await rq.ask({ what: "values", key: k });
      if (want !== k) return;
      const [lut, toByte, lo, hi] = colourer(meta);
      drawColorbar(lut, lo, hi, meta.label);
      textsEl.textContent = "";
      const texts = model.get("texts");
      meta.values.forEach((vals, ti) => {
        const div = h("div", "wb-text");
        div.dataset.text = ti;
        paint(div, texts[ti].tokens, vals, toByte, lut, meta.label);
        textsEl.appendChild(div);
      });
      examplesEl.textContent = "";
      if (meta.examples) {
        examplesEl.appendChild(h("h4", null, `Top activating examples: ${meta.label} over ${meta.n_example_texts} texts`));
        for (const ex of meta.examples) {
          const row = h("div", "wb-example");
          row.appendChild(h("span", "wb-score", ex.score.toFixed(4)));
          paint(row, ex.tokens, ex.values, toByte, lut, meta.label, ex.center);
          examplesEl.appendChild(row);
        }
      }
      status.textContent = "";
      root.dataset.loaded = k;
      root.dataset.source = meta.source;
    } catch (err) {
      status.textContent = `error: ${err.message}`;
    }
  }
  const names = ["kind", "layer", "neuron", "component"];
  for (const n of names) model.on(`change:${n}`, load);
  load();
  return () => {
    rq.dispose();
    for (const n of names) model.off(`change:${n}`, load);
  };
}

function staticResponder(data) {
  return async (req) => {
    const v = data.values[req.key];
    if (!v) throw new Error(`${req.key} was not precomputed for this page (pass neurons=[(layer, neuron)] before exporting)`);
    return [{ ...v, source: data.source }, []];
  };
}

export default { render };
export { staticResponder, staticModel };  // not `render`: anywidget warns about a named render export
