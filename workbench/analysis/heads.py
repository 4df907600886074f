"""Head detectors: previous-token, duplicate-token and induction scores for every attention head.

All three read attention patterns on *repeated random token sequences*: `[bos] + r + r` with `r` uniform
random tokens of length `seq_len`. Random tokens carry no meaning, so attention that lands on a fixed
relative offset can only come from a positional or copying mechanism:

- previous-token head: position `q` attends to `q - 1`;
- duplicate-token head: a token in the second copy attends to the same token in the first copy (`q - seq_len`);
- induction head: a token in the second copy attends to the token *after* its earlier occurrence
  (`q - seq_len + 1`), the one it should predict next.

Each score is the mean attention probability on that key, averaged over the scored query positions and
the batch, so it lies in [0, 1]; 1 means the head does nothing else.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

DETECTORS = ("previous_token", "duplicate_token", "induction")


def repeated_random_tokens(
    batch: int = 8,
    seq_len: int = 50,
    vocab_size: int = 4096,
    seed: int = 0,
    bos_token_id: int | None = 0,
    low: int = 2,
) -> torch.Tensor:
    """Seeded batch of `[bos] + r + r` sequences, `r` uniform in `[low, vocab_size)`.

    Args:
        batch: number of sequences.
        seq_len: length of one copy of the random span.
        vocab_size: upper bound (exclusive) of the random ids.
        seed: generator seed; the same seed gives the same tokens on every machine.
        bos_token_id: token put in front (GPT-NeoX: `<|endoftext|>` = 0); None for no prefix.
        low: lowest random id (2 skips `<|endoftext|>` and `<|padding|>`).

    Returns:
        tokens  # [batch, prefix + 2 * seq_len], prefix = 1 with a bos token else 0
    """
    if seq_len < 2 or batch < 1:
        raise ValueError(f"need batch >= 1 and seq_len >= 2, got batch={batch}, seq_len={seq_len}")
    if vocab_size - low < 2:
        raise ValueError(f"random-token range [{low}, {vocab_size}) is too small")
    gen = torch.Generator().manual_seed(seed)
    span = torch.randint(low, vocab_size, (batch, seq_len), generator=gen)
    parts = [span, span]
    if bos_token_id is not None:
        parts.insert(0, torch.full((batch, 1), bos_token_id, dtype=torch.long))
    return torch.cat(parts, dim=1)


@torch.no_grad()
def attention_patterns(model: torch.nn.Module, tokens: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """All attention patterns of `model` on `tokens`, stacked, as `run_with_cache` records them (so under the
    hooks active in `model.hooks(...)`).

    Args:
        model: a workbench GPT-NeoX model.
        tokens: input ids  # [batch, pos]  (or a text / texts: see `workbench.inputs`)

    Returns:
        patterns  # [layer, batch, head, query_pos, key_pos], float32
    """
    was_training = model.training
    model.eval()
    try:
        # stop before the unembedding: only the patterns are wanted
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"),
                                        attention_mask=attention_mask, stop_at_layer=model.config.num_hidden_layers)
    finally:
        model.train(was_training)
    return torch.stack([cache["pattern", layer].float() for layer in range(model.config.num_hidden_layers)])


def _offset_score(patterns: torch.Tensor, queries: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean attention from each query position `q` in `queries` to key `q - offset`.

    Args:
        patterns  # [layer, batch, head, q, k]
        queries: query positions  # [n]
    Returns:
        scores  # [layer, head]
    """
    keys = queries - offset
    picked = patterns[:, :, :, queries, keys]  # [layer, batch, head, n]
    return picked.mean(dim=(1, 3))


def _split(tokens: torch.Tensor, seq_len: int) -> int:
    """Position where the second copy starts, after checking that `tokens` is `[prefix] + r + r`."""
    prefix = tokens.shape[1] - 2 * seq_len
    if prefix < 0 or not torch.equal(tokens[:, prefix : prefix + seq_len], tokens[:, prefix + seq_len :]):
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} are not [prefix] + r + r with len(r) = seq_len = {seq_len}"
        )
    return prefix + seq_len


def detector_scores(patterns: torch.Tensor, tokens: torch.Tensor, seq_len: int) -> dict[str, torch.Tensor]:
    """The three detector scores from precomputed patterns on repeated tokens.

    Args:
        patterns: attention patterns  # [layer, batch, head, q, k]
        tokens: the sequences they were computed on, `[prefix] + r + r`  # [batch, prefix + 2 * seq_len]
        seq_len: length of `r`.

    Returns:
        {"previous_token": [layer, head], "duplicate_token": [layer, head], "induction": [layer, head]}
    """
    second = _split(tokens, seq_len)
    total = tokens.shape[1]
    all_q = torch.arange(1, total)  # every position that has a previous token
    second_q = torch.arange(second, total)  # queries in the second copy
    return {
        "previous_token": _offset_score(patterns, all_q, 1),
        "duplicate_token": _offset_score(patterns, second_q, seq_len),
        "induction": _offset_score(patterns, second_q, seq_len - 1),
    }


