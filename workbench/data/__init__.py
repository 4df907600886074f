"""Training data for the demo model: corpus loading, tokenizer training, repeated-span mixing."""

from .corpus import Document, kjv_db_path, load_corpus, load_kjv, load_text_files, split_documents
from .mixing import IGNORE_INDEX, BatchSampler, MixConfig, validation_windows
from .stream import bits_per_byte, encode_stream, token_byte_lengths, unigram_baseline
from .tokenizer_training import EOS_TOKEN, PAD_TOKEN, save_tokenizer, tokenizer_config, train_tokenizer

__all__ = [
    "Document",
    "kjv_db_path",
    "load_corpus",
    "load_kjv",
    "load_text_files",
    "split_documents",
    "IGNORE_INDEX",
    "BatchSampler",
    "MixConfig",
    "validation_windows",
    "bits_per_byte",
    "encode_stream",
    "token_byte_lengths",
    "unigram_baseline",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "save_tokenizer",
    "tokenizer_config",
    "train_tokenizer",
]
