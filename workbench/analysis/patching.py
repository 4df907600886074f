"""Activation patching and attribution patching, at TransformerLens's granularities.

Activation patching runs the corrupted input once per spot, each time putting back the clean activation at that
spot, and records a metric of the logits: spots where patching restores the clean behaviour carry the
information that differs. A spot is chosen by `by`: the layer, then any of the activation's position, head and
(for attention patterns) source position, e.g. `("layer", "pos", "head")` for head outputs by position or
`("layer", "head", "dest", "src")` for single pattern entries. Attribution patching estimates all of these at
once from one backward pass: `metric(patched) - metric(corrupted) ~ (clean_act - corrupted_act) . d metric / d act`.

`transformer_lens.patching` equivalents (same tensors, same shapes):

    get_act_patch_resid_pre / resid_mid / attn_out / mlp_out   patch(hook=..., by=("layer", "pos"))
    get_act_patch_attn_head_{out,q,k,v}_by_pos                 patch(hook="z"|"q"|"k"|"v", by=("layer", "pos", "head"))
    get_act_patch_attn_head_{out,q,k,v}_all_pos                patch(hook=..., by=("layer", "head"))
    get_act_patch_attn_head_pattern_by_pos                     patch(hook="pattern", by=("layer", "head", "dest"))
    get_act_patch_attn_head_pattern_all_pos                    patch(hook="pattern", by=("layer", "head"))
    get_act_patch_attn_head_pattern_dest_src_pos               patch(hook="pattern", by=("layer", "head", "dest",
                                                                                       "src"))
    get_act_patch_block_every                                  patch_block_every
    get_act_patch_attn_head_{all,by}_pos_every                 patch_heads_every(by_pos=False|True)
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..activation_cache import act_name
from ._common import as_tokens, token_strings

Metric = Callable[[torch.Tensor], "torch.Tensor | float"]
_HEADED = ("q", "k", "v", "rot_q", "rot_k", "z", "result", "attn_in", "q_input", "k_input", "v_input")
_PATTERN = ("pattern", "attn_scores")
_TOKEN_COLUMN = {"pos": "token", "dest": "dest_token", "src": "src_token"}
BLOCK_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")  # TransformerLens's block_every order
HEAD_COMPONENTS = (("out", "z"), ("q", "q"), ("k", "k"), ("v", "v"), ("pattern", "pattern"))  # its *_every order


def _short(hook: str) -> str:
    short = hook.rsplit("hook_", 1)[-1]
    return {"attn": "pattern", "attn_logits": "attn_scores", "mlp_pre": "pre", "mlp_post": "post"}.get(short, short)


def _axis_dims(hook: str) -> dict[str, int]:
    """Axis name -> the activation dimension it indexes, for the axes `hook` has."""
    short = _short(hook)
    if short in _PATTERN:  # [b, head, dest, src]
        return {"pos": 2, "dest": 2, "head": 1, "src": 3}
    return {"pos": 1, "head": 2} if short in _HEADED else {"pos": 1}


def _parse_by(hook: str, by: str | Sequence[str]) -> tuple[tuple[str, ...], list[int]]:
    """Validate `by`; return it as a tuple and the activation dimension of each axis after "layer"."""
    by = (by,) if isinstance(by, str) else tuple(by)
    dims = _axis_dims(hook)
    if not by or by[0] != "layer" or len(set(by)) != len(by):
        raise ValueError(f"by must start with 'layer' and name each axis once, e.g. ('layer', 'pos'), got {by!r}")
    if "head" in by and "head" not in dims:
        raise ValueError(f"{hook!r} has no head dimension; patch by head at one of {_HEADED + _PATTERN}")
    unknown = [a for a in by[1:] if a not in dims]
    if unknown or ("pos" in by and "dest" in by):
        raise ValueError(f"{hook!r} is patched by 'layer' then any of {sorted(dims)} ('dest' = 'pos' for "
                         f"patterns), got {by!r}")
    return by, [dims[a] for a in by[1:]]


def _setup(model, clean, corrupted, hook, by):
    by, dims = _parse_by(hook, by)
    names = [act_name(_short(hook), l) for l in range(model.config.num_hidden_layers)]
    model.resolve_hook_points(names)  # unknown or absent (resid_mid on a parallel model) raise KeyError
    clean_ids, clean_mask = as_tokens(model, clean)
    corr_ids, corr_mask = as_tokens(model, corrupted)
    if clean_ids.shape != corr_ids.shape:
        raise ValueError(f"clean and corrupted must tokenise to the same shape, got {tuple(clean_ids.shape)} "
                         f"and {tuple(corr_ids.shape)}")
    return by, dims, names, (clean_ids, clean_mask), (corr_ids, corr_mask)


def _frame(by: Sequence[str], values: torch.Tensor, clean_ids: torch.Tensor, model: Any, value_name: str
           ) -> pd.DataFrame:
    """Tidy frame: one row per spot (columns `by`, a token column per position axis, `value_name`)."""
    rows = list(itertools.product(*(range(n) for n in values.shape)))
    frame = pd.DataFrame(rows, columns=list(by))
    strs = token_strings(model, clean_ids[0])
    for axis in by[1:]:
        if axis in _TOKEN_COLUMN:
            frame[_TOKEN_COLUMN[axis]] = [strs[i] for i in frame[axis]]
    frame[value_name] = values.flatten().tolist()
    return frame


def _baselines(frame: pd.DataFrame, metric: Metric, clean_logits: torch.Tensor, corrupted_logits: torch.Tensor) -> None:
    frame.attrs.update(clean_metric=float(metric(clean_logits)), corrupted_metric=float(metric(corrupted_logits)))


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
            `mlp_out`, `z`, `q`, `k`, `v`, `result`, `pattern`, `attn_scores`, `pre`, `post`, or the split
            inputs `attn_in`, `q_input`, `k_input`, `v_input`, `mlp_in`).
        by: "layer" then the axes that pick one spot, in the order of the result's dimensions: "pos" (for
            patterns: the query position, also called "dest"), "head", "src" (patterns: the key position).
            ("layer", "pos"): one position at a time; ("layer", "head"): one head at every position;
            ("layer", "pos", "head"): one head at one position; "layer": the whole activation of the layer.

    Returns:
        metric values `[layers, *sizes of the axes of by]` (TransformerLens's shapes, see the module docstring)
        and a tidy frame (the `by` columns, `token` / `dest_token` / `src_token` for position axes, `metric`);
        `frame.attrs` holds `clean_metric` and `corrupted_metric`.
    """
    by, dims, names, (c_ids, c_mask), (x_ids, x_mask) = _setup(model, clean, corrupted, hook, by)
    clean_logits, cache = model.run_with_cache(c_ids, names_filter=names, attention_mask=c_mask)
    corrupted_logits = model(input_ids=x_ids, attention_mask=x_mask, use_cache=False).logits
    sizes = [cache[names[0]].shape[d] for d in dims]
    out = torch.zeros(len(names), *sizes)
    bar = tqdm(total=out.numel(), desc=f"patching {hook}", disable=not progress)
    for l, name in enumerate(names):
        clean_act = cache[name]
        for spot in itertools.product(*(range(n) for n in sizes)):
            sel = [slice(None)] * clean_act.dim()
            for d, i in zip(dims, spot):
                sel[d] = i

            def put_back(act: torch.Tensor, point, sel=tuple(sel), clean_act=clean_act) -> torch.Tensor:
                act = act.clone()
                act[sel] = clean_act[sel]
                return act

            logits = model.run_with_hooks(x_ids, fwd_hooks=[(name, put_back)], attention_mask=x_mask).logits
            out[(l, *spot)] = float(metric(logits))
            bar.update()
    bar.close()
    frame = _frame(by, out, c_ids, model, "metric")
    _baselines(frame, metric, clean_logits, corrupted_logits)
    return out, frame


