"""Small helpers shared by the analysis modules: inputs to token ids, token labels, single-token answers."""

from __future__ import annotations

from typing import Any, Sequence

import torch


def as_tokens(model: Any, inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A string, a list of strings or ids -> (`[b, p]` ids on the model's device, `[b, p]` mask or None)."""
    if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
        ids, mask = model.to_tokens_and_mask(inputs)
        return ids, (mask if bool((mask == 0).any()) else None)
    if not torch.is_tensor(inputs):
        raise TypeError(f"inputs must be a str, a list of str or a token tensor, got {type(inputs).__name__}")
    ids = inputs.unsqueeze(0) if inputs.dim() == 1 else inputs
    if ids.dim() != 2:
        raise ValueError(f"token ids must be [batch, pos], got shape {tuple(inputs.shape)}")
    return ids.to(model.device), None


def token_strings(model: Any, ids: torch.Tensor) -> list[str]:
    """Readable token labels of a 1-D id sequence (`"#123"` without a tokenizer)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return [f"#{int(i)}" for i in ids]
    return [tokenizer.decode([int(i)]) for i in ids]


def token_id(model: Any, token: int | str) -> int:
    """A token id, or the id of a string that is exactly one token."""
    if isinstance(token, str):
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"the string {token!r} needs model.tokenizer; pass a token id")
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{token!r} is {len(ids)} tokens ({ids}), not one; pass a single token")
        return ids[0]
    token = int(token)
    if not 0 <= token < model.config.vocab_size:
        raise ValueError(f"token id {token} is out of range [0, {model.config.vocab_size - 1}]")
    return token


def token_ids(model: Any, tokens: int | str | Sequence | torch.Tensor, batch: int) -> torch.Tensor:
    """One answer per row: an id/string for all rows, or a sequence of `batch` of them -> `[batch]` ids."""
    if isinstance(tokens, (int, str)):
        return torch.full((batch,), token_id(model, tokens), dtype=torch.long, device=model.device)
    ids = torch.tensor([token_id(model, t) for t in (tokens.tolist() if torch.is_tensor(tokens) else tokens)],
                       dtype=torch.long, device=model.device)
    if ids.shape != (batch,):
        raise ValueError(f"give one answer token per row: {batch} expected, got {ids.numel()}")
    return ids


def last_positions(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`[b]` index of each row's last real token (right padding aware; left padding gives p - 1)."""
    if mask is None:
        return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
    positions = torch.arange(ids.shape[1], device=ids.device)
    return (positions * mask.to(ids.device)).argmax(-1)
