"""Sparse-autoencoder features over a corpus: the statistics a feature dashboard shows.

`feature_stats(model, sae, corpus)` streams the corpus through the model in batches of contexts, reading the
SAE's input site with the hook API (`run_with_cache(names_filter=hook, stop_at_layer=...)`: layers past the
site never run), encodes each batch with the SAE and folds it into running summaries per feature: its top-k
contexts (with the feature's activation on a window of tokens around its maximum), a histogram of its non-zero
activations, how often it fires, its maximum and its sum. The activations of the whole corpus are never held.
With `cache_dir` the result is stored on disk, keyed by the model's and the SAE's weights, the corpus and the
settings; the file is written atomically and carries a SHA-256 of its contents, checked on every load.

`feature_logit_effects(model, sae)` gives each feature's direct effect on the logits, `W_dec @ W_U` with
TransformerLens's processed unembedding (final LayerNorm weight folded in, centred), as SAE dashboards
(sae_vis, Neuronpedia) show it. `feature_activations(model, sae, prompts)` gives every feature's activation on
each token of a few prompts.

The SAE is any object with `encode(x [..., d_in]) -> [..., d_sae]`, `W_dec [d_sae, d_in]` and
`cfg.hook_name` (`workbench.sae.SAE`, or SAELens's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..inputs import as_prompts, integer_ids, is_text, require_tokenizer

FORMAT = "workbench-feature-stats-1"
_MAGIC = b"WBFEATS1\n"
_LAYER = re.compile(r"^blocks\.(\d+)\.")


@dataclasses.dataclass
class FeatureStats:
    """Per-feature summaries of an SAE over a corpus of `n_ctx` contexts of up to `ctx_len` tokens.

    Attributes:
        hook_name: the SAE's input site (`blocks.1.hook_resid_post`).
        corpus_ids: the contexts' token ids  # [n_ctx, ctx_len] int32
        top_values: each feature's top-k context maxima, highest first (0 where fewer contexts fire)  # [d_sae, k]
        top_ctx: the context of each (-1 where none)  # [d_sae, k] int32
        top_pos: the position of the maximum in its context  # [d_sae, k] int32
        windows: the feature's activation on tokens `top_pos - before .. top_pos + after` (NaN outside the
            context)  # [d_sae, k, before + 1 + after] float32
        fire_count: tokens where the feature is > 0  # [d_sae] int64
        max_act: its largest activation  # [d_sae]
        sum_act: the sum of its activations  # [d_sae] float64
        hist_counts: counts of its non-zero activations in bins `[i w, (i + 1) w)`  # [d_sae, bins] int64
        hist_width: each feature's bin width `w` (0 for a feature that never fires)  # [d_sae]
        before, after: the window's extent around the top token.
    """

    hook_name: str
    corpus_ids: np.ndarray
    top_values: np.ndarray
    top_ctx: np.ndarray
    top_pos: np.ndarray
    windows: np.ndarray
    fire_count: np.ndarray
    max_act: np.ndarray
    sum_act: np.ndarray
    hist_counts: np.ndarray
    hist_width: np.ndarray
    before: int
    after: int

    @property
    def d_sae(self) -> int:
        return int(self.top_values.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.corpus_ids.size)

    @property
    def density(self) -> np.ndarray:
        """Fraction of corpus tokens on which each feature fires  # [d_sae]"""
        return self.fire_count / max(1, self.n_tokens)

    def window_ids(self, feature: int, j: int) -> np.ndarray:
        """Token ids of the window around the `j`-th top context of `feature` (-1 outside the context)  # [window]"""
        ctx, pos = int(self.top_ctx[feature, j]), int(self.top_pos[feature, j])
        width = self.before + 1 + self.after
        out = np.full(width, -1, dtype=np.int64)
        if ctx < 0:
            return out
        row = self.corpus_ids[ctx]
        lo, hi = pos - self.before, pos + self.after + 1
        a, b = max(lo, 0), min(hi, len(row))
        out[a - lo : b - lo] = row[a:b]
        return out

    def histogram(self, feature: int) -> tuple[np.ndarray, np.ndarray]:
        """(counts `[bins]`, bin edges `[bins + 1]`) of the feature's non-zero activations."""
        counts = self.hist_counts[feature]
        return counts, np.arange(len(counts) + 1) * float(self.hist_width[feature])

    # ---- disk
    def to_bytes(self) -> bytes:
        """The stats as one file: a magic line, the SHA-256 of the rest, then an `.npz` archive."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        meta = {"format": FORMAT, "hook_name": self.hook_name, "before": self.before, "after": self.after}
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        body = buf.getvalue()
        return _MAGIC + hashlib.sha256(body).hexdigest().encode("ascii") + b"\n" + body

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "feature stats") -> "FeatureStats":
        """Parse `to_bytes` output.

        Raises:
            ValueError: not such a file, or its checksum does not match its contents (a torn or edited file).
        """
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 65:
            raise ValueError(f"{source}: not a workbench feature-stats file (bad header)")
        digest, body = data[len(_MAGIC) : len(_MAGIC) + 64].decode("ascii", "replace"), data[len(_MAGIC) + 65 :]
        if hashlib.sha256(body).hexdigest() != digest:
            raise ValueError(f"{source}: checksum mismatch (the file is truncated or corrupted)")
        with np.load(io.BytesIO(body), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{source}: format {meta.get('format')!r}, expected {FORMAT!r}")
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(hook_name=meta["hook_name"], before=int(meta["before"]), after=int(meta["after"]), **arrays)


def sae_hook_name(sae: Any) -> str:
    """The model site an SAE reads (`sae.cfg.hook_name`).

    Raises:
        TypeError: the object has no `cfg.hook_name`.
    """
    name = getattr(getattr(sae, "cfg", None), "hook_name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"expected an SAE with cfg.hook_name (workbench.sae.SAE), got {type(sae).__name__}")
    return name


def stop_layer(model: Any, hook_name: str) -> int | None:
    """The `stop_at_layer` that still runs `hook_name` (None: the site needs the whole model)."""
    model.resolve_hook_points(hook_name)  # an unknown name raises, listing the close ones
    m = _LAYER.match(hook_name)
    n_layers = model.config.num_hidden_layers
    return int(m.group(1)) + 1 if m and int(m.group(1)) + 1 < n_layers else None


@torch.no_grad()
def encode_batch(model: Any, sae: Any, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Every feature's activation on each token of a batch, through the hook API (layers past the site skipped).

    Args:
        ids: token ids  # [batch, pos]
        attention_mask: `[batch, pos]` (1 = token), or None.

    Returns:
        float32 activations on the CPU  # [batch, pos, d_sae]
    """
    hook = sae_hook_name(sae)
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    stop = stop_layer(model, hook)
    if stop is not None:
        kwargs["stop_at_layer"] = stop
    _, cache = model.run_with_cache(ids.to(model.device), names_filter=hook, **kwargs)
    x = cache[hook]  # [batch, pos, d_in] (or [batch, pos, head, d_head] for a hook_z SAE, which flattens it)
    param = next(iter(sae.parameters()), None) if hasattr(sae, "parameters") else None
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    return sae.encode(x).float().cpu()


