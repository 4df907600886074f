"""The ActivationCache methods TransformerLens users reach for, against TransformerLens 4.x's cache on a bridge
holding the same weights, and the workbench / TransformerLens `apply_ln` conventions."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_tokens, tiny_model

pytest.importorskip("transformers")
pytest.importorskip("transformer_lens")
from tests.test_transformer_lens_parity import bridge_for  # noqa: E402

ATOL = 1e-5


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def both(request):
    model = tiny_model(parallel=request.param, seed=41)
    bridge = bridge_for(model)
    ids = random_tokens(batch=2, pos=6, seed=3)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
        _, tl_cache = bridge.run_with_cache(ids)
    return model, ids, logits, cache, tl_cache


def _close(ours, theirs):
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kwargs", [{}, {"layer": 1}, {"layer": 2, "mlp_input": True}, {"expand_neurons": False},
                                    {"pos_slice": -1}, {"layer": 0}], ids=str)
def test_full_resid_decomposition(both, kwargs):
    model, _, _, cache, tl_cache = both
    ours, labels = cache.get_full_resid_decomposition(return_labels=True, **kwargs)
    layer = kwargs.get("layer", 3)
    parallel_mlp_input = kwargs.get("mlp_input") and model.config.use_parallel_residual
    if not parallel_mlp_input:
        theirs, tl_labels = tl_cache.get_full_resid_decomposition(return_labels=True, **kwargs)
        assert labels == tl_labels
        _close(ours, theirs)
        _close(cache.get_full_resid_decomposition(apply_ln=True, convention="transformer_lens", **kwargs),
               tl_cache.get_full_resid_decomposition(apply_ln=True, **kwargs))
    # The components sum to the residual read there; with a parallel residual the MLP reads resid_pre
    # (TransformerLens still adds the layer's heads there).
    if layer == 3:
        target = cache["resid_post", 2]
    elif kwargs.get("mlp_input") and not parallel_mlp_input:
        target = cache["resid_mid", layer]
    else:
        target = cache["resid_pre", layer]
    if "pos_slice" in kwargs:
        target = target[:, kwargs["pos_slice"]]
    _close(ours.sum(0), target)
    assert labels[-2:] == ["embed", "bias"] and (labels[0] == "L0H0" or layer == 0)


def test_full_resid_decomposition_with_ln_sums_to_the_normalised_residual(both):
    model, _, _, cache, _ = both
    ln = model.gpt_neox.final_layer_norm
    parts = cache.get_full_resid_decomposition(apply_ln=True)
    _close(parts.sum(0) + ln.bias, cache["ln_final.hook_normalized"] * ln.weight + ln.bias)
    folded = cache.get_full_resid_decomposition(apply_ln=True, convention="transformer_lens")
    _close(folded * ln.weight, parts)
    with pytest.raises(ValueError, match="convention"):
        cache.get_full_resid_decomposition(apply_ln=True, convention="hooked")


def test_compute_head_results(both):
    model, ids, _, cache, tl_cache = both
    assert "blocks.0.attn.hook_result" not in cache  # not in a default full cache
    derived = type(cache)(dict(cache.cache_dict), model)
    assert derived.compute_head_results() is derived
    tl_cache.compute_head_results()
    with torch.no_grad():
        _, cached = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_result"))
    for l in range(3):
        _close(derived["result", l], tl_cache["result", l, "attn"])
        _close(derived["result", l], cached["result", l])
        bias = model.gpt_neox.layers[l].attention.dense.bias
        _close(derived["result", l].sum(2) + bias, cache["attn_out", l])


def test_stack_activation(both):
    _, _, _, cache, tl_cache = both
    for args in [("pattern",), ("resid_pre", 2), ("scale", -1, "ln1"), ("z", 1, "attn"), ("post",)]:
        ours, theirs = cache.stack_activation(*args), tl_cache.stack_activation(*args)
        _close(ours, theirs)
    assert cache.stack_activation("resid_pre").shape == (3, 2, 6, 64)
    with pytest.raises(ValueError, match="no layer"):
        cache.stack_activation("resid_pre", 0)


@pytest.mark.parametrize("batch_slice", [1, slice(0, 1), [1, 0]], ids=str)
def test_apply_slice_to_batch_dim(both, batch_slice):
    _, _, _, cache, tl_cache = both
    ours, theirs = cache.apply_slice_to_batch_dim(batch_slice), tl_cache.apply_slice_to_batch_dim(batch_slice)
    assert ours.has_batch_dim == theirs.has_batch_dim == (not isinstance(batch_slice, int))
    assert ours.model is cache.model and len(ours) == len(cache)
    _close(ours["resid_post", 2], theirs["resid_post", 2])
    # the methods then work on the slice (the cached scales were sliced alike)
    _close(ours.decompose_resid(apply_ln=True, convention="transformer_lens"), theirs.decompose_resid(apply_ln=True))
    if not ours.has_batch_dim:
        with pytest.raises(ValueError, match="no batch dimension"):
            ours.apply_slice_to_batch_dim(0)


LENS_CASES = [{}, {"targets": 5}, {"targets": [5, 7]}, {"top_k": 3}, {"vocab": [1, 2, 3], "return_type": "log_probs"},
              {"layers": [0, -1], "batch_slice": 0}, {"positions": None, "return_type": "probs"},
              {"positions": slice(2, None), "incl_mid": True}]


@pytest.mark.parametrize("kwargs", LENS_CASES, ids=str)
def test_logit_lens(both, kwargs):
    model, ids, logits, cache, tl_cache = both
    if kwargs.get("incl_mid") and model.config.use_parallel_residual:
        pytest.skip("no resid_mid with a parallel residual")
    ours, theirs = cache.logit_lens(**kwargs), tl_cache.logit_lens(**kwargs)
    assert ours.labels == theirs.labels and ours.has_batch_dim == theirs.has_batch_dim
    _close(ours.values, theirs.values)
    _close(ours.readout.entropy, theirs.readout.entropy)
    for field in ("target_ranks", "top_ids", "target_ids"):
        if getattr(theirs.readout, field) is not None:
            assert torch.equal(getattr(ours, field), getattr(theirs.readout, field)), field


def test_logit_lens_per_row_targets_and_the_last_entry(both):
    model, ids, logits, cache, tl_cache = both
    targets = ids[:, 1:]  # the next token at each position
    ours = cache.logit_lens(positions=slice(0, -1), targets=targets)
    theirs = tl_cache.logit_lens(positions=slice(0, -1), targets=targets)
    _close(ours.values, theirs.values)
    assert ours.values.shape == (4, 2, 5, 1) and torch.equal(ours.rank_trajectory(), theirs.rank_trajectory())
    full = cache.logit_lens(positions=None)
    _close(full.values[-1], logits)  # the last entry is the model's own prediction
    shared = cache.logit_lens(targets=[5, 7])
    assert torch.equal(shared.rank_trajectory(7), tl_cache.logit_lens(targets=[5, 7]).rank_trajectory(7))
    with pytest.raises(ValueError, match="at most one"):
        cache.logit_lens(targets=5, top_k=2)
    with pytest.raises(ValueError, match="target="):
        shared.rank_trajectory()


@pytest.mark.parametrize("method", ["decompose_resid", "stack_head_results", "stack_neuron_results",
                                    "accumulated_resid"])
def test_transformer_lens_convention(both, method):
    """`convention="transformer_lens"`: TransformerLens's apply_ln on the unprocessed model (no LayerNorm weight);
    the workbench's default multiplies by it, as the unfolded forward does."""
    model, _, _, cache, tl_cache = both
    args = (3,) if method == "stack_neuron_results" else (1,) if method == "accumulated_resid" else ()
    ours = getattr(cache, method)(*args, apply_ln=True, convention="transformer_lens")
    _close(ours, getattr(tl_cache, method)(*args, apply_ln=True))
    if method != "accumulated_resid":
        ln_w = model.gpt_neox.final_layer_norm.weight
        _close(getattr(cache, method)(*args, apply_ln=True), ours * ln_w)


def test_logit_attrs_conventions(both):
    model, ids, logits, cache, tl_cache = both
    stack = cache.decompose_resid(pos_slice=-1)
    right, wrong = ids[:, -1], ids[:, 0]
    ours = cache.logit_attrs(stack, right, incorrect_tokens=wrong, pos_slice=-1, convention="transformer_lens")
    theirs = tl_cache.logit_attrs(tl_cache.decompose_resid(pos_slice=-1), right, incorrect_tokens=wrong, pos_slice=-1)
    _close(ours, theirs)
    # the workbench's convention: the components plus the final LayerNorm bias's share give the logit difference
    attrs = cache.logit_attrs(stack, right, incorrect_tokens=wrong, pos_slice=-1)
    w_u = model.embed_out.weight
    bias_share = (w_u[right] - w_u[wrong]) @ model.gpt_neox.final_layer_norm.bias
    rows = torch.arange(2)
    _close(attrs.sum(0) + bias_share, logits[rows, -1, right] - logits[rows, -1, wrong])
