"""Direct logit attribution: how much each head, MLP and the embedding writes straight into a logit.

With the final LayerNorm's scale fixed at its value in this run, the logit is linear in the residual
stream, which is the sum of the embedding, every head's output, every attention output bias and every MLP
output. Each piece's attribution is `LN(piece) . (W_U[answer] - W_U[wrong])`; together with the final
LayerNorm's bias they add up to the logit (difference) the model produced.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import torch

from ._common import as_tokens, last_positions, token_ids


@torch.no_grad()
def direct_logit_attribution(
    model: Any,
    inputs: Any,
    answer: int | str | Sequence | torch.Tensor,
    wrong: int | str | Sequence | torch.Tensor | None = None,
    pos: int | None = None,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Attribute the logit of `answer` (or the logit difference `answer - wrong`) at one position.

    Args:
        model: a causal LM.
        inputs: text(s) or ids `[b, p]`.
        answer, wrong: one token for every row (id or single-token string) or one per row.
        pos: the position read (default: each row's last real token).

    Returns:
        attributions `[c, b]` and a frame with one row per (batch, component): `batch, component, kind`
        (`embed`, `head`, `attn_bias`, `mlp`, `ln_final_bias`), `layer, head, attribution`. Components
        sum to the model's logit (difference) at that position.
    """
    ids, mask = as_tokens(model, inputs)
    b = ids.shape[0]
    answer_ids = token_ids(model, answer, b)
    wrong_ids = token_ids(model, wrong, b) if wrong is not None else None
    n_layers = model.config.num_hidden_layers
    wanted = ("hook_embed", "attn.hook_z", "hook_mlp_out", "ln_final.hook_scale")
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(wanted), attention_mask=mask)
    at = last_positions(ids, mask) if pos is None else torch.full((b,), pos % ids.shape[1], device=ids.device)
    rows = torch.arange(b, device=ids.device)

    parts, labels = [cache["hook_embed"][rows, at][None]], [("embed", "embed", None, None)]
    for l in range(n_layers):
        heads = cache.head_results(l)[rows, at]  # [b, h, d]
        parts.append(heads.transpose(0, 1))
        labels += [(f"L{l}H{h}", "head", l, h) for h in range(heads.shape[1])]
        bias = model.base_model.layers[l].attention.dense.bias
        if bias is not None:
            parts.append(bias.detach().expand(1, b, -1))
            labels.append((f"L{l}_attn_bias", "attn_bias", l, None))
        parts.append(cache["mlp_out", l][rows, at][None])
        labels.append((f"L{l}_mlp_out", "mlp", l, None))
    stack = torch.cat(parts)  # [c, b, d]
    ln = model.base_model.final_layer_norm
    scale = cache["ln_final.hook_scale"][rows, at]  # [b, 1]
    normed = (stack - stack.mean(-1, keepdim=True)) / scale * ln.weight
    stack = torch.cat([normed, ln.bias.detach().expand(1, b, -1)])
    labels.append(("ln_final_bias", "ln_final_bias", None, None))

    attrs = cache.project_to_logits(stack, answer_ids, wrong_ids)  # [c, b]
    records = [{"batch": i, "component": name, "kind": kind, "layer": layer, "head": head,
                "attribution": float(attrs[c, i])}
               for i in range(b) for c, (name, kind, layer, head) in enumerate(labels)]
    frame = pd.DataFrame.from_records(records)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["head"] = frame["head"].astype("Int64")
    return attrs, frame


@torch.no_grad()
def component_logit_attribution(
    model: Any,
    inputs: Any,
    tokens: int | str | torch.Tensor | None = None,
    wrong: int | str | torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """What the embedding and each layer's attention and MLP output write straight into a logit, everywhere.

    Args:
        model: a causal LM (active `model.hooks(...)` apply: this reads `run_with_cache`).
        inputs: text(s) or ids `[b, p]`.
        tokens: the logit read: None for each position's actual next token (the last position, which has
            none, gets NaN), an id or single-token string for every position, or ids `[b, p]`.
        wrong: optionally the same for a token whose logit is subtracted.

    Returns:
        attributions `[c, b, p]` with labels (`embed`, `0_attn_out`, `0_mlp_out`, ...), and the final LayerNorm
        bias's term `[b, p]`: components plus that term are the model's logit (difference).
    """
    ids, mask = as_tokens(model, inputs)
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(COMPONENT_SITES), attention_mask=mask)
    return cache_logit_attribution(cache, ids, tokens, wrong)


#: The hook sites `cache_logit_attribution` reads.
COMPONENT_SITES = ("hook_embed", "hook_attn_out", "hook_mlp_out", "ln_final.hook_scale")


def cache_logit_attribution(
    cache: Any, ids: torch.Tensor, tokens: Any = None, wrong: Any = None
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """`component_logit_attribution` from a cache holding `COMPONENT_SITES` of a run on `ids` `[b, p]`."""
    stack, labels = cache.decompose_resid(return_labels=True)  # [c, b, p, d]
    targets = torch.cat([ids[:, 1:], ids[:, -1:]], dim=1) if tokens is None else tokens
    attrs = cache.logit_attrs(stack, targets, wrong).float()  # [c, b, p]
    bias = cache.model.base_model.final_layer_norm.bias.detach().expand_as(stack[0])
    bias_term = cache.project_to_logits(bias[None], targets, wrong)[0].float()  # [b, p]
    if tokens is None:
        attrs[..., -1], bias_term[..., -1] = float("nan"), float("nan")
    return attrs, labels, bias_term


@torch.no_grad()
def logit_diff_by_layer(model: Any, text: str, answer: int | str, wrong: int | str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Each layer's attention and MLP direct contribution to `logit(answer) - logit(wrong)` at the last position.

    Returns:
        attention `[layers]`, MLP `[layers]`, and the model's actual logit difference there.
    """
    ids, mask = as_tokens(model, text)
    a, w = token_ids(model, answer, 1)[0], token_ids(model, wrong, 1)[0]
    attrs, labels, _ = component_logit_attribution(model, ids, a, w)
    last = attrs[:, 0, -1]
    layers = range(model.config.num_hidden_layers)
    attn = torch.stack([last[labels.index(f"{layer}_attn_out")] for layer in layers])
    mlp = torch.stack([last[labels.index(f"{layer}_mlp_out")] for layer in layers])
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0, -1].float()
    return attn, mlp, float(logits[a] - logits[w])
