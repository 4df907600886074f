"""MLP neuron activations, as `run_with_cache` records them."""

from __future__ import annotations

from typing import Any

import torch

from ._common import as_tokens


@torch.no_grad()
def mlp_activations(model: Any, inputs: Any) -> torch.Tensor:
    """Every MLP neuron's activation (after the nonlinearity: `blocks.L.mlp.hook_post`) at every position.

    Args:
        model: a workbench GPT-NeoX model (active `model.hooks(...)` apply).
        inputs: text(s) or ids `[b, p]`.

    Returns:
        activations `[layers, b, p, d_mlp]`.
    """
    ids, mask = as_tokens(model, inputs)
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("mlp.hook_post"), attention_mask=mask)
    return torch.stack([cache["post", layer] for layer in range(model.config.num_hidden_layers)])
