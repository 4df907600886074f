"""`TokenizerAdapter`: one encode/decode interface over the tokenizers the request engine accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TokenizerAdapter:
    """Uniform encode/decode over a transformers-like tokenizer (the workbench's `Tokenizer`, transformers')
    or a raw `tokenizers.Tokenizer`.

    Args:
        tok: the tokenizer.
    """

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.raw = type(tok).__module__.startswith("tokenizers")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added (as lm-eval's causal-LM `tok_encode`), in one batch."""
        if not texts:
            return []
        if self.raw:
            return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]
        return [list(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`, special tokens dropped by default (as lm-eval's `tok_decode`)."""
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def special_id(self, what: str) -> int | None:
        """The id of the "bos" or "eos" token (a raw tokenizer: `<|endoftext|>`), or None."""
        if self.raw:
            return self.tok.token_to_id("<|endoftext|>")
        return getattr(self.tok, f"{what}_token_id", None)
