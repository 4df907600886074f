"""Issue 15 item 10 (tokenizer / ids): lone surrogates, small integer id dtypes and the empty batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import random_model, tiny_model
from workbench import Tokenizer
from workbench.inputs import as_prompts, as_token_batch, integer_ids


@pytest.fixture(scope="module")
def tok(neox_tokenizer_file) -> Tokenizer:
    return Tokenizer.from_file(neox_tokenizer_file)


# ---- lone surrogates: not valid Unicode; the backend's bare TypeError becomes a ValueError naming the text ---------
@pytest.mark.parametrize("text, where, index", [("\ud800", "text", 0), ("ab\udfffc", "text", 2),
                                               (["ok", "x\ud83d"], r"text\[1\]", 1)])
def test_lone_surrogate_is_a_value_error_naming_text_and_index(tok, text, where, index):
    with pytest.raises(ValueError, match=rf"{where} holds a lone surrogate .* at index {index}: it is not valid"):
        tok(text)


def test_lone_surrogate_through_every_encode_path(tok, neox_tokenizer_file):
    for call in (tok.encode, tok.tokenize, lambda t: tok([t], padding=True, return_tensors="pt")):
        with pytest.raises(ValueError, match="lone surrogate"):
            call("a\ud800")
    model = random_model(str(neox_tokenizer_file))
    with pytest.raises(ValueError, match="lone surrogate"):
        model.to_tokens("a\ud800")
    with pytest.raises(ValueError, match="lone surrogate"):
        model.generate(["fine", "bad \udc00"], max_new_tokens=1)


def test_valid_astral_text_still_encodes(tok):
    assert tok.decode(tok.encode("emoji \U0001f600 ok")) == "emoji \U0001f600 ok"


# ---- id dtypes: every integer dtype is cast to int64; bool / floating / complex name the dtype ----------------------
@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_integer_id_dtypes_are_accepted_as_int64(dtype):
    model = tiny_model()
    ids = torch.tensor([[1, 5, 127]])
    with torch.no_grad():
        expected = model(ids).logits
        logits, cache = model.run_with_cache(ids.to(dtype), names_filter="hook_embed")
    assert torch.equal(logits, expected)
    assert as_token_batch(model, ids.to(dtype))[0].dtype == torch.long
    assert integer_ids(np.array([1, 2], dtype=np.uint16)).tolist() == [1, 2]


def test_int8_id_out_of_range_says_so():
    """int8 ids used to be compared in int8 (128 wrapped): 3 was reported "out of range" for a 128-token vocab."""
    model = tiny_model()
    with torch.no_grad():
        model.run_with_cache(torch.tensor([[3, 127]], dtype=torch.int8))
    with pytest.raises(ValueError, match=r"token id 200 is out of range: ids must be in \[0, 127\]"):
        model.run_with_cache(torch.tensor([[3, 200]], dtype=torch.uint8))


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.float16, torch.complex64])
def test_non_integer_id_dtypes_name_the_dtype(dtype, neox_tokenizer_file):
    model = random_model(str(neox_tokenizer_file))
    ids = torch.tensor([[1, 0]]).to(dtype)
    for call in (lambda: model.run_with_cache(ids), lambda: model.generate(ids, max_new_tokens=1),
                 lambda: as_prompts(model, ids)):
        with pytest.raises(TypeError, match=rf"token ids must have an integer dtype .*got {dtype}"):
            call()


def test_decode_takes_every_integer_dtype_and_names_non_integers(tok):
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32):
        assert tok.decode(torch.tensor([17, 100], dtype=dtype)) == tok.decode([17, 100])
    assert tok.decode([np.int64(510), np.int32(3158)]) == tok.decode([510, 3158])
    with pytest.raises(TypeError, match=r"token ids must be ints, got float 1.0"):
        tok.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"token ids must be ints, got bool True"):
        tok.decode([True])
    with pytest.raises(ValueError, match=r"token ids \[-1\] are not ints in \[0, 50277\)"):
        tok.decode(torch.tensor([-1], dtype=torch.int8))


# ---- the empty batch: [0, 0] tensors (transformers 5's GPTNeoXTokenizer raises IndexError here) --------------------
@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_empty_batch_gives_empty_tensors(tok, return_tensors):
    enc = tok([], return_tensors=return_tensors, padding=True)
    assert tuple(enc["input_ids"].shape) == (0, 0) and tuple(enc["attention_mask"].shape) == (0, 0)
    assert str(enc["input_ids"].dtype).endswith("int64")
    padded = tok([], return_tensors=return_tensors, padding="max_length", max_length=5)
    assert tuple(padded["input_ids"].shape) == (0, 5)


def test_empty_batch_without_tensors(tok):
    assert tok([]) == {"input_ids": [], "attention_mask": []}
