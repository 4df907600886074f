"""The residual stream layer by layer, and what the logit lens reads from it."""

from __future__ import annotations

from typing import Any

import torch

from ._common import as_tokens


@torch.no_grad()
def residual_stack(model: Any, inputs: Any) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor | None]:
    """The residual stream before every layer and after the last, as `run_with_cache` records it.

    Args:
        model: a workbench GPT-NeoX model (active `model.hooks(...)` apply).
        inputs: a text, texts or ids `[b, p]`.

    Returns:
        resid `[layers + 1, b, p, d]` (`resid_pre` of each layer, then the final `resid_post`), its labels
        (`0_pre`, ..., `final_post`), the ids `[b, p]` and the attention mask (None without padding).
    """
    ids, mask = as_tokens(model, inputs)
    last = f"blocks.{model.config.num_hidden_layers - 1}.hook_resid_post"
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_pre") or n == last,
                                    attention_mask=mask)
    resid, labels = cache.accumulated_resid(return_labels=True)
    return resid, labels, ids, mask


@torch.no_grad()
def lens_log_probs(model: Any, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens: `log_softmax(unembed(ln_final(resid)))`, each residual normalised with its own statistics.

    Args:
        resid: `[..., d]` residual streams (e.g. `residual_stack`'s `[layers + 1, b, p, d]`).

    Returns:
        float32 log-probabilities `[..., v]`; for the final `resid_post` they are the model's own.
    """
    ln = model.base_model.final_layer_norm
    normed = torch.nn.functional.layer_norm(resid.to(ln.weight.dtype), ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    return model.embed_out(normed).float().log_softmax(-1)


@torch.no_grad()
def residual_norms(model: Any, inputs: Any) -> tuple[torch.Tensor, list[str]]:
    """L2 norm of the residual stream before each layer and after the last, averaged over real tokens.

    Returns:
        norms `[layers + 1]` (float32) and labels (`embed`, `L0`, ..., one per layer output).
    """
    resid, _, ids, mask = residual_stack(model, inputs)
    norms = resid.float().norm(dim=-1)  # [l + 1, b, p]
    weight = torch.ones_like(ids, dtype=norms.dtype) if mask is None else mask.to(norms.dtype)
    mean = (norms * weight).sum((1, 2)) / weight.sum()
    return mean, ["embed"] + [f"L{layer}" for layer in range(resid.shape[0] - 1)]
