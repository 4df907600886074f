"""Activation patching and attribution patching.

Activation patching runs the corrupted input once per (layer, position | head), each time putting back the
clean activation at that spot, and records a metric of the logits: spots where patching restores the clean
behaviour carry the information that differs. Attribution patching estimates all of these at once from one
backward pass: `metric(patched) - metric(corrupted) ~ (clean_act - corrupted_act) . d metric / d act`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..activation_cache import act_name
from ._common import as_tokens, token_strings

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]
_HEADED = ("q", "k", "v", "rot_q", "rot_k", "z", "result")
_PATTERN = ("pattern", "attn_scores")
_BY = {("layer", "pos"), ("layer", "head"), ("layer",)}


def _short(hook: str) -> str:
    short = hook.rsplit("hook_", 1)[-1]
    return {"attn": "pattern", "attn_logits": "attn_scores", "mlp_pre": "pre", "mlp_post": "post"}.get(short, short)


def _dims(hook: str) -> tuple[int, int | None]:
    """(position dim, head dim or None) of a hook's activation."""
    short = _short(hook)
    if short in _PATTERN:
        return 2, 1
    return 1, (2 if short in _HEADED else None)


def _setup(model, clean, corrupted, hook, by):
    by = (by,) if isinstance(by, str) else tuple(by)
    if by not in _BY:
        raise ValueError(f"by must be ('layer', 'pos'), ('layer', 'head') or 'layer', got {by!r}")
    names = [act_name(_short(hook), l) for l in range(model.config.num_hidden_layers)]
    model.resolve_hook_points(names)  # unknown or absent (resid_mid on a parallel model) raise KeyError
    pos_dim, head_dim = _dims(hook)
    if "head" in by and head_dim is None:
        raise ValueError(f"{hook!r} has no head dimension; patch by head at one of {_HEADED + _PATTERN}")
    clean_ids, clean_mask = as_tokens(model, clean)
    corr_ids, corr_mask = as_tokens(model, corrupted)
    if clean_ids.shape != corr_ids.shape:
        raise ValueError(f"clean and corrupted must tokenise to the same shape, got {tuple(clean_ids.shape)} "
                         f"and {tuple(corr_ids.shape)}")
    return by, names, pos_dim, head_dim, (clean_ids, clean_mask), (corr_ids, corr_mask)


def _index(by, index, act_dim, pos_dim, head_dim):
    """Indexing tuple selecting spot `index` (pos or head) of an activation, or everything for by=layer."""
    sel = [slice(None)] * act_dim
    if by == ("layer", "pos"):
        sel[pos_dim] = index
    elif by == ("layer", "head"):
        sel[head_dim] = index
    return tuple(sel)


def _frame(by, values, clean_ids, model, value_name):
    layers = values.shape[0]
    if by == ("layer",):
        return pd.DataFrame({"layer": list(range(layers)), value_name: values.tolist()})
    inner = values.shape[1]
    frame = pd.DataFrame({"layer": torch.arange(layers).repeat_interleave(inner).tolist(),
                          by[1]: torch.arange(inner).repeat(layers).tolist(),
                          value_name: values.flatten().tolist()})
    if by[1] == "pos":
        frame["token"] = token_strings(model, clean_ids[0]) * layers
    return frame


@torch.no_grad()
def patch(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    hook: str = "resid_pre",
    by: str | Sequence[str] = ("layer", "pos"),
    progress: bool = True,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Activation patching: the metric of the corrupted run with one clean activation put back.

    Args:
        model: a causal LM.
        clean, corrupted: texts or ids of the same shape `[b, p]`.
        metric: logits `[b, p, v]` -> scalar (e.g. a logit difference).
        hook: which activation of each layer (`resid_pre`, `resid_mid`, `resid_post`, `attn_out`,
            `mlp_out`, `z`, `q`, `k`, `v`, `result`, `pattern`, `attn_scores`, `pre`, `post`).
        by: ("layer", "pos"): one position of one layer at a time (for patterns: one query position);
            ("layer", "head"): one head at every position; "layer": the whole activation of the layer.

    Returns:
        metric values `[layers, pos]`, `[layers, heads]` or `[layers]`, and a tidy frame (`layer`, `pos`
        with `token` or `head`, `metric`); `frame.attrs` holds `clean_metric` and `corrupted_metric`.
    """
    by, names, pos_dim, head_dim, (c_ids, c_mask), (x_ids, x_mask) = _setup(model, clean, corrupted, hook, by)
    clean_logits, cache = model.run_with_cache(c_ids, names_filter=names, attention_mask=c_mask)
    corrupted_logits = model(input_ids=x_ids, attention_mask=x_mask, use_cache=False).logits
    sample = cache[names[0]]
    inner = {("layer", "pos"): sample.shape[pos_dim], ("layer", "head"): sample.shape[head_dim or 0],
             ("layer",): 1}[by]
    out = torch.zeros(len(names), inner)
    for l, name in enumerate(tqdm(names, desc=f"patching {hook}", disable=not progress)):
        clean_act = cache[name]
        for i in range(inner):
            sel = _index(by, i, clean_act.dim(), pos_dim, head_dim)

            def put_back(act: torch.Tensor, point, sel=sel, clean_act=clean_act) -> torch.Tensor:
                act = act.clone()
                act[sel] = clean_act[sel]
                return act

            logits = model.run_with_hooks(x_ids, fwd_hooks=[(name, put_back)], attention_mask=x_mask).logits
            out[l, i] = float(metric(logits))
    values = out[:, 0] if by == ("layer",) else out
    frame = _frame(by, values, c_ids, model, "metric")
    frame.attrs.update(clean_metric=float(metric(clean_logits)), corrupted_metric=float(metric(corrupted_logits)))
    return values, frame


def attribution_patch(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    hook: str = "resid_pre",
    by: str | Sequence[str] = ("layer", "pos"),
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Attribution patching: the first-order estimate of `patch(...) - corrupted_metric`, from one forward and
    backward pass on the corrupted input and one forward on the clean one.

    Args: as `patch`.

    Returns:
        estimated metric changes `[layers, pos]`, `[layers, heads]` or `[layers]`, and a frame with column
        `estimate` (`frame.attrs`: `clean_metric`, `corrupted_metric`).
    """
    by, names, pos_dim, head_dim, (c_ids, c_mask), (x_ids, x_mask) = _setup(model, clean, corrupted, hook, by)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(c_ids, names_filter=names, attention_mask=c_mask)
    corrupted_logits, corr_cache = model.run_with_cache(
        x_ids, names_filter=names, attention_mask=x_mask, incl_bwd=True,
        backward_metric=lambda output: torch.as_tensor(metric(output.logits)))
    rows = []
    for name in names:
        term = (clean_cache[name] - corr_cache[name]) * corr_cache[name + "_grad"]
        keep = {("layer", "pos"): [pos_dim], ("layer", "head"): [head_dim], ("layer",): []}[by]
        rows.append(term.sum(dim=[d for d in range(term.dim()) if d not in keep]))
    values = torch.stack(rows).float().cpu()
    frame = _frame(by, values, c_ids, model, "estimate")
    with torch.no_grad():
        frame.attrs.update(clean_metric=float(metric(clean_logits)), corrupted_metric=float(metric(corrupted_logits)))
    return values, frame


def logit_diff_metric(answer: int, wrong: int, pos: int = -1) -> Callable[[torch.Tensor], torch.Tensor]:
    """Metric: mean over the batch of `logits[:, pos, answer] - logits[:, pos, wrong]`."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, pos, answer] - logits[:, pos, wrong]).mean()
    return metric
