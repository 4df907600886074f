"""Hook points: identity modules at every activation site, named with TransformerLens's vocabulary.

A `HookPoint` does nothing until a hook is attached, so an unhooked model runs at full speed. Sites whose
values cost extra to produce (attention scores and patterns under a fused backend, per-head results, layer
norm internals) ask `is_active()` and only compute them when something listens.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


class HookPoint(nn.Module):
    """Identity module marking one activation; `name` is its TransformerLens name (e.g. `blocks.3.attn.hook_z`)."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def is_active(self) -> bool:
        """Whether any forward or backward hook is attached (the value must then be computed)."""
        return bool(self._forward_hooks or self._forward_pre_hooks or self._backward_hooks)

    def layer(self) -> int | None:
        """Block index of this hook point (None for `hook_embed` and `ln_final.*`)."""
        match = re.match(r"blocks\.(\d+)\.", self.name)
        return int(match.group(1)) if match else None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


# Module paths follow transformers' checkpoint layout; hook names follow TransformerLens.
_PATH_TO_TL = [
    (r"^gpt_neox\.", ""),
    (r"^layers\.(\d+)\.", r"blocks.\1."),
    (r"\.input_layernorm\.", ".ln1."),
    (r"\.post_attention_layernorm\.", ".ln2."),
    (r"\.attention\.", ".attn."),
    (r"^final_layer_norm\.", "ln_final."),
]


def transformer_lens_name(module_path: str) -> str:
    """`gpt_neox.layers.3.attention.hook_z` -> `blocks.3.attn.hook_z`."""
    name = module_path
    for pattern, repl in _PATH_TO_TL:
        name = re.sub(pattern, repl, name)
    return name


def name_hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Give every HookPoint in `model` its TransformerLens name; return name -> hook point."""
    points = {}
    for path, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = transformer_lens_name(path)
            points[module.name] = module
    return points


class HookedModelMixin:
    """The hook API of every GPT-NeoX model class (run_with_cache, run_with_hooks, hooks(), reset_hooks)."""
