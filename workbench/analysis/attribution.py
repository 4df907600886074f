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