def _vocab_size(model: torch.nn.Module) -> int:
    return int(model.config.vocab_size)


def _run(model: torch.nn.Module, batch: int, seq_len: int, seed: int, bos_token_id: int | None):
    device = next(model.parameters()).device
    tokens = repeated_random_tokens(batch, seq_len, _vocab_size(model), seed=seed, bos_token_id=bos_token_id)
    return detector_scores(attention_patterns(model, tokens.to(device)).cpu(), tokens, seq_len)


def previous_token_scores(
    model: torch.nn.Module, batch: int = 8, seq_len: int = 50, seed: int = 0, bos_token_id: int | None = 0
) -> torch.Tensor:
    """Previous-token score of every head on seeded repeated random tokens.

    Returns:
        scores  # [layer, head], mean attention from position q to q - 1
    """
    return _run(model, batch, seq_len, seed, bos_token_id)["previous_token"]


def duplicate_token_scores(
    model: torch.nn.Module, batch: int = 8, seq_len: int = 50, seed: int = 0, bos_token_id: int | None = 0
) -> torch.Tensor:
    """Duplicate-token score of every head (second copy attending to the same token in the first copy).

    Returns:
        scores  # [layer, head]
    """
    return _run(model, batch, seq_len, seed, bos_token_id)["duplicate_token"]


def induction_scores(
    model: torch.nn.Module, batch: int = 8, seq_len: int = 50, seed: int = 0, bos_token_id: int | None = 0
) -> torch.Tensor:
    """Induction score of every head (second copy attending to the token after the earlier occurrence).

    Returns:
        scores  # [layer, head]
    """
    return _run(model, batch, seq_len, seed, bos_token_id)["induction"]


def scores_frame(scores: torch.Tensor, detector: str | None = None) -> pd.DataFrame:
    """Tidy table of a `[layer, head]` score tensor: columns `layer`, `head`, `score` (and `detector`)."""
    if scores.dim() != 2:
        raise ValueError(f"expected scores of shape [layer, head], got {tuple(scores.shape)}")
    n_layers, n_heads = scores.shape
    frame = pd.DataFrame(
        {
            "layer": [l for l in range(n_layers) for _ in range(n_heads)],
            "head": [h for _ in range(n_layers) for h in range(n_heads)],
            "score": scores.detach().float().reshape(-1).tolist(),
        }
    )
    if detector is not None:
        frame.insert(0, "detector", detector)
    return frame


def head_detector_table(
    model: torch.nn.Module, batch: int = 8, seq_len: int = 50, seed: int = 0, bos_token_id: int | None = 0
) -> pd.DataFrame:
    """All three detectors for every head in one tidy DataFrame (one forward pass).

    Returns:
        DataFrame with columns `detector`, `layer`, `head`, `score` (3 * n_layers * n_heads rows).
    """
    scores = _run(model, batch, seq_len, seed, bos_token_id)
    return pd.concat([scores_frame(scores[name], name) for name in DETECTORS], ignore_index=True)


@torch.no_grad()
def repeated_sequence_losses(
    model: torch.nn.Module, batch: int = 8, seq_len: int = 50, seed: int = 0, bos_token_id: int | None = 0
) -> tuple[float, float]:
    """In-context learning check: mean loss on the first and on the second copy of repeated random tokens.

    A model that copies predicts the second copy far better; the first copy is at chance (~ln vocab).

    Returns:
        (mean loss over targets in the first copy, mean loss over targets in the second copy), nats/token.
    """
    device = next(model.parameters()).device
    tokens = repeated_random_tokens(batch, seq_len, _vocab_size(model), seed=seed, bos_token_id=bos_token_id)
    was_training = model.training
    model.eval()
    try:
        logits = model(tokens.to(device)).logits.float().cpu()  # [batch, pos, vocab]
    finally:
        model.train(was_training)
    loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # [batch, pos - 1]
    second = tokens.shape[1] - seq_len
    # target position t is loss index t - 1; first copy = targets in [prefix + 1, second), skipping the
    # very first random token when there is no prefix to predict it from
    prefix = second - seq_len
    first_idx = torch.arange(max(prefix, 1), second) - 1
    second_idx = torch.arange(second, tokens.shape[1]) - 1
    first_loss, second_loss = loss[:, first_idx].mean(), loss[:, second_idx].mean()
    if not (math.isfinite(first_loss) and math.isfinite(second_loss)):
        raise ValueError("non-finite loss on repeated tokens")
    return float(first_loss), float(second_loss)
