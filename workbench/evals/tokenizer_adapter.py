"""`TokenizerAdapter`: one encode/decode interface over the tokenizers the request engine accepts.

Few-shot prompts repeat the same lines in every request (the examples, the instruction), and tokenising them
again was ~10% of a 5-shot evaluation. Byte-level BPE tokenisers of GPT-2's kind (GPT-NeoX's) tokenise text in
pieces the pre-tokeniser's regex cuts, and that regex always cuts between a non-space character and a following
whitespace character (no alternative matches both). So where the tokeniser adds nothing that could reach across
such a cut (see `cuts_at_whitespace`), `encode(a + b) == encode(a) + encode(b)` whenever `a` ends in a
non-space and `b` starts with whitespace: `encode` then tokenises each distinct line once (cut before every
newline that follows a non-space) and joins the ids, and `splits(context, continuation)` tells the engine when a
continuation can be tokenised on its own. Any other tokeniser is called on the whole texts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

# Before each newline that follows a non-space character (Python's \S excludes everything the tokeniser's \s
# matches: str.isspace() covers Unicode's White_Space).
_LINE_CUT = re.compile(r"(?<=\S)(?=\n)")
_ASCII_WHITESPACE = (" ", "\n", "\t", "\r")


class TokenizerAdapter:
    """Uniform encode/decode over a transformers-like tokenizer (the workbench's `Tokenizer`, transformers')
    or a raw `tokenizers.Tokenizer`.

    Args:
        tok: the tokenizer.
    """

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.raw = type(tok).__module__.startswith("tokenizers")
        self.backend = tok if self.raw else getattr(tok, "backend_tokenizer", None)

    @property
    def cuts(self) -> bool:
        """`cuts_at_whitespace` of the tokenizer as it is now."""
        return cuts_at_whitespace(self.backend)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added (as lm-eval's causal-LM `tok_encode`), in one batch;
        each distinct line once where the tokeniser `cuts_at_whitespace`."""
        if not texts:
            return []
        if not self.cuts:
            return self._encode(list(texts))
        pieces = [_LINE_CUT.split(text) for text in texts]
        distinct = list(dict.fromkeys(piece for text in pieces for piece in text))
        ids = dict(zip(distinct, self._encode(distinct)))
        return [[i for piece in text for i in ids[piece]] for text in pieces]

    def splits(self, context: str, continuation: str) -> bool:
        """Whether `encode(context + continuation)` is `encode(context) + encode(continuation)` (a non-space
        ends the context, ASCII whitespace starts the continuation, the tokeniser `cuts_at_whitespace`)."""
        return (self.cuts and context != "" and not context[-1].isspace()
                and continuation.startswith(_ASCII_WHITESPACE))

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if self.raw:
            encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # the same ids, no offsets
            return [e.ids for e in encode(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tok(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`, special tokens dropped by default (as lm-eval's `tok_decode`)."""
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def special_id(self, what: str) -> int | None:
        """The id of the "bos" or "eos" token (a raw tokenizer: `<|endoftext|>`), or None."""
        if self.raw:
            return self.tok.token_to_id("<|endoftext|>")
        return getattr(self.tok, f"{what}_token_id", None)


def cuts_at_whitespace(backend: Any) -> bool:
    """Whether a `tokenizers.Tokenizer` tokenises text in pieces that always end before whitespace following a
    non-space: a BPE model without dropout, no normaliser or NFC (whitespace composes with nothing), GPT-2's
    byte-level regex pre-tokeniser without an added prefix space, no truncation or padding set on the backend
    (they would act on each piece), and no added token that could reach across such a cut (one with a non-space
    followed by whitespace, or stripping or matching whole words). False for anything else, or for a tokenizer
    without a `tokenizers` backend. Cheap (the backend's current settings, a few microseconds): `encode` asks at
    every call, so a tokenizer changed after the engine was built is seen."""
    try:
        pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
        normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else None
        model, added = backend.model, backend.get_added_tokens_decoder().values()
        settings = (backend.truncation, backend.padding)
    except (AttributeError, TypeError, ValueError):
        return False
    if normalizer is not None and normalizer.get("type") != "NFC":
        return False
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        return False
    if type(model).__name__ != "BPE" or getattr(model, "dropout", None) or any(v is not None for v in settings):
        return False
    return not any(t.lstrip or t.rstrip or t.single_word or re.search(r"\S\s", t.content) for t in added)
