"""What a run is measured by: held-out loss (nats/token, bits/byte) and the circuit probes it is watched for."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module, rows: torch.Tensor, byte_lengths: torch.Tensor, batch_size: int = 16
) -> tuple[float, float]:
    """Mean next-token loss of `model` on held-out rows, in nats/token and bits/byte.

    Args:
        rows: token rows; position 0 is context only, positions 1.. are scored  # [n_rows, seq_len + 1]
        byte_lengths: UTF-8 bytes per token id  # [vocab]
        batch_size: rows per forward pass.

    Returns:
        (nats per token, bits per byte)
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    try:
        for chunk in rows.split(batch_size):
            logits = model(chunk[:, :-1].to(device)).logits.float()  # [b, seq_len, vocab]
            loss = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:].to(device), reduction="sum")
            total += float(loss)
            n += chunk[:, 1:].numel()
    finally:
        model.train(was_training)
    n_bytes = int(byte_lengths[rows[:, 1:].reshape(-1)].sum())
    return total / n, total / math.log(2) / max(n_bytes, 1)


def probe_seq_len(seq_len: int) -> int:
    """Span length of the probes' repeated random tokens for `seq_len`-token rows: two copies + BOS fit a row."""
    return min(50, (seq_len - 1) // 2)


def circuit_probes(model: torch.nn.Module, seq_len: int) -> tuple[float, str, float]:
    """What training is watched for, on seeded repeated random tokens of `seq_len`.

    Returns:
        (highest induction score over all heads, that head as "L1H2", copy loss ratio = mean loss on the
        second copy / on the first; below 0.5 means in-context learning)
    """
    from ..analysis.heads import induction_scores, repeated_sequence_losses  # pandas: loaded on first use, not with the package

    scores = induction_scores(model, batch=8, seq_len=seq_len, seed=1234)  # [layer, head]
    idx = int(scores.argmax())
    layer, head = divmod(idx, scores.shape[1])
    first, second = repeated_sequence_losses(model, batch=8, seq_len=seq_len, seed=1234)
    return float(scores.max()), f"L{layer}H{head}", second / first
