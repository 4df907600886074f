"""Tokenising in pieces (`workbench.evals.tokenizer_adapter`): the same ids as tokenising whole texts."""

from __future__ import annotations

import json

import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench
from workbench.evals.engine import RequestEngine
from workbench.evals.tokenizer_adapter import TokenizerAdapter, cuts_at_whitespace
from workbench.tokenizer import Tokenizer

# letters, digits, punctuation, ASCII and Unicode whitespace, a combining accent, CJK, emoji, control characters
# and the special token: what could make a cut reach across a piece
ALPHABET = list("aZé9.,:;'!?-_()") + [" ", "  ", "\n", "\n\n", "\t", "\r", "\u00a0", "\u2028", "\u0301", "\u4e2d",
                                      "\U0001f642", "\x0b", "\x1c", "<|endoftext|>", "'s", "Answer:", " A"]
text = st.lists(st.sampled_from(ALPHABET), max_size=30).map("".join)


@pytest.fixture(scope="module", params=["neox20b", "demo"])
def adapter(request, neox_tokenizer_file) -> TokenizerAdapter:
    path = neox_tokenizer_file if request.param == "neox20b" else workbench.demo_path() / "tokenizer.json"
    return TokenizerAdapter(Tokenizer.from_file(path))


def _whole(adapter: TokenizerAdapter, texts: list[str]) -> list[list[int]]:
    return adapter._encode(texts)  # the tokeniser called on each whole text


def test_gpt_neox_tokenizers_cut_at_whitespace(adapter, neox_tokenizer_file):
    assert adapter.cuts
    assert TokenizerAdapter(tokenizers.Tokenizer.from_file(str(neox_tokenizer_file))).cuts  # a raw backend too


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(text, min_size=1, max_size=6))
def test_encoding_line_by_line_gives_the_whole_texts_ids(adapter, texts):
    assert adapter.encode(texts) == _whole(adapter, texts)


@settings(max_examples=300, deadline=None)
@given(context=text, continuation=text)
def test_a_split_continuation_has_the_ids_of_its_whole(adapter, context, continuation):
    if adapter.splits(context, continuation):
        whole = _whole(adapter, [context + continuation])[0]
        assert whole == _whole(adapter, [context])[0] + _whole(adapter, [continuation])[0]


def test_splits_only_at_a_non_space_then_ascii_whitespace(adapter):
    assert adapter.splits("Answer:", " A") and adapter.splits("x", "\nA")
    assert not adapter.splits("Answer: ", "A")  # the context ends in whitespace
    assert not adapter.splits("Answer:", "A")  # the continuation starts with a non-space
    assert not adapter.splits("", " A")
    assert not adapter.splits("x", "\u00a0A")  # Unicode whitespace: not relied on


def test_few_shot_pairs_match_the_whole_text_rule(adapter):
    """lm-eval's rule (continuation ids = encode(context + continuation) after encode(context)) on few-shot prompts:
    the same pairs with and without pieces."""
    shots = "".join(f"Question: what is {i} + {i}?\nA. {i}\nB. {2 * i}\nAnswer: B\n\n" for i in range(5))
    requests = [(shots + f"Question: q{j}?\nAnswer:", c) for j in range(3) for c in (" A", " B", "C", " éé\n")]
    requests += [("", " lonely"), ("ends in space ", "x"), ("Q:\n", "  two")]
    engine = RequestEngine.__new__(RequestEngine)
    engine.tok, engine.prefix_id = adapter, 0
    with_pieces = engine.encode_pairs(requests)
    engine.tok = TokenizerAdapter(adapter.tok)
    engine.tok.backend = None  # no backend to inspect: whole texts
    assert not engine.tok.cuts
    assert with_pieces == engine.encode_pairs(requests)


def _with(backend_json: dict) -> bool:
    return cuts_at_whitespace(tokenizers.Tokenizer.from_str(json.dumps(backend_json)))


def test_tokenisers_that_could_reach_across_a_cut_are_called_whole(neox_tokenizer_file):
    base = json.loads(neox_tokenizer_file.read_text())
    assert _with(base)
    prefix_space = {**base, "pre_tokenizer": {**base["pre_tokenizer"], "add_prefix_space": True}}
    spanning = {**base, "added_tokens": base["added_tokens"] + [
        {**base["added_tokens"][0], "id": 50277, "content": "end of", "special": False}]}
    stripping = {**base, "added_tokens": [{**base["added_tokens"][0], "rstrip": True}] + base["added_tokens"][1:]}
    whitespace = {**base, "pre_tokenizer": {"type": "Whitespace"}}
    lowercase = {**base, "normalizer": {"type": "Lowercase"}}
    for config in (prefix_space, spanning, stripping, whitespace, lowercase):
        assert not _with(config)
    assert not cuts_at_whitespace(object())  # no tokenizers backend


def test_backend_truncation_or_padding_turns_pieces_off(neox_tokenizer_file):
    """A raw backend with truncation or padding set would apply it to every piece: whole texts then."""
    texts = ["Question: one\nAnswer: two\nthree four five six seven eight", "short"]
    for configure in (lambda t: t.enable_truncation(8), lambda t: t.enable_padding(pad_id=1)):
        raw = tokenizers.Tokenizer.from_file(str(neox_tokenizer_file))
        configure(raw)
        adapter = TokenizerAdapter(raw)
        assert not adapter.cuts
        assert adapter.encode(texts) == [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]


def test_a_tokenizer_changed_after_the_adapter_was_made_is_seen(neox_tokenizer_file):
    tok = Tokenizer.from_file(neox_tokenizer_file)
    adapter = TokenizerAdapter(tok)
    assert adapter.cuts
    tok.add_prefix_space = True  # every piece would now gain a space
    assert not adapter.cuts
    text = "Question: 1 + 1\nAnswer: 2"
    assert adapter.encode([text]) == _whole(adapter, [text])
