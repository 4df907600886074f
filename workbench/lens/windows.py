"""Texts or token ids -> fixed-length token windows, the rows a lens is trained and measured on."""

from __future__ import annotations

from typing import Any

import torch

from workbench.inputs import integer_ids, is_text, require_tokenizer


def token_windows(model: Any, texts: Any, seq_len: int) -> torch.Tensor:
    """Pack texts into one token stream (each text followed by eos, as GPT-NeoX packs) and cut it into windows.

    Args:
        model: a workbench model (its tokenizer encodes texts).
        texts: a string, a list of strings, a token stream `[n]`, or rows `[rows, p]` (kept as they are).
        seq_len: tokens per window (the tail shorter than a window is dropped).

    Returns:
        int64 ids `[windows, seq_len]` (`[rows, p]` for rows).

    Raises:
        ValueError: no texts, fewer tokens than one window, or a seq_len the model cannot take.
    """
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or not 1 <= seq_len <= model.config.max_position_embeddings:
        raise ValueError(f"seq_len must be an int in 1..{model.config.max_position_embeddings}, got {seq_len!r}")
    if isinstance(texts, (list, tuple)) and not texts:
        raise ValueError("texts is empty: pass a string, a list of strings or token ids")
    if is_text(texts):
        tok = require_tokenizer(model)
        eos = tok.eos_token_id if tok.eos_token_id is not None else 0
        ids = [i for row in tok([texts] if isinstance(texts, str) else list(texts))["input_ids"] for i in row + [eos]]
        stream = torch.tensor(ids, dtype=torch.int64)
    else:
        stream = integer_ids(texts)
        if stream.dim() == 2:
            return stream
        if stream.dim() != 1:
            raise ValueError(f"token ids must be a stream [n] or rows [rows, p], got shape {tuple(stream.shape)}")
    n = stream.numel() // seq_len
    if n == 0:
        raise ValueError(f"the text has {stream.numel()} tokens: fewer than one window of seq_len={seq_len}")
    return stream[: n * seq_len].view(n, seq_len)
