"""workbench.inputs: the one text-or-ids normalisation and token-string function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import random_model, tiny_model
from workbench.inputs import as_prompts, as_token_batch, token_strings

TEXT = "The quick brown fox jumps over the lazy dog. The quick brown fox"


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return random_model(str(neox_tokenizer_file), n_layers=3, n_heads=4, d_model=32)


def test_as_prompts_accepts_text_ids_and_batches(model):
    tok_ids = model.tokenizer.encode(TEXT)
    from_text = as_prompts(model, TEXT)
    assert from_text[0].ids == tok_ids
    assert "".join(from_text[0].tokens) == TEXT  # one piece per position, nothing lost
    assert as_prompts(model, tok_ids)[0].ids == tok_ids
    assert [p.ids for p in as_prompts(model, torch.tensor([tok_ids, tok_ids]))] == [tok_ids, tok_ids]
    assert [p.ids for p in as_prompts(model, np.array([tok_ids]))] == [tok_ids]
    assert len(as_prompts(model, ["a b", "c d e"])) == 2


@pytest.mark.parametrize("bad, err", [(3.5, TypeError), ([], TypeError), ("", ValueError),
                                      (np.zeros((2, 2, 2), dtype=np.int64), ValueError)])
def test_as_prompts_rejects_bad_input(model, bad, err):
    with pytest.raises(err):
        as_prompts(model, bad)


def test_as_token_batch_pads_texts_and_keeps_ids(model):
    ids, mask = as_token_batch(model, ["a b c d", "a"])
    assert ids.shape == mask.shape and ids.shape[0] == 2 and int(mask[1].sum()) == 1
    ids, mask = as_token_batch(model, TEXT)
    assert mask is None and ids[0].tolist() == model.tokenizer.encode(TEXT)  # nothing padded: no mask
    same, mask = as_token_batch(model, ids[0])
    assert torch.equal(same, ids) and mask is None
    with pytest.raises(ValueError, match="attention_mask has shape"):
        as_token_batch(model, ids, attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"\[batch, pos\]"):
        as_token_batch(model, ids[None])
    with pytest.raises(TypeError, match="inputs must be"):
        as_token_batch(model, 3.5)
    with pytest.raises(ValueError, match="no tokenizer"):
        as_token_batch(tiny_model(), "text without a tokenizer")


def test_token_strings_are_to_str_tokens_and_readable_for_display(model):
    ids = model.tokenizer.encode("héllo ✓ wörld")
    assert token_strings(model.tokenizer, ids) == model.to_str_tokens(torch.tensor(ids))
    readable = token_strings(model.tokenizer, ids, readable=True)
    assert all(s and "\ufffd" not in s for s in readable)
    assert token_strings(None, [5, 7]) == ["#5", "#7"]
