"""`AttentionView`: attention patterns per head, live in a kernel or as a standalone page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t

from workbench.analysis import attention_patterns
from workbench.inputs import as_prompts
from workbench.viz.base import VizWidget, as_array, is_model, json_for_script, pack, per_prompt_tokens

THUMB = 40  # thumbnail side in cells; longer inputs are max-pooled down to it


ROWS = 256  # query rows digested at a time: blocks stay in cache and no pattern-sized temporaries are made


def quantise(p: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 (0..255), the precision the colour map can show anyway."""
    return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)


def pool_max(x: np.ndarray, m: int) -> np.ndarray:
    """Block-max pool the last two axes (square, side n) down to side m (max keeps sharp heads visible).

    Args:
        x: [..., n, n].
        m: output side, <= n.

    Returns:
        [..., m, m] with blocks of ceil(n / m) cells.
    """
    n = x.shape[-1]
    if m >= n:
        return x
    f = -(-n // m)
    if f * m == n:
        xp = x
    else:
        xp = np.zeros(x.shape[:-2] + (f * m, f * m), x.dtype)
        xp[..., :n, :n] = x
    if f > 8:  # big blocks: one reduction over them
        return xp.reshape(*x.shape[:-2], m, f, m, f).max(axis=(-3, -1))
    cols = xp[..., 0::f].copy()  # small blocks: f strided maxima per axis (a reduction over tiny axes is slow)
    for j in range(1, f):
        np.maximum(cols, xp[..., j::f], out=cols)
    out = cols[..., 0::f, :].copy()
    for j in range(1, f):
        np.maximum(out, cols[..., j::f, :], out=out)
    return out


def head_stats(p: np.ndarray) -> np.ndarray:
    """Per-head mean entropy over queries (nats) and max probability.

    Args:
        p: float patterns [head, q, k].

    Returns:
        [head, 2] float64: (mean entropy, max).
    """
    return np.stack([digest(h)[1:] for h in p])


def digest(p: Any) -> tuple[np.ndarray, float, float]:
    """One head's pattern, quantised, with its mean entropy over queries and its max, in one pass of row blocks.

    Args:
        p: probabilities [q, k] (array or tensor; float32 is used as is, without a copy).

    Returns:
        (`quantise(p)` uint8 [q, k], mean entropy in nats (summed in float64), max probability).
    """
    t = torch.as_tensor(np.asarray(p, dtype=np.float32))
    out = np.empty(t.shape, dtype=np.uint8)
    ent, mx = 0.0, 0.0
    for r in range(0, t.shape[0], ROWS):
        block = t[r : r + ROWS]
        ent += float(torch.special.entr(block).sum(dtype=torch.float64))  # -p log p, 0 at p = 0
        mx = max(mx, float(block.max()))
        out[r : r + ROWS] = quantise(block.numpy())
    return out, ent / max(1, t.shape[0]), mx


def _select(values: int | Sequence[int] | None, total: int, what: str) -> list[int]:
    if values is None:
        return list(range(total))
    items = [values] if isinstance(values, (int, np.integer)) else list(values)
    bad = [v for v in items if not isinstance(v, (int, np.integer)) or not 0 <= v < total]
    if not items or bad:
        raise ValueError(f"{what} must be indices in 0..{total - 1}, got {values!r}")
    return [int(v) for v in items]


class AttentionView(VizWidget):
    """Attention patterns: a layers x heads thumbnail grid and a large pattern for the selected head.

    Hovering or clicking a token highlights what it attends to (blue) and what attends to it (orange).
    Live, the browser asks the kernel for the head it shows, so 1,000+ token inputs stay responsive.

    Args:
        tokens: display strings of one prompt, or one list per prompt.
        patterns: probabilities `[layer, head, q, k]` of one prompt (array, tensor or a per-layer sequence of
            `[head, q, k]`), or one of those per prompt.
        layers: layer indices to show (default all).
        heads: head indices to show (default all).

    `AttentionView(model, text_or_tokens, ...)` is shorthand for `AttentionView.from_model(...)`.

    Example:
        >>> AttentionView.from_model(model, ["The cat sat on the mat", "1 2 3 4 1 2 3 4"], layers=[0, 1])
    """

    _entry = "attention.js"
    _state_keys = ("prompts", "layers", "heads", "prompt", "layer", "head", "title")

    prompts = t.List(t.Dict()).tag(sync=True)  # [{"tokens": [str, ...]}]
    layers = t.List(t.Int()).tag(sync=True)
    heads = t.List(t.Int()).tag(sync=True)
    prompt = t.Int(0).tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    head = t.Int(0).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Any,
        patterns: Any,
        layers: int | Sequence[int] | None = None,
        heads: int | Sequence[int] | None = None,
        title: str = "",
    ) -> None:
        if is_model(tokens):
            tokens, patterns = _model_data(tokens, patterns)
        token_lists = per_prompt_tokens(tokens)
        per_prompt = [patterns] if len(token_lists) == 1 and _ndim(patterns) == 4 else list(patterns)
        if len(per_prompt) != len(token_lists):
            raise ValueError(f"{len(token_lists)} prompts of tokens but {len(per_prompt)} sets of patterns")
        self._init_from([[as_array(a) for a in p] for p in per_prompt], token_lists, layers, heads, title)

    @classmethod
    def from_model(cls, model: Any, text_or_tokens: Any, **kwargs: Any) -> "AttentionView":
        """The patterns of `model` on each prompt, from `analysis.attention_patterns` (under active hooks).

        Args:
            model: a workbench model with `.tokenizer` (e.g. `workbench.load("demo")`).
            text_or_tokens: a string, several strings, or token ids (`[pos]` or `[batch, pos]`).
            **kwargs: `layers`, `heads`, `title`.
        """
        return cls(*_model_data(model, text_or_tokens), **kwargs)

    @classmethod
    def from_cache(
        cls,
        cache: Any,
        tokens: Sequence[str] | Sequence[Sequence[str]],
        layers: int | Sequence[int] | None = None,
        heads: int | Sequence[int] | None = None,
        title: str = "",
    ) -> "AttentionView":
        """Build the view from patterns already computed.

        Args:
            cache: an ActivationCache (`cache["pattern", L]` -> [batch, head, q, k]), or a sequence over layers
                of arrays/tensors shaped [batch, head, q, k] or [head, q, k] (e.g. transformers' `out.attentions`).
            tokens: display strings, one list per batch row (a single list for one prompt).

        Returns:
            An AttentionView.
        """
        per_layer = _layers_of(cache)
        tok_lists = per_prompt_tokens(tokens)
        batch = per_layer[0].shape[0]
        if len(tok_lists) != batch:
            raise ValueError(f"tokens has {len(tok_lists)} prompts but the patterns have batch size {batch}")
        patterns = []
        for b, toks in enumerate(tok_lists):
            n = per_layer[0].shape[-1]
            if len(toks) > n or per_layer[0].shape[-2] != n:
                raise ValueError(f"prompt {b}: {len(toks)} tokens but patterns are {per_layer[0].shape[-2:]} (square, >= tokens)")
            # left/right padding: keep the last len(toks) positions when the row is padded on the left
            k = len(toks)
            patterns.append([a[b, :, n - k :, n - k :] if n != k else a[b] for a in per_layer])
        return cls(tok_lists, patterns, layers, heads, title)

    def _init_from(self, patterns: list[list[np.ndarray]], tokens: list[list[str]], layers: Any, heads: Any, title: str) -> None:
        n_layers, n_heads = len(patterns[0]), patterns[0][0].shape[0]
        lsel = _select(layers, n_layers, "layers")
        hsel = _select(heads, n_heads, "heads")
        self._q: list[np.ndarray] = []  # per prompt: uint8 [L_sel, H_sel, n, n]
        self._stats: list[np.ndarray] = []  # per prompt: [L_sel, H_sel, 2]
        self._thumbs: list[np.ndarray] = []  # per prompt: uint8 [L_sel, H_sel, t, t]
        for per_layer in patterns:
            n = per_layer[lsel[0]].shape[-1]
            q, stats = np.empty((len(lsel), len(hsel), n, n), np.uint8), np.empty((len(lsel), len(hsel), 2))
            for i, layer in enumerate(lsel):
                for j, head in enumerate(hsel):
                    q[i, j], ent, mx = digest(per_layer[layer][head])
                    stats[i, j] = ent, mx
            self._q.append(q)
            self._stats.append(stats)
            self._thumbs.append(np.stack([pool_max(ql, THUMB) for ql in q]))
        super().__init__(
            prompts=[{"tokens": list(tk)} for tk in tokens], layers=lsel, heads=hsel,
            layer=lsel[0], head=hsel[0], prompt=0, title=title,
        )  # fmt: skip

    # ---- requests
    def _index(self, request: dict[str, Any]) -> tuple[int, int, int]:
        p = int(request.get("prompt", 0))
        if not 0 <= p < len(self._q):
            raise KeyError(f"prompt {p} out of range 0..{len(self._q) - 1}")
        layer, head = int(request.get("layer", self.layers[0])), int(request.get("head", self.heads[0]))
        if layer not in self.layers or head not in self.heads:
            raise KeyError(f"layer {layer} / head {head} not in this view (layers {self.layers}, heads {self.heads})")
        return p, self.layers.index(layer), self.heads.index(head)

    def _respond(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        what = request.get("what")
        if what == "thumbs":
            p, _, _ = self._index(request)
            th = self._thumbs[p]
            return {"t": th.shape[-1], "layers": self.layers, "heads": self.heads}, [th.tobytes()]
        if what == "head":
            p, li, hi = self._index(request)
            ent, mx = self._stats[p][li, hi]
            meta = {"n": self._q[p].shape[-1], "layer": self.layers[li], "head": self.heads[hi], "entropy": float(ent), "max": float(mx)}
            return meta, [self._q[p][li, hi].tobytes()]
        raise ValueError(f"unknown request {what!r}; expected 'head' or 'thumbs'")

    def pattern(self, prompt: int = 0, layer: int | None = None, head: int | None = None) -> np.ndarray:
        """The quantised pattern the view shows, as probabilities [q, k] (steps of 1/255)."""
        p, li, hi = self._index({"prompt": prompt, "layer": self.layer if layer is None else layer, "head": self.head if head is None else head})
        return self._q[p][li, hi].astype(np.float32) / 255.0

    # ---- standalone page
    def _static_payload(self, max_bytes: int) -> dict[str, Any]:
        """Patterns per (prompt, layer), deflated; thumbnails, then precision, then resolution drop until the budget
        fits (the page notes what was reduced)."""
        thumbs = [pack(th) for th in self._thumbs]
        side = THUMB
        while side > 10 and sum(map(len, thumbs)) > max_bytes // 4:
            side //= 2
            thumbs = [pack(pool_max(th, side)) for th in self._thumbs]
        prompts = [{
            "n": int(q.shape[-1]), "t": int(min(side, q.shape[-1])), "thumbs": thumbs[pi],
            "stats": np.round(self._stats[pi], 6).tolist(), "m": 0, "bits": 0, "layers": [""] * q.shape[0],
        } for pi, q in enumerate(self._q)]  # fmt: skip
        payload = {"layers": self.layers, "heads": self.heads, "prompts": prompts, "notes": []}
        budget = max_bytes - len(json_for_script(payload)) - 200  # 200: the notes
        sizes = [q.size for q in self._q]
        for pd, q, size in zip(prompts, self._q, sizes):
            pd["layers"], pd["bits"], pd["m"] = _encode_within(q, budget * size / sum(sizes))  # split by raw size
        bits, f = min(pd["bits"] for pd in prompts), max(-(-pd["n"] // pd["m"]) for pd in prompts)
        if bits < 8 or f > 1:
            lost = [f"{bits}-bit precision"] * (bits < 8) + [f"1/{f} resolution"] * (f > 1)
            payload["notes"].append(f"patterns stored at {' and '.join(lost)} to fit the page's size budget (max_bytes)")
        return payload


def _model_data(model: Any, text_or_tokens: Any) -> tuple[list[list[str]], list[np.ndarray]]:
    """(tokens per prompt, patterns `[layer, head, q, k]` per prompt) of `model` on each prompt."""
    prompts = as_prompts(model, text_or_tokens)
    patterns = [attention_patterns(model, torch.tensor([p.ids]))[:, 0].cpu().numpy() for p in prompts]
    return [p.tokens for p in prompts], patterns


def _ndim(x: Any) -> int:
    return x.ndim if hasattr(x, "ndim") else 1 + _ndim(x[0]) if isinstance(x, (list, tuple)) and x else 0


def _layers_of(cache: Any) -> list[np.ndarray]:
    """Per-layer numpy patterns [batch, head, q, k] from an ActivationCache or a sequence of arrays."""
    if isinstance(cache, (list, tuple)):
        items = list(cache)
    elif hasattr(cache, "n_layers"):
        items = [cache["pattern", layer] for layer in range(cache.n_layers) if ("pattern", layer) in cache]
    else:
        items = []
    if not items:
        raise TypeError("cache must be an ActivationCache with cache['pattern', L] or a sequence of per-layer arrays")
    out = []
    for a in items:
        arr = as_array(a)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ValueError(f"patterns must be [batch, head, q, k] or [head, q, k], got shape {arr.shape}")
        out.append(arr)
    return out


def _encode_within(q: np.ndarray, budget: float) -> tuple[list[str], int, int]:
    """Deflate per layer at the best (bits, resolution) whose size fits `budget` bytes (else the coarsest).

    Each option's size is first predicted from a sample of rows of one head, so options far over the budget
    cost no full encode.

    Args:
        q: uint8 [L, H, n, n].

    Returns:
        (base64 strings per layer, bits 8 or 4, stored side m).
    """
    n = q.shape[-1]
    options = [(8, n), (4, n)]
    f = 1.0
    while options[-1][1] > 16:
        f *= 2**0.5  # each step about halves the size
        options.append((4, max(16, -(-n // round(f)))))
    options = list(dict.fromkeys(options))
    for bits, side in options:
        last = (bits, side) == options[-1]
        head = pool_max(q[0, :1], side)
        stride = max(1, head.size // 2_000_000)
        predicted = len(_encode_layer(head[:, ::stride], bits, side)) * stride * q.shape[0] * q.shape[1]
        if predicted > budget * 1.1 and not last:
            continue
        encoded = [_encode_layer(q[l], bits, side) for l in range(q.shape[0])]
        if sum(map(len, encoded)) <= budget or last:
            return encoded, bits, side
    raise AssertionError("unreachable")


_TO_4BIT = np.rint(np.arange(256) * 15 / 255).astype(np.uint8)  # uint8 level -> 0..15


def _encode_layer(ql: np.ndarray, bits: int, side: int) -> str:
    """One layer's heads [H, n, n], pooled to `side`, at 8 or 4 bits (two cells a byte), deflated, base64."""
    x = pool_max(ql, side)
    if bits == 4:
        x4 = _TO_4BIT[x].reshape(x.shape[0], -1)
        if x4.shape[1] % 2:
            x4 = np.pad(x4, [(0, 0), (0, 1)])
        x = x4[:, 0::2] | (x4[:, 1::2] << 4)
    return pack(x)
