"""ActivationCache: TransformerLens shorthands and the residual-stream algebra, checked against the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import random_tokens, tiny_model
from workbench.hook_points import in_full_cache

ATOL = 1e-5


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def run(request):
    model = tiny_model(parallel=request.param, seed=5)
    ids = random_tokens()
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    return model, ids, logits, cache


def test_shorthand_keys(run):
    model, _, _, cache = run
    assert cache["pattern", 2] is cache["blocks.2.attn.hook_pattern"]
    assert cache["resid_pre", -1] is cache["blocks.2.hook_resid_pre"]
    assert cache["scale", 1, "ln1"] is cache["blocks.1.ln1.hook_scale"]
    assert cache["normalized", 0, "ln2"] is cache["blocks.0.ln2.hook_normalized"]
    assert cache["scale"] is cache["ln_final.hook_scale"]
    assert cache["embed"] is cache["hook_embed"]
    assert cache["post", 0] is cache["blocks.0.mlp.hook_post"]
    assert cache["z", 1] is cache["blocks.1.attn.hook_z"]
    assert ("q", 0) in cache and ("q", 7) not in cache
    assert len(cache) == len([n for n in model.hook_names() if in_full_cache(n)]) and list(cache) == list(cache.keys())
    with pytest.raises(KeyError, match="out of range"):
        cache["resid_pre", 3]
    with pytest.raises(KeyError, match="ln1"):
        cache["scale", 0]
    with pytest.raises(KeyError, match="blocks.0.attn.hook_pattern"):
        cache["blocks.0.attn.hook_patern"]


def test_missing_name_explains_names_filter():
    model = tiny_model()
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(), names_filter="hook_embed")
    with pytest.raises(KeyError, match="names_filter"):
        cache["resid_pre", 0]


def test_decompose_resid_sums_to_the_residual(run):
    model, _, _, cache = run
    parts, labels = cache.decompose_resid(return_labels=True)
    expected = ["embed"] + [f"{l}_{k}" for l in range(3) for k in ("attn_out", "mlp_out")]
    assert labels == expected
    torch.testing.assert_close(parts.sum(0), cache["resid_post", 2], atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.decompose_resid(layer=2).sum(0), cache["resid_pre", 2], atol=ATOL, rtol=0)
    attn_only = cache.decompose_resid(mode="attn", incl_embeds=False, return_labels=True)
    assert attn_only[1] == ["0_attn_out", "1_attn_out", "2_attn_out"]
    if not model.config.use_parallel_residual:
        torch.testing.assert_close(cache.decompose_resid(layer=1, mlp_input=True).sum(0), cache["resid_mid", 1],
                                   atol=ATOL, rtol=0)


def test_accumulated_resid_and_logits(run):
    model, _, logits, cache = run
    stack, labels = cache.accumulated_resid(return_labels=True)
    assert labels == ["0_pre", "1_pre", "2_pre", "final_post"]
    assert torch.equal(stack[1], cache["resid_pre", 1]) and torch.equal(stack[-1], cache["resid_post", 2])
    normed = cache.accumulated_resid(apply_ln=True)
    torch.testing.assert_close(normed[-1] @ model.embed_out.weight.T, logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(normed[-1], cache["ln_final.hook_normalized"] * model.gpt_neox.final_layer_norm.weight
                               + model.gpt_neox.final_layer_norm.bias, atol=ATOL, rtol=0)
    # up to layer 1, normalised as layer 1's ln1 does
    up_to_1 = cache.accumulated_resid(layer=1, apply_ln=True)
    assert up_to_1.shape[0] == 2
    ln1 = model.gpt_neox.layers[1].input_layernorm
    torch.testing.assert_close(up_to_1[-1], F.layer_norm(cache["resid_pre", 1], (64,), ln1.weight, ln1.bias, ln1.eps),
                               atol=ATOL, rtol=0)
    last = cache.accumulated_resid(pos_slice=-1, apply_ln=True)
    torch.testing.assert_close(last, normed[:, :, -1], atol=ATOL, rtol=0)
    if model.config.use_parallel_residual:
        with pytest.raises(ValueError, match="parallel"):
            cache.accumulated_resid(incl_mid=True)
    else:
        _, mid_labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
        assert mid_labels == ["0_pre", "0_mid", "1_pre", "1_mid", "2_pre", "2_mid", "final_post"]


def test_apply_ln_to_decomposition_sums_to_the_normalised_residual(run):
    model, _, _, cache = run
    ln = model.gpt_neox.final_layer_norm
    parts = cache.decompose_resid(apply_ln=True)
    expected = F.layer_norm(cache["resid_post", 2], (64,), ln.weight, ln.bias, ln.eps)
    torch.testing.assert_close(parts.sum(0) + ln.bias, expected, atol=ATOL, rtol=0)


def test_head_results_and_neurons_rebuild_layer_outputs(run):
    model, ids, _, cache = run
    # hook_result is not in a full cache (as in TransformerLens): cache it by name to compare
    _, results = model.run_with_cache(ids, names_filter=lambda n: n.endswith("attn.hook_result"))
    heads, labels = cache.stack_head_results(layer=-1, return_labels=True)
    assert labels[:5] == ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"] and heads.shape == (12, 2, 9, 64)
    for l in range(3):
        bias = model.gpt_neox.layers[l].attention.dense.bias
        torch.testing.assert_close(heads[4 * l:4 * l + 4].sum(0) + bias, cache["attn_out", l], atol=ATOL, rtol=0)
        # hook_result (cached) and the result computed from hook_z agree
        torch.testing.assert_close(results["result", l].movedim(2, 0), heads[4 * l:4 * l + 4], atol=ATOL, rtol=0)
    with_rest, labels = cache.stack_head_results(layer=2, incl_remainder=True, return_labels=True)
    assert labels[-1] == "remainder" and len(labels) == 9
    torch.testing.assert_close(with_rest.sum(0), cache["resid_pre", 2], atol=ATOL, rtol=0)
    neurons, n_labels = cache.stack_neuron_results(layer=2, return_labels=True)
    assert neurons.shape == (512, 2, 9, 64) and n_labels[256] == "L1N0"
    bias = model.gpt_neox.layers[1].mlp.dense_4h_to_h.bias
    torch.testing.assert_close(neurons[256:].sum(0) + bias, cache["mlp_out", 1], atol=ATOL, rtol=0)
    some = cache.stack_neuron_results(layer=1, neuron_slice=[3, 5], pos_slice=-1)
    assert some.shape == (2, 2, 64)
    torch.testing.assert_close(some, neurons[[3, 5]][:, :, -1], atol=ATOL, rtol=0)


def test_logit_attrs(run):
    model, ids, logits, cache = run
    ln_bias_logits = model.embed_out(model.gpt_neox.final_layer_norm.bias)  # [v]: no component's
    final = cache.accumulated_resid()[-1:]  # [1, b, p, d], raw: logit_attrs applies ln_final
    attrs = cache.logit_attrs(final, ids)  # the logit of each input token at its own position
    torch.testing.assert_close(attrs[0] + ln_bias_logits[ids], logits.gather(-1, ids[..., None]).squeeze(-1),
                               atol=ATOL, rtol=0)
    diff = cache.logit_attrs(final, torch.tensor([3, 4]), incorrect_tokens=torch.tensor([5, 6]))
    expected = logits[..., [3, 4]].diagonal(dim1=0, dim2=2).T - logits[..., [5, 6]].diagonal(dim1=0, dim2=2).T
    bias_diff = (ln_bias_logits[[3, 4]] - ln_bias_logits[[5, 6]])[:, None]
    torch.testing.assert_close(diff[0] + bias_diff, expected, atol=ATOL, rtol=0)
    at_last = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), 9, pos_slice=-1)
    torch.testing.assert_close(at_last.sum(0) + ln_bias_logits[9], logits[:, -1, 9], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="out of range|must be in"):
        cache.logit_attrs(final, 10_000)


def test_remove_batch_dim_and_to():
    model = tiny_model()
    with torch.no_grad():
        _, cache = model.run_with_cache(random_tokens(batch=1), names_filter=lambda n: "resid" in n)
        _, batched = model.run_with_cache(random_tokens(batch=2), names_filter="hook_embed")
    single = cache.remove_batch_dim()
    assert single["resid_pre", 0].shape == (9, 64) and not single.has_batch_dim
    assert single.to("cpu") is single
    with pytest.raises(ValueError, match="batch size 1"):
        batched.remove_batch_dim()
