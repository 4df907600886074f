"""Optimiser and learning-rate schedule: AdamW with decay on matrices only, linear warmup then cosine."""

from __future__ import annotations

import math

import torch

from .recipes import TrainConfig


class WarmupCosine:
    """lr multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total` steps, then held.

    A class, not a closure, so `LambdaLR.state_dict` can pickle it into the checkpoint.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not biases, LayerNorms, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """`WarmupCosine` over `cfg.decay_steps` (default `cfg.steps`), stepped once per optimizer step."""
    schedule = WarmupCosine(cfg.warmup_steps, cfg.decay_steps or cfg.steps, cfg.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
