"""Issue 15 item 7: what a hook returns is checked (shape, device, dtype), and pos_slice positions are in range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import random_tokens, tiny_model

SITE = "blocks.0.hook_resid_pre"
IDS = random_tokens(batch=2, pos=8)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def run(model, fn, name: str = SITE, **kwargs):
    with torch.no_grad():
        return model.run_with_hooks(IDS, fwd_hooks=[(name, fn)], **kwargs).logits


@pytest.mark.parametrize("make, shape", [
    (lambda x: torch.tensor(0.0), r"\(\)"),
    (lambda x: x[:, :2], r"\(2, 2, 64\)"),
    (lambda x: x[:1], r"\(1, 8, 64\)"),  # broadcastable over the batch: still refused
    (lambda x: x[..., None], r"\(2, 8, 64, 1\)"),
    (lambda x: x.transpose(0, 1), r"\(8, 2, 64\)"),
], ids=["scalar", "fewer positions", "batch of one", "extra dim", "transposed"])
def test_another_shape_names_the_hook_point_and_both_shapes(model, make, shape):
    with pytest.raises(ValueError, match=rf"hook function on {SITE} returned shape {shape}, but the activation has "
                                         r"shape \(2, 8, 64\)"):
        run(model, lambda x, hook: make(x))


@pytest.mark.parametrize("value", [3.0, 0, [1.0], "x", np.zeros((2, 8, 64))], ids=repr)
def test_non_tensors_are_refused(model, value):
    with pytest.raises(TypeError, match=rf"hook function on {SITE} returned .*return a Tensor"):
        run(model, lambda x, hook: value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_dtypes_are_refused(model, dtype):
    with pytest.raises(TypeError, match=rf"hook function on {SITE} returned dtype {dtype} for a torch.float32"):
        run(model, lambda x, hook: x.to(dtype))


def test_another_floating_dtype_is_cast_back(model):
    doubled = run(model, lambda x, hook: x * 2)
    assert torch.equal(run(model, lambda x, hook: x.double() * 2), doubled)  # x * 2 is exact in both dtypes
    half = run(model, lambda x, hook: x.half())
    assert torch.equal(half, run(model, lambda x, hook: x.half().float()))


def test_a_bfloat16_model_takes_float32_returns():
    model = tiny_model().to(torch.bfloat16)
    seen = []
    with torch.no_grad():
        logits = model.run_with_hooks(IDS, fwd_hooks=[(SITE, lambda x, hook: x.float() + 1)]).logits
        model.run_with_hooks(IDS, fwd_hooks=[("blocks.1.hook_resid_pre", lambda x, hook: seen.append(x.dtype))])
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all() and seen == [torch.bfloat16]


def test_another_device_is_refused(model):
    with pytest.raises(ValueError, match=rf"hook function on {SITE} returned a tensor on meta, but the activation "
                                         r"is on cpu; move it there with .to\('cpu'\)"):
        run(model, lambda x, hook: torch.zeros_like(x, device="meta"))


def test_gradient_hooks_are_checked_too(model):
    ids = random_tokens(batch=1, pos=5)
    out = model.run_with_hooks(ids, labels=ids, bwd_hooks=[(SITE, lambda g, hook: g[0])], reset_hooks_end=False)
    try:
        with pytest.raises(ValueError, match=rf"hook function on {SITE} returned shape \(5, 64\), but the gradient "
                                             r"has shape \(1, 5, 64\)"):
            out.loss.backward()
    finally:
        model.reset_hooks()


def test_a_float64_gradient_is_cast_back(model):
    ids = random_tokens(batch=1, pos=5)
    grads = {}

    def grad_of_embed(ret):
        model.zero_grad()
        out = model.run_with_hooks(ids, labels=ids, bwd_hooks=[(SITE, ret)], reset_hooks_end=False)
        try:
            out.loss.backward()
        finally:
            model.reset_hooks()
        return model.gpt_neox.embed_in.weight.grad.clone()

    grads["double"] = grad_of_embed(lambda g, hook: g.double() * 2)
    grads["float"] = grad_of_embed(lambda g, hook: g * 2)
    model.zero_grad()
    assert torch.equal(grads["double"], grads["float"])


def test_returning_the_input_itself_is_not_a_replacement():
    """Observe semantics: the very same object back counts as "not replaced", so an sdpa model keeps its fused
    kernel and its logits stay bit-identical at every site; a clone routes the forward through the hooked value."""
    model = tiny_model(attn_implementation="sdpa")
    with torch.no_grad():
        plain = model(IDS).logits
        assert torch.equal(run(model, lambda x, hook: x, name=lambda n: True), plain)
        cloned = run(model, lambda x, hook: x.clone(), name="blocks.0.attn.hook_pattern")
    torch.testing.assert_close(cloned, plain)


# ---- pos_slice --------------------------------------------------------------------------------------------------
def cached(model, pos_slice, name: str = SITE) -> torch.Tensor:
    with torch.no_grad():
        return model.run_with_cache(IDS, names_filter=name, pos_slice=pos_slice)[1][name]


@pytest.mark.parametrize("pos_slice", [[100], 100, torch.tensor([100]), [0, 8], -9, [-9], np.array([3, 42])],
                         ids=repr)
def test_out_of_range_positions_raise(model, pos_slice):
    with pytest.raises(IndexError, match=r"pos_slice .* is out of range for 8 positions \(allowed: -8 to 7\)"):
        cached(model, pos_slice)


def test_out_of_range_query_positions_of_the_pattern(model):
    with pytest.raises(IndexError, match=r"pos_slice \[8\] is out of range for 8 positions"):
        cached(model, [8], "blocks.0.attn.hook_pattern")


def test_in_range_positions_select_them(model):
    full = cached(model, None)
    assert torch.equal(cached(model, [-8, 7]), full[:, [0, 7]])
    assert torch.equal(cached(model, torch.tensor([3, -1], dtype=torch.int8)), full[:, [3, 7]])
    assert torch.equal(cached(model, np.int64(3)), full[:, 3]) and torch.equal(cached(model, -1), full[:, 7])
    assert cached(model, []).shape == (2, 0, 64)
    assert torch.equal(cached(model, slice(2, 100)), full[:, 2:])  # slices clip, as Python's do


@pytest.mark.parametrize("pos_slice, error, match", [
    (2.5, TypeError, "pos_slice must be an int, a slice or a 1-D list of int positions, got dtype torch.float32"),
    ([1.0, 2.0], TypeError, "got dtype torch.float32"),
    (True, TypeError, "pos_slice must be .*got True"),
    ("1", TypeError, "pos_slice must be .*got '1'"),
    ([[1, 2]], ValueError, r"pos_slice must be .*got shape \(1, 2\)"),
    ([1, [2]], TypeError, "pos_slice must be .*got list"),
    (slice(None, None, -1), ValueError, r"pos_slice slice\(None, None, -1\): the step must be >= 1"),
    (slice(0, 2.5), TypeError, "a slice's start, stop and step must be ints or None"),
], ids=repr)
def test_bad_pos_slice_types(model, pos_slice, error, match):
    with pytest.raises(error, match=match):
        cached(model, pos_slice)
