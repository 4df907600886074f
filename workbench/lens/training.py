"""Training a tuned lens: each layer's translator learns to match the model's final distribution (KL).

The recipe is the tuned-lens package's (`tuned_lens/scripts/train_loop.py`, `ingredients.py`): translators
start at the identity, the loss of layer i is KL(final || lens_i) at the same position summed over layers,
SGD with Nesterov momentum 0.9, learning rate 1.0 in the package's units (`lr * (1 - momentum)` for torch),
weight decay 1e-3, a linear decay to 0 without warm-up, gradients clipped to norm 1. The model stays frozen.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from .lenses import TunedLens
from .windows import token_windows


def kl_to_final(final_log_probs: torch.Tensor, lens_log_probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean KL(final || lens) in nats over positions (the tuned lens's training loss and its measure).

    Args:
        final_log_probs: the model's log-probabilities `[..., v]` (float32).
        lens_log_probs: the lens's `[..., v]`.
        mask: `[...]` weights (1 = a real token), or None.

    Returns:
        a scalar tensor.
    """
    kl = (final_log_probs.exp() * (final_log_probs - lens_log_probs)).sum(-1)  # [...]
    return kl.mean() if mask is None else (kl * mask).sum() / mask.sum()


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """The model's parameters without gradients inside (only the lens learns), restored after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def train_tuned_lens(
    model: Any,
    texts: Any,
    steps: int = 250,
    batch_size: int = 8,
    seq_len: int = 128,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    seed: int = 0,
    lens: TunedLens | None = None,
    progress: bool = True,
) -> TunedLens:
    """Train a tuned lens (`TunedLens.train`).

    Args:
        model: a workbench causal LM (frozen during training; under active `model.hooks(...)` the lens learns
            the hooked model).
        texts: training text: a string, strings, a token stream `[n]` or rows `[rows, p]` (`token_windows`).
        steps: optimiser steps; each reads `batch_size` windows of `seq_len` tokens drawn at random.
        lr: learning rate in the tuned-lens package's units (its default 1.0; torch's SGD gets `lr * (1 - momentum)`).
        momentum, weight_decay: SGD with Nesterov momentum, as the package.
        seed: seeds the window sampling (the translators start at the identity), so a run is reproducible.
        lens: a lens to continue training (default: a new one, at the identity).
        progress: show a tqdm bar with the mean KL over layers.

    Returns:
        The trained TunedLens; `lens.history` holds the per-step KL (nats) of each layer `[steps][layers]`.

    Raises:
        ValueError: non-positive steps / batch_size / lr, or too little text for one window.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not lr > 0 or not 0 <= momentum < 1:
        raise ValueError(f"lr must be > 0 and momentum in [0, 1), got lr={lr!r}, momentum={momentum!r}")
    rows = token_windows(model, texts, seq_len)  # [n, seq_len]
    lens = lens if lens is not None else TunedLens(model)
    params = lens.parameters()
    opt = torch.optim.SGD(params, lr=lr * (1 - momentum), momentum=momentum, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps - s) / steps))
    gen = torch.Generator().manual_seed(seed)
    n_layers = lens.num_layers
    names = {f"blocks.{i}.hook_resid_pre" for i in range(n_layers)}
    history: list[list[float]] = list(getattr(lens, "history", []))
    bar = tqdm(range(steps), disable=not progress, desc="tuned lens", dynamic_ncols=True)
    with frozen(model):
        for _ in bar:
            batch = rows[torch.randint(len(rows), (batch_size,), generator=gen)].to(model.device)
            with torch.no_grad():
                logits, cache = model.run_with_cache(batch, names_filter=lambda n: n in names)
                final = logits.float().log_softmax(-1)  # [b, p, v]
            losses = [kl_to_final(final, lens.log_probs(cache, i)) for i in range(n_layers)]
            opt.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            history.append([float(x.detach()) for x in losses])
            bar.set_postfix(kl=f"{sum(history[-1]) / n_layers:.3f}")
    lens.history = history
    return lens
