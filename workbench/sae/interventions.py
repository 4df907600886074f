"""Hooks on SAE features, for `model.hooks(fwd_hooks=[...])` inside `model.saes(sae, ...)`.

    with model.saes(sae, use_error_term=True), model.hooks(fwd_hooks=[clamp_feature(sae, 123, 8.0)]):
        model.generate("And God said")

Each returns a `(hook_name, fn)` pair on `<site>.hook_sae_acts_post`: with `use_error_term=True` the model's
activation then changes by exactly the edit's reconstruction, `(new - old) @ W_dec`, and by nothing else.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..hook_points import HookPoint
from .sae import SAE

Hook = tuple[str, Callable[[torch.Tensor, HookPoint], torch.Tensor]]


def _acts_name(sae: SAE) -> str:
    if not sae.cfg.hook_name:
        raise ValueError("the SAE has no hook_name (sae.cfg.hook_name): it cannot be spliced")
    return f"{sae.cfg.hook_name}.hook_sae_acts_post"


def _features(sae: SAE, features: int | Sequence[int] | torch.Tensor) -> list[int]:
    """Feature indices from an int, a sequence of ints, or a numpy / torch integer scalar or vector."""
    if hasattr(features, "tolist"):  # numpy / torch: a 0-d value gives a Python number, a vector a list
        features = features.tolist()
    items = list(features) if isinstance(features, (list, tuple, range)) else [features]
    bad = [f for f in items if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < sae.cfg.d_sae]
    if bad or not items:
        raise ValueError(f"features must be ints in [0, d_sae={sae.cfg.d_sae}), got {bad or items}")
    return items


def _feature(sae: SAE, feature: int | torch.Tensor) -> int:
    items = _features(sae, feature)
    if len(items) != 1:
        raise ValueError(f"feature must be one int in [0, d_sae={sae.cfg.d_sae}), got {items}")
    return items[0]


def ablate_features(sae: SAE, features: int | Sequence[int]) -> Hook:
    """Set the features' activations to 0.

    Returns:
        `(hook_name, fn)` for `model.hooks(fwd_hooks=...)`.
    """
    index = _features(sae, features)

    def ablate(acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        acts = acts.clone()
        acts[..., index] = 0
        return acts

    return _acts_name(sae), ablate


def clamp_feature(sae: SAE, feature: int | torch.Tensor, value: float) -> Hook:
    """Set one feature's activation to `value` at every position (padding positions keep the model's activation
    whatever the hook does: the splice masks them)."""
    index = _feature(sae, feature)

    def clamp(acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        acts = acts.clone()
        acts[..., index] = value
        return acts

    return _acts_name(sae), clamp


def scale_feature(sae: SAE, feature: int | torch.Tensor, factor: float) -> Hook:
    """Multiply one feature's activation by `factor` (steering where the feature is already active)."""
    index = _feature(sae, feature)

    def scale(acts: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        acts = acts.clone()
        acts[..., index] *= factor
        return acts

    return _acts_name(sae), scale
