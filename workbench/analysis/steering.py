"""Steering: add a vector to the residual stream (or any hook) while the model generates."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd
import torch

from ..activation_cache import act_name
from ..hooks import HookPoint
from ._common import as_tokens


def steering_hook(vector: torch.Tensor, scale: float = 1.0) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    """Hook fn adding `scale * vector` (`[d]`, broadcast over batch and positions) to the activation."""
    def hook(activation: torch.Tensor, point: HookPoint) -> torch.Tensor:
        if activation.shape[-1] != vector.shape[-1]:
            raise ValueError(f"steering vector has size {vector.shape[-1]}, {point.name} has {activation.shape[-1]}")
        return activation + scale * vector.to(activation)
    return hook


@torch.no_grad()
def steering_vector(model: Any, positive: Any, negative: Any, hook: str = "resid_pre", layer: int = 0) -> torch.Tensor:
    """Difference of mean activations (over batch and real positions) between two prompts or prompt sets.

    Returns:
        `[d]` vector: mean activation on `positive` minus mean on `negative` at `act_name(hook, layer)`.
    """
    name = act_name(hook, layer)
    means = []
    for inputs in (positive, negative):
        ids, mask = as_tokens(model, inputs)
        _, cache = model.run_with_cache(ids, names_filter=name, attention_mask=mask)
        act = cache[name]
        weight = torch.ones(act.shape[:2], device=act.device) if mask is None else mask.to(act)
        means.append((act * weight[..., None]).sum((0, 1)) / weight.sum())
    return means[0] - means[1]


def steer(
    model: Any,
    prompt: Any,
    vector: torch.Tensor,
    hook: str = "resid_pre",
    layer: int = 0,
    scale: float = 1.0,
    **generate_kwargs: Any,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Generate with `scale * vector` added at `act_name(hook, layer)` on every step (prompt and new tokens),
    and without it, for comparison.

    Args:
        prompt: text(s) or ids `[b, p]`.
        **generate_kwargs: passed to `model.generate` (max_new_tokens, do_sample, seed, ...).

    Returns:
        steered token ids `[b, p + new]`, and a frame `batch, scale, steered, baseline` (texts when the model
        has a tokenizer, else id lists).
    """
    name = act_name(hook, layer)
    model.resolve_hook_points(name)  # unknown names raise before generating anything
    ids, mask = as_tokens(model, prompt)
    if mask is not None:
        raise ValueError("steer takes equal-length prompts (or ids); pad them yourself and use model.generate")
    steered = model.generate(ids, fwd_hooks=[(name, steering_hook(vector, scale))], **generate_kwargs)
    baseline = model.generate(ids, **generate_kwargs)
    tokenizer = getattr(model, "tokenizer", None)
    show = (lambda row: tokenizer.decode(row.tolist())) if tokenizer is not None else (lambda row: row.tolist())
    frame = pd.DataFrame({"batch": list(range(ids.shape[0])), "scale": scale,
                          "steered": [show(r) for r in steered], "baseline": [show(r) for r in baseline]})
    return steered, frame
