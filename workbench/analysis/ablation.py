"""Head ablation as ready hook functions (zero, mean, resample) on `blocks.L.attn.hook_z`, and a sweep.

Ablating a head's `z` removes what it writes to the residual stream, but leaves the attention output bias
(`dense.bias`), which belongs to no head.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..hooks import HookPoint
from ._common import as_tokens

HeadSpec = Iterable[int] | int | None  # heads of one layer; None means all


def _head_index(heads: HeadSpec, n_heads: int) -> list[int]:
    heads = list(range(n_heads)) if heads is None else [heads] if isinstance(heads, int) else list(heads)
    for h in heads:
        if not 0 <= h < n_heads:
            raise ValueError(f"head {h} is out of range [0, {n_heads - 1}]")
    return heads


def zero_ablate_heads(heads: HeadSpec = None) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    """Hook fn for `hook_z` `[b, p, h, dh]` setting the given heads (default all) to zero."""
    def hook(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
        z = z.clone()
        z[:, :, _head_index(heads, z.shape[2])] = 0
        return z
    return hook


def mean_ablate_heads(mean_z: torch.Tensor, heads: HeadSpec = None) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    """Hook fn replacing the given heads' `z` by a reference mean.

    Args:
        mean_z: `[h, dh]` (mean over batch and positions of a reference run) or `[p, h, dh]` (per position).
    """
    def hook(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
        idx = _head_index(heads, z.shape[2])
        if mean_z.dim() == 3 and mean_z.shape[0] != z.shape[1]:
            raise ValueError(f"per-position mean_z has {mean_z.shape[0]} positions, the run has {z.shape[1]}")
        z = z.clone()
        z[:, :, idx] = mean_z.to(z)[..., idx, :].expand_as(z[:, :, idx])
        return z
    return hook


def resample_ablate_heads(source_z: torch.Tensor, heads: HeadSpec = None, seed: int = 0
                          ) -> Callable[[torch.Tensor, HookPoint], torch.Tensor]:
    """Hook fn replacing the given heads' `z` by that of another input (a seeded random row of `source_z`).

    Args:
        source_z: `[n, p, h, dh]` z of the same layer on other inputs (same length as the run).
    """
    generator = torch.Generator().manual_seed(seed)

    def hook(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
        if source_z.shape[1:] != z.shape[1:]:
            raise ValueError(f"source_z has shape {tuple(source_z.shape)}, the run's z {tuple(z.shape)}")
        idx = _head_index(heads, z.shape[2])
        rows = torch.randint(0, source_z.shape[0], (z.shape[0],), generator=generator)
        z = z.clone()
        z[:, :, idx] = source_z.to(z)[rows.to(z.device)][:, :, idx]
        return z
    return hook


@torch.no_grad()
def ablate_heads(
    model: Any,
    inputs: Any,
    metric: Callable[[torch.Tensor], torch.Tensor | float],
    kind: str = "zero",
    reference: Any = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """The metric with each head ablated in turn.

    Args:
        metric: logits `[b, p, v]` -> scalar.
        kind: "zero", "mean" (mean z over `reference`, default the inputs themselves, batch and positions)
            or "resample" (z of a seeded random row of `reference`, which must tokenise to the same length).

    Returns:
        `[layers, heads]` metric values, and a frame `layer, head, metric, change` (change = ablated - clean).
    """
    if kind not in ("zero", "mean", "resample"):
        raise ValueError(f"kind must be 'zero', 'mean' or 'resample', got {kind!r}")
    ids, mask = as_tokens(model, inputs)
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    clean = float(metric(model(input_ids=ids, attention_mask=mask, use_cache=False).logits))
    ref_cache = None
    if kind != "zero":
        ref_ids, ref_mask = as_tokens(model, reference) if reference is not None else (ids, mask)
        _, ref_cache = model.run_with_cache(ref_ids, names_filter=lambda n: n.endswith("attn.hook_z"),
                                            attention_mask=ref_mask)
    out = torch.zeros(n_layers, n_heads)
    for l in tqdm(range(n_layers), desc=f"{kind}-ablating heads", disable=not progress):
        for h in range(n_heads):
            if kind == "zero":
                fn = zero_ablate_heads([h])
            elif kind == "mean":
                fn = mean_ablate_heads(ref_cache["z", l].mean((0, 1)), [h])
            else:
                fn = resample_ablate_heads(ref_cache["z", l], [h], seed)
            logits = model.run_with_hooks(ids, fwd_hooks=[(f"blocks.{l}.attn.hook_z", fn)], attention_mask=mask).logits
            out[l, h] = float(metric(logits))
    frame = pd.DataFrame({"layer": torch.arange(n_layers).repeat_interleave(n_heads).tolist(),
                          "head": torch.arange(n_heads).repeat(n_layers).tolist(),
                          "metric": out.flatten().tolist(), "change": (out - clean).flatten().tolist()})
    return out, frame