def _stack(results: list[tuple[torch.Tensor, pd.DataFrame]], labels: Sequence[str]
           ) -> tuple[torch.Tensor, pd.DataFrame]:
    """Stack per-component sweeps on a leading component axis; frames concatenated with a `component` column."""
    frames = [f.assign(component=label) for (_, f), label in zip(results, labels)]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs = dict(results[0][1].attrs)
    return torch.stack([v for v, _ in results]), frame


def patch_block_every(model: Any, clean: Any, corrupted: Any, metric: Metric, progress: bool = True
                      ) -> tuple[torch.Tensor, pd.DataFrame]:
    """`patch` by (layer, pos) of `resid_pre`, `attn_out` and `mlp_out` (TransformerLens's `get_act_patch_block_every`).

    Returns:
        `[3, layers, pos]` (components in `BLOCK_COMPONENTS` order) and the frames of the three sweeps, concatenated
        with a `component` column.
    """
    results = [patch(model, clean, corrupted, metric, hook, ("layer", "pos"), progress) for hook in BLOCK_COMPONENTS]
    return _stack(results, BLOCK_COMPONENTS)


def patch_heads_every(model: Any, clean: Any, corrupted: Any, metric: Metric, by_pos: bool = False,
                      progress: bool = True) -> tuple[torch.Tensor, pd.DataFrame]:
    """`patch` of every head's output (`z`), q, k, v and pattern (TransformerLens's
    `get_act_patch_attn_head_all_pos_every`, or with `by_pos` `get_act_patch_attn_head_by_pos_every`).

    Returns:
        `[5, layers, heads]` (by_pos: `[5, layers, pos, heads]`, the pattern patched by query position), components
        in `HEAD_COMPONENTS` order (out, q, k, v, pattern), and the concatenated frames (`component` column).
    """
    by = ("layer", "pos", "head") if by_pos else ("layer", "head")
    results = [patch(model, clean, corrupted, metric, hook, by, progress) for _, hook in HEAD_COMPONENTS]
    return _stack(results, [label for label, _ in HEAD_COMPONENTS])


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

    Args: as `patch` (any `by`, e.g. ("layer", "pos", "head") or ("layer", "head", "dest", "src")).

    Returns:
        estimated metric changes in `patch`'s shape, and a frame with column `estimate` (`frame.attrs`:
        `clean_metric`, `corrupted_metric`).
    """
    by, dims, names, (c_ids, c_mask), (x_ids, x_mask) = _setup(model, clean, corrupted, hook, by)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(c_ids, names_filter=names, attention_mask=c_mask)
    corrupted_logits, corr_cache = model.run_with_cache(
        x_ids, names_filter=names, attention_mask=x_mask, incl_bwd=True,
        backward_metric=lambda output: torch.as_tensor(metric(output.logits)))
    rows = []
    for name in names:
        term = (clean_cache[name] - corr_cache[name]) * corr_cache[name + "_grad"]
        rest = [d for d in range(term.dim()) if d not in dims]
        rows.append(term.permute(*dims, *rest).sum(dim=tuple(range(len(dims), term.dim()))))  # by's order
    values = torch.stack(rows).float().cpu()
    frame = _frame(by, values, c_ids, model, "estimate")
    with torch.no_grad():
        _baselines(frame, metric, clean_logits, corrupted_logits)
    return values, frame


def logit_diff_metric(answer: int, wrong: int, pos: int = -1) -> Callable[[torch.Tensor], torch.Tensor]:
    """Metric: mean over the batch of `logits[:, pos, answer] - logits[:, pos, wrong]`."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, pos, answer] - logits[:, pos, wrong]).mean()
    return metric