def corpus_contexts(model: Any, corpus: Any, ctx_len: int = 64, max_contexts: int | None = None) -> torch.Tensor:
    """A corpus as contexts of equal length.

    Args:
        corpus: texts (each tokenised and followed by the end-of-text token, then the stream is cut into
            contexts, as SAE training packs text), or token ids `[n_ctx, ctx_len]` used as they are.
        ctx_len: tokens per context (texts only).
        max_contexts: keep at most this many.

    Returns:
        token ids  # [n_ctx, ctx_len] int64
    """
    if is_text(corpus):
        tok = require_tokenizer(model)
        eos = getattr(model.config, "eos_token_id", None)
        stream: list[int] = []
        for text in [corpus] if isinstance(corpus, str) else corpus:
            stream += list(tok.encode(text)) + ([eos] if eos is not None else [])
            if max_contexts is not None and len(stream) >= max_contexts * ctx_len:
                break  # enough text: the rest is never tokenised
        n = len(stream) // ctx_len
        if n == 0:
            raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one context of ctx_len={ctx_len}")
        ids = torch.tensor(stream[: n * ctx_len]).view(n, ctx_len)
    else:
        ids = integer_ids(corpus)
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(f"corpus token ids must be [n_contexts, ctx_len], got shape {tuple(ids.shape)}")
    return ids if max_contexts is None else ids[:max_contexts]


