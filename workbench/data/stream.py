"""Token streams from documents, byte counts per token, and the unigram baseline.

Bits per byte puts models with different tokenizers on one scale: total loss in bits divided by the
UTF-8 bytes of the text predicted. For a byte-level BPE every token stands for a fixed byte string,
so the byte count of a span of tokens is the sum of per-token byte lengths.
"""

from __future__ import annotations

import math

import torch
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import ByteLevel

from .corpus import Document


def encode_stream(tok: Tokenizer, docs: list[Document], eos_token_id: int = 0) -> torch.Tensor:
    """Encode documents into one stream, each document followed by `eos_token_id` (GPT-NeoX packing).

    Returns:
        token ids  # [n_tokens], int32
    """
    ids: list[int] = []
    for enc in tok.encode_batch([d.text for d in docs], add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eos_token_id)
    return torch.tensor(ids, dtype=torch.int32)


def token_byte_lengths(tok: Tokenizer, vocab_size: int | None = None) -> torch.Tensor:
    """UTF-8 byte length of every token id (special tokens count 0 bytes: they are not text).

    Args:
        tok: a byte-level BPE tokenizer.
        vocab_size: length of the result (the model's vocabulary, may exceed the tokenizer's).

    Returns:
        bytes per token id  # [vocab_size], int64
    """
    n = vocab_size or tok.get_vocab_size()
    out = torch.zeros(n, dtype=torch.long)
    byte_chars = set(ByteLevel.alphabet())
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    for token, idx in tok.get_vocab().items():
        if idx < n and token not in special:
            # each character of a byte-level token string stands for exactly one byte
            out[idx] = len(token) if all(c in byte_chars for c in token) else len(token.encode("utf-8"))
    return out


def unigram_baseline(train_stream: torch.Tensor, targets: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of the add-one-smoothed unigram distribution of `train_stream` on `targets`.

    Args:
        train_stream: training token ids  # [n_train]
        targets: the token ids to score (the same positions the model is scored on)  # [n]
        vocab_size: number of classes.

    Returns:
        mean negative log-likelihood in nats per token.
    """
    counts = torch.bincount(train_stream.long(), minlength=vocab_size).double() + 1.0
    logp = torch.log(counts / counts.sum())
    return float(-logp[targets.long()].mean())


def bits_per_byte(nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """Convert a mean loss over `n_tokens` tokens into bits per UTF-8 byte of the `n_bytes` they encode."""
    return nats_per_token * n_tokens / math.log(2) / n_bytes
