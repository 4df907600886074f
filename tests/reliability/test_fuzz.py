"""Property-based fuzz (issue 15, Acceptance): tokenizer inputs, token ids, `generate` arguments, hook return values
and `pos_slice` either work, giving a well-formed finite result, or raise ValueError / TypeError / KeyError (and
IndexError for positions) whose message names the argument; never another exception, a NaN or a hang.

Config fields are fuzzed with the config's own tests. Examples are few and unbounded in time (`deadline=None`),
so the module fits a shared 2-core CI in a few seconds; nothing is written to disk (`database=None`).
"""

from __future__ import annotations

import unicodedata
import warnings
from typing import Any, Callable, Iterable

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a test dependency")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.helpers import random_tokens, tiny_model  # noqa: E402
from workbench import Tokenizer  # noqa: E402

FUZZ = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
CLEAR = (ValueError, TypeError, KeyError)


ERROR: list[BaseException] = []  # the error behind the last None of `outcome`


def outcome(call: Callable[[], Any], names: Iterable[str], allowed: tuple = CLEAR) -> Any:
    """`call()`'s result, or None after an error of `allowed` type whose message names one of `names` (then the
    error is `ERROR[0]`)."""
    names = list(names)
    ERROR.clear()
    try:
        return call()
    except allowed as error:
        message = str(error)
        assert any(n in message for n in names), f"{type(error).__name__} names none of {names}: {message}"
        ERROR.append(error)
        return None
    except Exception as error:  # noqa: BLE001 - the point: no other exception type escapes
        pytest.fail(f"{type(error).__name__} (not one of {[e.__name__ for e in allowed]}): {error}")


@pytest.fixture(scope="module")
def tok(neox_tokenizer_file) -> Tokenizer:
    return Tokenizer.from_file(neox_tokenizer_file)


MODEL = tiny_model(max_position_embeddings=8)  # vocab 128; generation here often runs past the 8 positions


@pytest.fixture(scope="module")
def model():
    return MODEL


# ---- tokenizer inputs ------------------------------------------------------------------------------------------
PIECES = st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\x7f", "\u202e", "\ufeff", "e\u0301", "\u2028",
                          "<|endoftext|>", "<|padding|>", "\r\n", "  ", "\t"])
TEXT = st.lists(st.one_of(st.text(st.characters(exclude_categories=()), max_size=6), PIECES), max_size=6).map("".join)
JUNK = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4), st.lists(st.integers(), max_size=3),
                 st.lists(st.lists(TEXT, max_size=2), min_size=1, max_size=2), st.dictionaries(TEXT, TEXT, max_size=1))
TEXT_INPUT = st.one_of(TEXT, st.lists(TEXT, max_size=4), st.tuples(TEXT, TEXT), st.lists(st.one_of(TEXT, JUNK),
                                                                                          max_size=3), JUNK)


def has_surrogate(text: Any) -> bool:
    """A str, or a list / tuple holding a str, with a lone surrogate in it."""
    items = [text] if isinstance(text, str) else text if isinstance(text, (list, tuple)) else []
    return any(0xD800 <= ord(c) <= 0xDFFF for t in items if isinstance(t, str) for c in t)


def text_only(text: Any) -> bool:
    return isinstance(text, str) or isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)


@FUZZ
@example(text="a\ud800", padding=False, truncation=None, max_length=None, return_tensors=None)
@example(text=[], padding=True, truncation=None, max_length=None, return_tensors="pt")
@given(text=TEXT_INPUT, padding=st.sampled_from([False, True, "longest", "max_length", "sideways"]),
       truncation=st.sampled_from([None, True, False, "only_first", "nope"]),
       max_length=st.one_of(st.none(), st.integers(-1, 12), st.just(2.5)),
       return_tensors=st.sampled_from([None, "pt", "np", "tf"]))
def test_tokenizer_call(tok, text, padding, truncation, max_length, return_tensors):
    kwargs = dict(padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors)
    names = ["text", "padding", "truncation", "max_length", "return_tensors"]
    enc = outcome(lambda: tok(text, **kwargs), names)
    if enc is None:
        error = ERROR[0]
        if text_only(text) and has_surrogate(text) and outcome(lambda: tok("ok", **kwargs), names) is not None:
            assert "lone surrogate" in str(error), f"the other arguments are fine, yet: {error}"
        return
    assert not has_surrogate(text)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if return_tensors is not None:
        assert ids.shape == mask.shape and ids.ndim == 2 and ids.shape[0] == len(text if not isinstance(text, str)
                                                                                else [text])
    flat = np.asarray(ids, dtype=np.int64).reshape(-1) if return_tensors else np.asarray(
        [i for row in (ids if ids and isinstance(ids[0], list) else [ids]) for i in row], dtype=np.int64)
    assert ((flat >= 0) & (flat < len(tok))).all()
    plain = padding is False and max_length is None and truncation in (None, False) and return_tensors is None
    if isinstance(text, str) and plain:
        assert tok.decode(ids) == unicodedata.normalize("NFC", text)  # nothing lost, nothing added