def feature_stats(
    model: Any,
    sae: Any,
    corpus: Any,
    ctx_len: int = 64,
    max_contexts: int | None = None,
    batch_size: int = 16,
    k: int = 8,
    before: int = 10,
    after: int = 4,
    bins: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> FeatureStats:
    """Top-activating contexts, activation histograms and firing rates of every feature, over a corpus.

    Args:
        model: a workbench model.
        sae: an SAE reading one of the model's hook points (see the module docstring).
        corpus: texts or token ids `[n_ctx, ctx_len]` (see `corpus_contexts`).
        ctx_len, max_contexts: how texts become contexts.
        batch_size: contexts per forward.
        k: top contexts kept per feature (each context once, at its maximum).
        before, after: tokens of the window kept around each top token.
        bins: histogram bins (their width doubles as larger activations arrive).
        cache_dir: where to store / find the result (None: no cache; not used while hooks are attached to the
            model, which its key cannot describe).
        progress: show a tqdm bar.

    Returns:
        FeatureStats.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("k", k, 1), ("before", before, 0), ("after", after, 0), ("bins", bins, 2)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if bins % 2:
        raise ValueError(f"bins must be even (bins merge in pairs as the range doubles), got {bins}")
    hook = sae_hook_name(sae)
    stop_layer(model, hook)
    ids = corpus_contexts(model, corpus, ctx_len, max_contexts)
    path = _cache_path(model, sae, ids, {"k": k, "before": before, "after": after, "bins": bins, "hook": hook}, cache_dir)
    if path is not None and path.is_file():
        try:
            return FeatureStats.from_bytes(path.read_bytes(), str(path))
        except ValueError as err:
            warnings.warn(f"{err}; recomputing it", stacklevel=2)
    acc = _Accumulator(int(sae.W_dec.shape[0]), k, before, after, bins)
    batches = range(0, ids.shape[0], batch_size)
    for start in tqdm(batches, desc="features", unit="batch", disable=not progress, dynamic_ncols=True):
        acc.add(encode_batch(model, sae, ids[start : start + batch_size]), start)
    stats = acc.result(hook, ids)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, stats.to_bytes())
    return stats


class _Accumulator:
    """Running per-feature summaries, one batch of activations `[b, p, d_sae]` at a time."""

    def __init__(self, d_sae: int, k: int, before: int, after: int, bins: int) -> None:
        self.k, self.before, self.after, self.bins = k, before, after, bins
        w = before + 1 + after
        self.values = torch.zeros(0, d_sae)  # [<=k, F] context maxima, best first
        self.ctx = torch.zeros(0, d_sae, dtype=torch.long)
        self.pos = torch.zeros(0, d_sae, dtype=torch.long)
        self.win = torch.zeros(0, d_sae, w)
        self.count = torch.zeros(d_sae, dtype=torch.long)
        self.max = torch.zeros(d_sae)
        self.sum = torch.zeros(d_sae, dtype=torch.float64)
        self.hist = torch.zeros(d_sae, bins, dtype=torch.long)
        self.width = torch.zeros(d_sae)

    def add(self, acts: torch.Tensor, first_ctx: int) -> None:
        b, p, f = acts.shape
        ctx_max, ctx_arg = acts.max(dim=1)  # [b, F]
        n = min(self.k, b)
        best, rows = ctx_max.topk(n, dim=0)  # [n, F]: this batch's best contexts
        pos = ctx_arg.gather(0, rows)
        padded = torch.nn.functional.pad(acts, (0, 0, self.before, self.after), value=float("nan"))
        offsets = torch.arange(self.before + 1 + self.after)
        win = padded[rows[..., None], pos[..., None] + offsets, torch.arange(f)[None, :, None]]  # [n, F, w]
        values = torch.cat([self.values, best])
        order = values.topk(min(self.k, values.shape[0]), dim=0).indices  # [k, F]
        self.values = values.gather(0, order)
        self.ctx = torch.cat([self.ctx, rows + first_ctx]).gather(0, order)
        self.pos = torch.cat([self.pos, pos]).gather(0, order)
        self.win = torch.cat([self.win, win]).gather(0, order[..., None].expand(-1, -1, win.shape[-1]))
        flat = acts.reshape(-1, f)
        tok, feat = (flat > 0).nonzero(as_tuple=True)  # activations are sparse: reduce over the firing ones only
        vals = flat[tok, feat]
        self.count += torch.bincount(feat, minlength=f)
        self.sum.index_add_(0, feat, vals.double())
        self.max.scatter_reduce_(0, feat, vals, reduce="amax")
        self._histogram(feat, vals)

    def _histogram(self, feat: torch.Tensor, vals: torch.Tensor) -> None:
        """Add a batch's non-zero values `vals` of features `feat`, first doubling the bins of features whose range
        they exceed."""
        new = (self.width == 0) & (self.max > 0)
        self.width[new] = self.max[new] * (1 + 1e-6) / self.bins  # first firing: the range just covers the max
        while True:
            grow = self.max >= self.width * self.bins
            grow &= self.width > 0
            if not bool(grow.any()):
                break
            merged = self.hist[grow].view(-1, self.bins // 2, 2).sum(-1)  # [i w, (i+1) w) pairs -> [j 2w, (j+1) 2w)
            self.hist[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
            self.width[grow] *= 2
        b = torch.floor(vals / self.width[feat]).long().clamp_(0, self.bins - 1)
        self.hist.view(-1).index_add_(0, feat * self.bins + b, torch.ones_like(b))

    def result(self, hook: str, ids: torch.Tensor) -> FeatureStats:
        dead = self.values <= 0  # a context where the feature never fired is no example of it
        ctx = torch.where(dead, -1, self.ctx)
        return FeatureStats(
            hook_name=hook, corpus_ids=ids.numpy().astype(np.int32),
            top_values=torch.where(dead, 0.0, self.values).T.numpy().copy(),
            top_ctx=ctx.T.numpy().astype(np.int32), top_pos=torch.where(dead, 0, self.pos).T.numpy().astype(np.int32),
            windows=self.win.permute(1, 0, 2).numpy().copy(), fire_count=self.count.numpy().copy(),
            max_act=self.max.numpy().copy(), sum_act=self.sum.numpy().copy(), hist_counts=self.hist.numpy().copy(),
            hist_width=self.width.numpy().copy(), before=self.before, after=self.after,
        )  # fmt: skip


def _cache_path(model: Any, sae: Any, ids: torch.Tensor, settings: dict, cache_dir: str | Path | None) -> Path | None:
    """Where `feature_stats` keeps this result (None: no cache, or hooks attached that the key cannot describe)."""
    if cache_dir is None:
        return None
    if any(point._forward_hooks for point in model.hook_dict.values()):
        warnings.warn("hooks are attached to the model (model.hooks / model.saes / add_hook): the feature cache is "
                      "not used, as its key cannot describe them", stacklevel=3)
        return None
    return Path(cache_dir) / f"features-{_cache_key(model, sae, ids, settings)[:24]}.wbfeats"


def _cache_key(model: Any, sae: Any, ids: torch.Tensor, settings: dict) -> str:
    """SHA-256 over the format, settings, corpus ids and both modules' weights (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(json.dumps([FORMAT, settings], sort_keys=True).encode())
    h.update(ids.numpy().astype(np.int64).tobytes())
    for module in (model, sae):
        state = module.state_dict() if hasattr(module, "state_dict") else {"W_dec": sae.W_dec}
        for name, tensor in state.items():
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def feature_logit_effects(model: Any, sae: Any, features: slice | None = None) -> torch.Tensor:
    """Each feature's direct effect on the logits: its decoder direction through the final LayerNorm's weight and
    the unembedding, `W_dec @ W_U` with TransformerLens's processed `W_U` (`fold_ln`, `center_unembed`).

    Args:
        model: a workbench causal LM.
        sae: an SAE on a residual-stream site (`d_in == d_model`).
        features: a slice of the features (default all).

    Returns:
        float32 logit effects  # [d_sae, d_vocab]

    Raises:
        ValueError: the SAE's `d_in` is not the model's `d_model` (its features do not live in the residual stream).
    """
    w_dec = sae.W_dec.detach()[features or slice(None)].double().cpu()  # [f, d_in]
    d_model = model.config.hidden_size
    if w_dec.shape[-1] != d_model:
        raise ValueError(f"logit effects need an SAE on the residual stream (d_in = d_model = {d_model}); "
                         f"this one has d_in = {w_dec.shape[-1]} ({sae_hook_name(sae)})")
    ln_w = model.base_model.final_layer_norm.weight.detach().double().cpu()  # [d_model]
    w_u = model.embed_out.weight.detach().double().cpu().T  # [d_model, vocab]
    centred = w_dec - w_dec.mean(-1, keepdim=True)  # the LayerNorm removes the mean over d_model
    effects = (centred * ln_w) @ w_u  # [f, vocab]
    return (effects - effects.mean(-1, keepdim=True)).float()  # center_unembed: a constant per feature


def top_logit_effects(model: Any, sae: Any, n: int = 10, chunk: int = 1024
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The `n` tokens each feature boosts most and suppresses most (`feature_logit_effects`), `chunk` features
    at a time (the full `[d_sae, vocab]` matrix of a large SAE would not fit in memory).

    Returns:
        (boosted ids, their effects, suppressed ids, their effects), each `[d_sae, n]`, strongest first.
    """
    parts = []
    for a in range(0, int(sae.W_dec.shape[0]), chunk):
        effects = feature_logit_effects(model, sae, slice(a, a + chunk))
        m = min(n, effects.shape[-1])
        up, down = effects.topk(m, dim=-1), (-effects).topk(m, dim=-1)
        parts.append((up.indices, up.values, down.indices, -down.values))
    return tuple(torch.cat(x) for x in zip(*parts))  # type: ignore[return-value]


def feature_activations(model: Any, sae: Any, prompts: Any) -> tuple[list[list[int]], list[np.ndarray]]:
    """Every feature's activation on each token of each prompt (one forward per prompt, unpadded).

    Args:
        prompts: a text, texts or token ids (`workbench.inputs.as_prompts`).

    Returns:
        (token ids per prompt, float32 activations `[pos, d_sae]` per prompt).
    """
    items = as_prompts(model, prompts)
    acts = [encode_batch(model, sae, torch.tensor([p.ids]))[0].numpy() for p in items]
    return [p.ids for p in items], acts


def active_features(acts: np.ndarray, n: int = 12) -> list[list[tuple[int, float]]]:
    """Per token, its `n` most active features (activation > 0), strongest first.

    Args:
        acts: activations  # [pos, d_sae]

    Returns:
        one list of (feature, activation) per position.
    """
    n = min(n, acts.shape[-1])
    top = np.argsort(-acts, axis=-1, kind="stable")[:, :n]
    return [[(int(f), float(row[f])) for f in order if row[f] > 0] for row, order in zip(acts, top)]
