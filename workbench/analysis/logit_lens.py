"""Logit lens: read the residual stream before every layer through the final LayerNorm and the unembedding."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ._common import token_id, token_strings
from .residual import lens_log_probs, residual_stack


def lens_logits(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens's logits `unembed(ln_final(resid))`, differentiable (a tuned lens trains through it).

    Each residual is normalised with its own statistics, as `lens_log_probs` does (which is its no-grad,
    float32 `log_softmax`).

    Args:
        model: a workbench causal LM (its `final_layer_norm` and `embed_out` are used as they are).
        resid: `[..., d]` residual streams.

    Returns:
        logits `[..., v]` in the model's dtype.
    """
    ln = model.base_model.final_layer_norm
    normed = torch.nn.functional.layer_norm(resid.to(ln.weight.dtype), ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    return model.embed_out(normed)


@torch.no_grad()
def logit_lens(
    model: Any,
    inputs: Any,
    target: int | str | torch.Tensor | None = None,
    top_k: int = 5,
    batch_index: int = 0,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """What the model would predict if it stopped before each layer.

    Each accumulated residual (`resid_pre` of every layer, then the final `resid_post`) goes through
    `ln_final` (with the scale it would have computed for that residual) and the unembedding; the last row is
    the model's real prediction.

    Args:
        model: a causal LM.
        inputs: one text or ids `[1, p]` (with a batch, `batch_index` picks the row reported in the frame).
        target: the token whose probability and rank to follow: an id or single-token string for every
            position, ids `[p]` per position, or None for each position's actual next token (the last
            position then has none).
        top_k: how many top tokens per layer and position.

    Returns:
        log-probabilities `[layers + 1, b, p, v]`, and a frame with one row per (layer, position, rank):
        `layer, label, pos, token, rank, top_token, top_id, top_prob` and, with a target,
        `target, target_prob, target_rank` (rank 0 = the top token).
    """
    resid, labels, ids, _ = residual_stack(model, inputs)  # [l + 1, b, p, d]
    log_probs = lens_log_probs(model, resid)  # [l + 1, b, p, v]

    row = log_probs[:, batch_index]  # [l + 1, p, v]
    p = ids.shape[1]
    if target is None:
        targets = torch.cat([ids[batch_index, 1:], ids.new_full((1,), -1)])
    elif torch.is_tensor(target) and target.dim() == 1:
        if target.shape[0] != p:
            raise ValueError(f"a per-position target needs {p} ids, got {target.shape[0]}")
        targets = target.to(ids.device)
    else:
        targets = ids.new_full((p,), token_id(model, target))
    top = row.topk(top_k, dim=-1)
    has_target = targets >= 0
    safe = targets.clamp(min=0)
    target_lp = row.gather(-1, safe.view(1, p, 1).expand(row.shape[0], p, 1)).squeeze(-1)  # [l + 1, p]
    target_rank = (row > target_lp[..., None]).sum(-1)

    strs = token_strings(model, ids[batch_index])
    top_strs = token_strings(model, top.indices.flatten())
    records = []
    for li, label in enumerate(labels):
        for pos in range(p):
            for k in range(top_k):
                flat = (li * p + pos) * top_k + k
                rec = {"layer": li, "label": label, "pos": pos, "token": strs[pos], "rank": k,
                       "top_token": top_strs[flat], "top_id": int(top.indices[li, pos, k]),
                       "top_prob": float(top.values[li, pos, k].exp())}
                if bool(has_target[pos]):
                    rec.update(target=int(targets[pos]), target_prob=float(target_lp[li, pos].exp()),
                               target_rank=int(target_rank[li, pos]))
                records.append(rec)
    return log_probs, pd.DataFrame.from_records(records)
