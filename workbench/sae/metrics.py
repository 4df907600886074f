"""How good an SAE is on some text: reconstruction, sparsity, and what splicing it costs the model.

The definitions are SAELens's (`sae_lens.evals`): explained variance 1 - E||x - x_hat||^2 / Var(x) (Var summed
over dimensions, accumulated in float64), L0 the mean number of active latents per token, and the CE-loss
score (CE recovered) (CE_zero_ablated - CE_spliced) / (CE_zero_ablated - CE_clean), each CE the mean
next-token loss over the same positions.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .activations import token_stream
from .sae import SAE


def _next_token_loss(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-token CE of each row's next token  # [rows * (pos - 1)]"""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), rows[:, 1:].flatten(), reduction="none")


@torch.no_grad()
def sae_metrics(model: Any, sae: SAE, tokens: str | Sequence[str] | torch.Tensor, context: int = 128,
                batch_rows: int = 16, dense_threshold: float = 0.1, progress: bool = False) -> dict[str, Any]:
    """Evaluate `sae` spliced into `model` at `sae.cfg.hook_name`.

    Args:
        tokens: text(s) (packed into one stream, each ending with eos), a 1-D token stream, or rows
            `[rows, pos]` (used as they are).
        context: row length for texts and 1-D streams (the tail that does not fill a row is dropped).
        batch_rows: rows per forward.
        dense_threshold: a latent active on more than this fraction of tokens counts as dense.
        progress: show a tqdm bar.

    Returns:
        explained_variance, mse (E||x - x_hat||^2), l0, dead_fraction (never active), dense_fraction,
        ce_loss_clean, ce_loss_spliced, ce_loss_zero_ablated, ce_loss_recovered, n_tokens, and
        feature_density (per-latent fraction of tokens active, `[d_sae]`).
    """
    rows = tokens if torch.is_tensor(tokens) and tokens.dim() == 2 else None
    if rows is None:
        stream = token_stream(model, tokens)
        if stream.numel() < context:
            raise ValueError(f"sae_metrics needs at least context={context} tokens, got {stream.numel()}")
        rows = stream[: stream.numel() // context * context].reshape(-1, context)
    site = sae.cfg.hook_name
    names = [f"{site}.hook_sae_input", f"{site}.hook_sae_acts_post", f"{site}.hook_sae_output"]
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    sum_sq = sum_resid = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    losses: dict[str, list[torch.Tensor]] = {"clean": [], "spliced": [], "zero_ablated": []}
    n = 0

    def zero(value: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.zeros_like(value)

    for chunk in tqdm(rows.split(batch_rows), desc="SAE metrics", disable=not progress):
        chunk = chunk.to(model.device)
        losses["clean"].append(_next_token_loss(model(chunk).logits, chunk))
        logits, cache = model.run_with_cache_with_saes(chunk, saes=[sae], names_filter=names)
        losses["spliced"].append(_next_token_loss(logits, chunk))
        losses["zero_ablated"].append(_next_token_loss(model.run_with_hooks(chunk, fwd_hooks=[(site, zero)]).logits,
                                                       chunk))
        x = cache[names[0]].double().flatten(0, -2)
        x_hat = cache[names[2]].double().reshape(x.shape)
        acts = cache[names[1]].flatten(0, -2)
        sum_x += x.sum(0).cpu()
        sum_sq += float(x.pow(2).sum())
        sum_resid += float((x - x_hat).pow(2).sum())
        fired += (acts != 0).sum(0).double().cpu()
        n += x.shape[0]
    variance = sum_sq / n - float((sum_x / n).pow(2).sum())
    ce = {name: float(torch.cat(values).mean()) for name, values in losses.items()}
    density = (fired / n).float()
    return {
        "explained_variance": 1 - (sum_resid / n) / variance,
        "mse": sum_resid / n,
        "l0": float(fired.sum() / n),
        "dead_fraction": float((density == 0).float().mean()),
        "dense_fraction": float((density > dense_threshold).float().mean()),
        "ce_loss_clean": ce["clean"],
        "ce_loss_spliced": ce["spliced"],
        "ce_loss_zero_ablated": ce["zero_ablated"],
        "ce_loss_recovered": (ce["zero_ablated"] - ce["spliced"]) / (ce["zero_ablated"] - ce["clean"]),
        "n_tokens": n,
        "feature_density": density,
    }