@FUZZ
@example(text="\udfff")
@given(text=TEXT_INPUT)
def test_encode_and_tokenize(tok, text):
    for call in (tok.encode, tok.tokenize):
        result = outcome(lambda: call(text), ["text", "encode", "tokenize"])
        assert result is None or isinstance(result, list)
        if isinstance(text, str):  # one string: it encodes unless it holds a lone surrogate
            assert (result is None) == has_surrogate(text)
            assert result is not None or isinstance(ERROR[0], ValueError) and "lone surrogate" in str(ERROR[0])


# ---- token ids -------------------------------------------------------------------------------------------------
ID_DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool, torch.float16,
             torch.float32, torch.complex64]
SHAPES = [(), (0,), (4,), (2, 3), (1, 0), (0, 3), (1, 3, 1)]


@st.composite
def token_ids(draw) -> tuple[Any, bool]:
    """(ids as a tensor, an array or a list; whether the model must accept them)."""
    shape = draw(st.sampled_from(SHAPES))
    values = draw(st.lists(st.integers(-3, 140), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    dtype = draw(st.sampled_from(ID_DTYPES))
    ids = torch.tensor(values, dtype=torch.long).reshape(shape).to(dtype)
    integer = not (dtype == torch.bool or dtype.is_floating_point or dtype.is_complex)
    valid = integer and shape in ((4,), (2, 3)) and bool(((ids.long() >= 0) & (ids.long() < 128)).all())
    form = draw(st.sampled_from(["tensor", "numpy", "list"]))
    if form == "list" and len(shape) != 1:
        valid = False  # lists are 1-D prompts only
    return (ids if form == "tensor" else ids.numpy() if form == "numpy" else ids.tolist()), valid


@FUZZ
@example(case=(torch.tensor([[1, 2, 127]], dtype=torch.int8), True))
@example(case=(torch.tensor([[1, 2, 127]], dtype=torch.uint8), True))
@given(case=token_ids())
def test_token_ids_into_the_model_and_the_tokenizer(model, tok, case):
    ids, valid = case
    names = ["token id", "inputs", "input_ids", "batch_decode", "sequence"]
    with torch.no_grad():
        result = outcome(lambda: model.run_with_cache(ids, names_filter="hook_embed"), names)
    assert (result is not None) == valid, f"valid={valid} but {'it failed' if valid else 'it ran'}"
    if result is not None:
        logits, cache = result
        expected = model(torch.as_tensor(ids).long().reshape(-1, torch.as_tensor(ids).shape[-1])).logits
        assert torch.isfinite(logits).all() and torch.equal(logits, expected)
    for decode in (tok.decode, tok.batch_decode):
        text = outcome(lambda: decode(ids), names)
        assert text is None or isinstance(text, (str, list))


# ---- generate arguments ----------------------------------------------------------------------------------------
NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 3), st.booleans(), st.just("1"))
INTEGER = st.one_of(st.integers(-2, 10), st.floats(-1, 11), st.booleans(), st.just("3"), st.just(np.int64(4)))
TOKEN = st.one_of(st.integers(-3, 140), st.floats(-1, 140), st.just("2"), st.booleans())
GENERATE_ARGS = st.fixed_dictionaries({}, optional={
    "max_new_tokens": INTEGER, "max_length": st.one_of(INTEGER, st.integers(3, 14)), "min_new_tokens": INTEGER,
    "do_sample": st.one_of(st.booleans(), st.just("yes"), st.integers(0, 1)), "temperature": NUMBER,
    "top_k": st.one_of(st.none(), INTEGER, st.integers(100, 200)), "top_p": st.one_of(st.none(), NUMBER),
    "eos_token_id": st.one_of(st.none(), TOKEN, st.lists(TOKEN, max_size=3)),
    "pad_token_id": st.one_of(st.none(), TOKEN), "repetition_penalty": NUMBER,
    "no_repeat_ngram_size": INTEGER, "seed": st.one_of(st.none(), st.integers(-2, 2**64), st.floats()),
    "stop_strings": st.one_of(st.none(), st.just("x"), st.lists(st.text(max_size=2), max_size=2)),
})


