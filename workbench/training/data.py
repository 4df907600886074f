"""A run's data, prepared before the first step: tokenizer, token streams, validation rows, baselines.

Everything that can fail on bad input (missing or unreadable corpus, too little text, a vocabulary that
does not fit the model) fails here, before the run directory is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..data import (
    bits_per_byte,
    encode_stream,
    load_corpus,
    split_documents,
    token_byte_lengths,
    train_tokenizer,
    unigram_baseline,
    validation_windows,
)
from .recipes import DataConfig


@dataclass
class PreparedData:
    """Tokenizer and token streams of one run."""

    tokenizer: Tokenizer
    train_stream: torch.Tensor  # [n_train_tokens]
    val_rows: torch.Tensor  # [n_rows, seq_len + 1]
    byte_lengths: torch.Tensor  # [vocab]
    unigram_nats: float  # unigram baseline on the validation targets
    unigram_bits_per_byte: float


def prepare_data(
    data: DataConfig, seq_len: int, model_vocab_size: int, tokenizer_dir: Path | None = None
) -> PreparedData:
    """Load the corpus, train (or reload) the tokenizer, encode, check the vocabulary fits the model.

    Args:
        data: data settings.
        seq_len: context length.
        model_vocab_size: the model config's vocab_size (must be >= the tokenizer's vocabulary).
        tokenizer_dir: a directory with a `tokenizer.json` from an earlier start of this run, reused as is.

    Returns:
        PreparedData; validation rows are `[n_rows, seq_len + 1]` windows of the held-out stream.

    Raises:
        FileNotFoundError: the data source is missing. ValueError: unreadable or empty corpus, too little
        text for one row, or a tokenizer vocabulary larger than the model's.
    """
    docs = load_corpus(data.source)
    train_docs, val_docs = split_documents(docs)
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    else:
        tok = train_tokenizer((d.text for d in train_docs), vocab_size=data.tokenizer_vocab_size)
    if tok.get_vocab_size() > model_vocab_size:
        raise ValueError(
            f"the model config's vocab_size={model_vocab_size} is smaller than the tokenizer's vocabulary "
            f"({tok.get_vocab_size()} tokens); set vocab_size >= {tok.get_vocab_size()} or train a smaller tokenizer"
        )
    train_stream = encode_stream(tok, train_docs)
    val_stream = encode_stream(tok, val_docs)
    if train_stream.numel() < seq_len + 2:
        raise ValueError(f"the training text has {train_stream.numel()} tokens: too few for seq_len={seq_len}")
    if val_stream.numel() < seq_len + 1:
        # small corpora: score whatever validation text there is with a shorter row
        val_rows = val_stream.long()[None, :]
    else:
        val_rows = validation_windows(val_stream, seq_len)
    byte_lengths = token_byte_lengths(tok, model_vocab_size)
    targets = val_rows[:, 1:].reshape(-1)
    uni = unigram_baseline(train_stream, targets, model_vocab_size)
    n_bytes = int(byte_lengths[targets].sum())
    return PreparedData(tok, train_stream, val_rows, byte_lengths, uni, bits_per_byte(uni, targets.numel(), n_bytes))
