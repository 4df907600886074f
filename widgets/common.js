// Shared helpers for the NeoX Workbench widgets: DOM, colour maps, the request channel to the kernel,
// and the stand-in model that lets the same widget code run in a standalone page with no kernel.

// An element; its text (always text, never markup) with invisible characters as escapes (see `visible`).
export function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = visible(text);
  return e;
}

export function select(label, options, value, onChange) {
  const wrap = h("label", "wb-ctl");
  wrap.appendChild(h("span", "wb-ctl-label", label));
  const s = h("select");
  for (const [v, text] of options) {
    const o = h("option", null, text);
    o.value = String(v);
    s.appendChild(o);
  }
  s.value = String(value);
  s.addEventListener("change", () => onChange(s.value));
  wrap.appendChild(s);
  wrap.select = s;
  return wrap;
}

// Characters that would not show, or would reorder or break the text around them: controls, bidi
// overrides and isolates, line/paragraph separators, lone surrogates.
const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

// `s` with every invisible character as a \uXXXX escape (shown literally, without reordering its neighbours).
export function visible(s) {
  return String(s).replace(INVISIBLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

// Visible form of a token: spaces as middle dots at the edges, newlines and tabs as escapes, other invisible
// characters as \uXXXX.
export function showToken(t) {
  return visible(t.replace(/\n/g, "\\n").replace(/\t/g, "\\t")).replace(/^ /, "\u00b7").replace(/ $/, "\u00b7") || "\u2205";
}

function ramp(stops) {
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const a = Math.min(Math.floor(x), stops.length - 2);
    const f = x - a;
    for (let c = 0; c < 3; c++) lut[i * 4 + c] = stops[a][c] * (1 - f) + stops[a + 1][c] * f;
    lut[i * 4 + 3] = 255;
  }
  return lut;
}

export const BLUES = ramp([[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]]);
export const RDBU = ramp([[178, 24, 43], [239, 138, 98], [247, 247, 247], [103, 169, 207], [33, 102, 172]]);

export function lutColor(lut, v) {
  const i = Math.max(0, Math.min(255, Math.round(v))) * 4;
  return `rgb(${lut[i]},${lut[i + 1]},${lut[i + 2]})`;
}

// Readable text on a coloured background.
export function inkFor(lut, v) {
  const i = Math.max(0, Math.min(255, Math.round(v))) * 4;
  return 0.299 * lut[i] + 0.587 * lut[i + 1] + 0.114 * lut[i + 2] < 140 ? "#fff" : "#111";
}

// Draw an [rows, cols] uint8 matrix into a canvas, one pixel per cell.
export function drawMatrix(canvas, data, rows, cols, lut, offset = 0) {
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  const px = img.data;
  for (let i = 0, n = rows * cols; i < n; i++) {
    const v = data[offset + i] * 4;
    const o = i * 4;
    px[o] = lut[v];
    px[o + 1] = lut[v + 1];
    px[o + 2] = lut[v + 2];
    px[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

export function toU8(b) {
  if (b instanceof Uint8Array) return b;
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  throw new Error("unsupported buffer type");
}

// Request/response over anywidget custom messages. Ids carry a per-view prefix because every view of a
// model hears every response.
export function requester(model) {
  const prefix = Math.random().toString(36).slice(2, 8);
  let next = 1;
  const pending = new Map();
  const onMsg = (msg, buffers) => {
    if (!msg || msg.type !== "response" || !pending.has(msg.id)) return;
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.ok) p.resolve({ meta: msg.meta, buffers: (buffers || []).map(toU8) });
    else p.reject(new Error(msg.error));
  };
  model.on("msg:custom", onMsg);
  return {
    ask(req) {
      const id = `${prefix}:${next++}`;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        model.send({ ...req, type: "request", id });
      });
    },
    dispose() {
      model.off("msg:custom", onMsg);
    },
  };
}

// A Backbone-like model for standalone pages: traits come from the embedded state and requests are
// answered by `respond(request) -> Promise<[meta, buffers]>` from the embedded data.
export function staticModel(state, respond) {
  const listeners = {};
  const emit = (ev, ...args) => (listeners[ev] || []).slice().forEach((f) => f(...args));
  return {
    get: (k) => state[k],
    set: (k, v) => {
      if (state[k] === v) return;
      state[k] = v;
      emit(`change:${k}`);
    },
    save_changes: () => {},
    on: (ev, f) => ev.split(" ").forEach((e) => (listeners[e] ||= []).push(f)),
    off: (ev, f) => {
      for (const e of ev.split(" ")) listeners[e] = (listeners[e] || []).filter((g) => g !== f);
    },
    send: (msg) => {
      Promise.resolve()
        .then(() => respond(msg))
        .then(([meta, buffers]) => emit("msg:custom", { type: "response", id: msg.id, ok: true, meta }, buffers || []))
        .catch((e) => emit("msg:custom", { type: "response", id: msg.id, ok: false, error: String(e) }, []));
    },
  };
}

export function b64bytes(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// zlib-wrapped deflate (Python's zlib.compress) -> bytes, with the browser's built-in DecompressionStream.
export async function inflate(b64) {
  const stream = new Blob([b64bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export function tooltip(root) {
  const tip = h("div", "wb-tip");
  tip.style.display = "none";
  root.appendChild(tip);
  return {
    show(ev, html) {
      tip.innerHTML = html;
      tip.style.display = "block";
      const r = root.getBoundingClientRect();
      tip.style.left = `${ev.clientX - r.left + 14}px`;
      tip.style.top = `${ev.clientY - r.top + 14}px`;
    },
    hide() {
      tip.style.display = "none";
    },
  };
}

// `s` as HTML text: markup escaped, invisible characters as escapes.
export function esc(s) {
  return visible(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// What every widget starts with: its root element, the request channel to the kernel (or the embedded data),
// a tooltip, a setter that syncs a trait back to Python, the optional title and the bar of selectors.
export function scaffold(model, el, cls) {
  const root = h("div", `wb ${cls}`);
  el.appendChild(root);
  const title = model.get("title");
  if (title) root.appendChild(h("div", "wb-title", title));
  const bar = h("div", "wb-bar");
  root.appendChild(bar);
  const set = (k, v) => {
    model.set(k, v);
    model.save_changes();
  };
  return { root, bar, set, rq: requester(model), tip: tooltip(root) };
}

// Standalone pages: what the page left out or rounded to fit its size budget, under the bar of selectors.
export function pageNotes(el, notes) {
  if (!notes || !notes.length) return;
  const root = el.querySelector(".wb") || el;
  const bar = root.querySelector(".wb-bar");
  root.insertBefore(h("div", "wb-note", notes.join(" \u00b7 ")), bar ? bar.nextSibling : root.firstChild);
}
