"""Train a GPT-NeoX-style byte-level BPE tokenizer with `tokenizers`, and write it in HF layout.

GPT-NeoX style means: NFC normalisation, byte-level pre-tokenizer/decoder without a prefix space,
`<|endoftext|>` = 0 and `<|padding|>` = 1 as the first vocabulary entries, no BOS/EOS added on encode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]  # ids 0 and 1, as in GPT-NeoX-20B and Pythia


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE tokenizer in GPT-NeoX style.

    Args:
        texts: training texts (documents); validation text should not be among them.
        vocab_size: total vocabulary including the 2 special tokens and the 256 byte symbols.
        min_frequency: a pair must occur this often to be merged.

    Returns:
        The trained `tokenizers.Tokenizer` (its vocabulary may be smaller than `vocab_size` for tiny corpora).

    Raises:
        ValueError: `vocab_size` cannot hold the special tokens and the byte alphabet.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level tokenizer needs at least "
            f"{len(SPECIAL_TOKENS) + len(alphabet)} entries (2 special tokens + 256 bytes)"
        )
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,  # every byte is encodable, whatever the training text held
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.token_to_id(EOS_TOKEN) != 0 or tok.token_to_id(PAD_TOKEN) != 1:
        raise AssertionError("special tokens did not land on ids 0 and 1")
    return tok


def tokenizer_config(model_max_length: int) -> dict:
    """`tokenizer_config.json` contents that transformers' AutoTokenizer (4.x and 5.x) accepts."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }


def save_tokenizer(tok: Tokenizer, directory: str | os.PathLike, model_max_length: int) -> None:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into `directory`."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(model_max_length), indent=2) + "\n")
    special = {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": PAD_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
