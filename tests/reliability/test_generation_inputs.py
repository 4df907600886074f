"""Issue 15 item 6: `generate` gives one clear error (or, past the position limit, one warning) for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.helpers import random_model, tiny_model
from workbench.generation import _stop_strings

PROMPT = torch.tensor([[5, 6, 7]])


@pytest.fixture(scope="module")
def model():
    return tiny_model()  # vocab 128, 128 positions, eos 0


def test_generating_past_max_position_embeddings_warns_once_where_transformers_does():
    """transformers' MaxLengthCriteria warns once a forward runs at position max_position_embeddings: here
    3 prompt tokens + 15 new ones on a 16-position model (the 16th forward sees position 16); 14 are silent."""
    model = tiny_model(max_position_embeddings=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.generate(PROMPT, max_new_tokens=14, eos_token_id=[]).shape == (1, 17)
    with pytest.warns(UserWarning, match=r"max_position_embeddings \(16\)") as caught:
        out = model.generate(PROMPT, max_new_tokens=40, eos_token_id=[])
    assert out.shape == (1, 43) and len(caught) == 1  # generation goes on; one warning per call


def test_a_prompt_longer_than_the_position_limit_warns_at_once():
    model = tiny_model(max_position_embeddings=4)
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        model.generate(torch.arange(1, 7)[None], max_new_tokens=1, eos_token_id=[])


def test_empty_prompt_in_a_text_batch_is_named(neox_tokenizer_file):
    model = random_model(str(neox_tokenizer_file))
    with pytest.raises(ValueError, match=r"prompt 1 '' has no tokens"):
        model.generate(["hello there", ""], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"prompt 0 '' has no tokens"):
        model.generate("", max_new_tokens=2)


def test_all_padding_row_of_ids_is_named(model):
    ids = torch.tensor([[1, 2, 3], [0, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"prompt 1 has no tokens"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2)


@pytest.mark.parametrize("name", ["max_new_tokens", "max_length", "min_new_tokens", "top_k", "no_repeat_ngram_size"])
@pytest.mark.parametrize("value", [2.5, 2.0, "2", True, -1], ids=repr)
def test_integer_arguments_must_be_ints(model, name, value):
    kwargs = {"max_new_tokens": 4} if name not in ("max_new_tokens", "max_length") else {}
    kwargs[name] = value
    with pytest.raises(ValueError, match=rf"{name} must be .*got {value!r}"):
        model.generate(PROMPT, do_sample=name == "top_k", **kwargs)


def test_max_new_tokens_two_and_a_half_does_not_generate_two(model):
    with pytest.raises(ValueError, match=r"max_new_tokens must be a positive int, got 2.5"):
        model.generate(PROMPT, max_new_tokens=2.5)


def test_numpy_and_tensor_integers_are_accepted(model):
    expected = model.generate(PROMPT, max_new_tokens=3, eos_token_id=[])
    assert torch.equal(model.generate(PROMPT, max_new_tokens=np.int64(3), eos_token_id=[]), expected)
    assert torch.equal(model.generate(PROMPT, max_new_tokens=torch.tensor(3), eos_token_id=torch.tensor([])),
                       expected)


def test_max_length_not_above_the_prompt(model):
    with pytest.raises(ValueError, match=r"nothing to generate: max_length=3 but the prompt has 3 tokens"):
        model.generate(PROMPT, max_length=3)


@pytest.mark.parametrize("eos", [128, -1, [0, 500], 10**30])
def test_eos_ids_outside_the_vocabulary(model, eos):
    bad = eos[-1] if isinstance(eos, list) else eos
    with pytest.raises(ValueError, match=rf"eos_token_id must be an int in \[0, 128\) .*got {bad}"):
        model.generate(PROMPT, max_new_tokens=2, eos_token_id=eos)


@pytest.mark.parametrize("name", ["eos_token_id", "pad_token_id"])
@pytest.mark.parametrize("value", [1.7, "2", [1.0], True], ids=repr)
def test_non_integer_eos_and_pad_ids(model, name, value):
    with pytest.raises(ValueError, match=rf"{name} must be an int in \[0, 128\)"):
        model.generate(PROMPT, max_new_tokens=2, **{name: value})


def test_pad_id_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match=r"pad_token_id must be an int in \[0, 128\) .*got 128"):
        model.generate(PROMPT, max_new_tokens=2, pad_token_id=128)


def test_eos_ids_as_a_tensor(model):
    assert torch.equal(model.generate(PROMPT, max_new_tokens=4, eos_token_id=torch.tensor([0, 3])),
                       model.generate(PROMPT, max_new_tokens=4, eos_token_id=[0, 3]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=float("nan")), r"temperature must be > 0, got nan"),
    (dict(temperature="1"), r"temperature must be > 0, got '1'"),
    (dict(temperature=True), r"temperature must be > 0, got True"),
    (dict(top_p=float("nan")), r"top_p must be in \(0, 1\], got nan"),
    (dict(top_p="0.5"), r"top_p must be in \(0, 1\]"),
    (dict(repetition_penalty=float("nan")), r"repetition_penalty must be a number > 0"),
    (dict(repetition_penalty=10**400), r"repetition_penalty must be a number > 0"),
    (dict(do_sample="yes"), r"do_sample must be True or False, got 'yes'"),
    (dict(seed=1.5), r"seed must be an int"),
    (dict(stop_strings=[3]), r"stop_strings must be a str or a list of str"),
])
def test_bad_real_and_flag_arguments(model, kwargs, match):
    kwargs.setdefault("do_sample", True)
    with pytest.raises(ValueError, match=match):
        model.generate(PROMPT, max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, float("inf")])
def test_extreme_temperatures_sample_valid_tokens(model, temperature):
    out = model.generate(PROMPT, max_new_tokens=6, do_sample=True, temperature=temperature, seed=0,
                         no_repeat_ngram_size=2, eos_token_id=[])
    assert out.shape == (1, 9) and int(out.min()) >= 0 and int(out.max()) < 128


def test_a_tiny_temperature_samples_the_greedy_token(model):
    greedy = model.generate(PROMPT, max_new_tokens=5, eos_token_id=[])
    assert torch.equal(model.generate(PROMPT, max_new_tokens=5, eos_token_id=[], do_sample=True,
                                      temperature=1e-30, seed=0), greedy)


@pytest.mark.parametrize("do_sample", [False, True])
def test_every_token_banned_is_a_clear_error(do_sample):
    model = tiny_model(vocab_size=8)
    with pytest.raises(ValueError, match=r"at new token 6, row 0 has no allowed token left: no_repeat_ngram_size"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=10, no_repeat_ngram_size=1, eos_token_id=[],
                       do_sample=do_sample, seed=0)


def test_one_stop_string_is_not_split_into_characters():
    assert _stop_strings("END") == ["END"]
    assert _stop_strings(["END", ""]) == ["END"] and _stop_strings(None) == []


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_small_integer_prompt_dtypes_generate_as_int64(model, dtype):
    expected = model.generate(PROMPT, max_new_tokens=3)
    got = model.generate(PROMPT.to(dtype), max_new_tokens=3)
    assert got.dtype == torch.long and torch.equal(got, expected)


def test_new_processors_still_work_with_valid_arguments(model):
    out = model.generate(PROMPT, max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=6)
    assert out.shape == (1, 9) and not bool((out[0, 3:] == 0).any())
