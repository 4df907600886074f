"""Small helpers shared by the analysis modules: single-token answers and positions (inputs: `workbench.inputs`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import as_token_batch
from ..inputs import token_strings as _token_strings


def as_tokens(model: Any, inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A string, a list of strings or ids -> (`[b, p]` ids on the model's device, `[b, p]` mask or None)."""
    return as_token_batch(model, inputs)


def token_strings(model: Any, ids: torch.Tensor) -> list[str]:
    """Token labels of a 1-D id sequence, as `model.to_str_tokens` gives them (`"#123"` without a tokenizer)."""
    return _token_strings(getattr(model, "tokenizer", None), ids)


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