@FUZZ
@example(kwargs={"max_new_tokens": 2.5}, batch=1, pos=3)
@example(kwargs={"eos_token_id": 1.7}, batch=1, pos=3)
@example(kwargs={"eos_token_id": [0, 500]}, batch=1, pos=3)
@example(kwargs={"max_new_tokens": 12, "eos_token_id": []}, batch=2, pos=4)  # past the 8 positions
@given(kwargs=GENERATE_ARGS, batch=st.integers(1, 2), pos=st.integers(1, 4))
def test_generate_arguments(model, kwargs, batch, pos):
    prompt = random_tokens(batch=batch, pos=pos, vocab=128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = outcome(lambda: model.generate(prompt, **kwargs), list(kwargs) + ["max_length"])
    assert all("max_position_embeddings (8)" in str(w.message) for w in caught), [str(w.message) for w in caught]
    if out is None:
        return
    assert out.dtype == torch.long and out.shape[0] == batch and out.shape[1] > pos
    assert torch.equal(out[:, :pos], prompt) and int(out.min()) >= 0 and int(out.max()) < 128


# ---- hook return values ----------------------------------------------------------------------------------------
RETURNS: dict[str, Callable[[torch.Tensor], Any]] = {
    "none": lambda x: None, "itself": lambda x: x, "clone": lambda x: x.clone(), "halved": lambda x: x * 0.5,
    "float16": lambda x: x.half(), "bfloat16": lambda x: x.bfloat16(), "float64": lambda x: x.double(),
    "int64": lambda x: x.long(), "bool": lambda x: x > 0, "complex": lambda x: x.to(torch.complex64),
    "scalar": lambda x: torch.tensor(1.0), "float": lambda x: 1.0, "int": lambda x: 1, "str": lambda x: "x",
    "list": lambda x: x.tolist(), "numpy": lambda x: x.numpy(), "tuple": lambda x: (x,), "flat": lambda x: x.flatten(),
    "transposed": lambda x: x.transpose(-1, -2), "first row": lambda x: x[:1], "unsqueezed": lambda x: x[None],
    "meta": lambda x: torch.empty_like(x, device="meta"), "in place": lambda x: x.mul_(0.5),
}


VALID_RETURNS = {"none", "itself", "clone", "halved", "float16", "bfloat16", "float64", "in place"}
SAME_AS_PLAIN = {"none", "itself", "clone"}


@FUZZ
@example(name="blocks.0.hook_resid_pre", kind="scalar")
@example(name="blocks.1.attn.hook_pattern", kind="float64")
@given(name=st.sampled_from(MODEL.hook_names()), kind=st.sampled_from(sorted(RETURNS)))
def test_hook_return_values(model, name, kind):
    ids = random_tokens(batch=2, pos=5)
    with torch.no_grad():
        logits = outcome(lambda: model.run_with_hooks(ids, fwd_hooks=[(name, lambda x, hook: RETURNS[kind](x))]).logits,
                         [name])
        plain = model(ids).logits
    if kind in VALID_RETURNS:
        assert logits is not None, f"{kind} is a valid return at {name}"
    if kind in SAME_AS_PLAIN:
        torch.testing.assert_close(logits, plain)
    if logits is not None:
        assert logits.shape == (2, 5, 128) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


POSITIONS = st.one_of(st.none(), st.integers(-12, 12), st.lists(st.integers(-12, 12), max_size=3),
                      st.builds(slice, st.none() | st.integers(-12, 12), st.none() | st.integers(-12, 12),
                                st.none() | st.integers(-2, 3)),
                      st.floats(), st.booleans(), st.text(max_size=2), st.lists(st.lists(st.integers(0, 3))))


@FUZZ
@example(pos_slice=[100], form="as is")
@example(pos_slice=[-10, 3], form="tensor")
@given(pos_slice=POSITIONS, form=st.sampled_from(["as is", "tensor", "numpy"]))
def test_pos_slice(model, pos_slice, form):
    if form != "as is" and isinstance(pos_slice, list) and all(isinstance(i, int) for i in pos_slice):
        pos_slice = torch.tensor(pos_slice, dtype=torch.long) if form == "tensor" else np.array(pos_slice, dtype=int)
    name = "blocks.0.attn.hook_pattern"  # [batch, head, query_pos, key_pos]: positions are dim 2
    with torch.no_grad():
        full = model.run_with_cache(random_tokens(batch=1, pos=9), names_filter=name)[1][name]
        result = outcome(lambda: model.run_with_cache(random_tokens(batch=1, pos=9), pos_slice=pos_slice,
                                                      names_filter=name), ["pos_slice"], allowed=CLEAR + (IndexError,))
    positions = pos_slice.tolist() if hasattr(pos_slice, "tolist") else pos_slice
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if isinstance(positions, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in positions):
        if all(-9 <= i < 9 for i in positions):  # in range: exactly those query positions
            assert result is not None
            got = result[1][name]
            assert torch.equal(got if got.dim() == 4 else got.unsqueeze(2), full[:, :, positions])
        else:
            assert result is None, f"out-of-range positions {positions} on 9 tokens were accepted"
