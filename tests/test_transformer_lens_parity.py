"""Hook values and cache algebra against TransformerLens on the same weights.

TransformerLens 4.x wraps a transformers model in a `TransformerBridge` (the successor of `HookedTransformer`,
which 4.0 removed); without `enable_compatibility_mode()` it does no weight processing, which is exactly our
convention. The bridge is built around a transformers `GPTNeoXForCausalLM` holding our model's weights, all
from local objects (no network).
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_tokens, tiny_model

transformers = pytest.importorskip("transformers")
pytest.importorskip("transformer_lens")
from transformer_lens import patching as tl_patching  # noqa: E402
from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module  # noqa: E402

from workbench.analysis import patch  # noqa: E402

ATOL = 1e-5


def bridge_for(model):
    """A TransformerLens bridge over a transformers GPT-NeoX holding `model`'s weights."""
    c = model.config
    hf_config = transformers.GPTNeoXConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_attention_heads=c.num_attention_heads,
        num_hidden_layers=c.num_hidden_layers, intermediate_size=c.intermediate_size, rotary_pct=c.rotary_pct,
        max_position_embeddings=c.max_position_embeddings, use_parallel_residual=c.use_parallel_residual,
        layer_norm_eps=c.layer_norm_eps, hidden_act=c.hidden_act, attn_implementation="eager")
    hf = transformers.GPTNeoXForCausalLM(hf_config).eval()
    head = "lm_head.weight" if hasattr(hf, "lm_head") else "embed_out.weight"  # transformers 5 renamed it
    state = {(head if k == "embed_out.weight" else k): v for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    return build_bridge_from_module(hf, "GPTNeoXForCausalLM", hf_config=hf.config)


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def both(request):
    model = tiny_model(parallel=request.param, seed=21)
    bridge = bridge_for(model)
    ids = random_tokens(batch=2, pos=9)
    with torch.no_grad():
        ours = model.run_with_cache(ids)
        theirs = bridge.run_with_cache(ids)
    return model, bridge, ids, ours, theirs


def test_every_shared_hook_value_matches(both):
    model, _, _, (logits, cache), (tl_logits, tl_cache) = both
    torch.testing.assert_close(logits, tl_logits, atol=ATOL, rtol=0)
    shared = [name for name in cache.keys() if name in tl_cache.cache_dict]
    per_block = ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k",
                 "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z", "hook_attn_out",
                 "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out",
                 "hook_resid_post"] + ([] if model.config.use_parallel_residual else ["hook_resid_mid"])
    expected = {"hook_embed", "ln_final.hook_scale", "ln_final.hook_normalized"} | {
        f"blocks.{l}.{n}" for l in range(3) for n in per_block}
    assert expected <= set(shared), sorted(expected - set(shared))
    for name in shared:
        ours, theirs = cache[name], tl_cache[name]
        assert ours.shape == theirs.shape, name
        if name.endswith("hook_attn_scores"):  # masked: -inf here, the dtype's minimum there
            visible = torch.isfinite(ours)
            assert (theirs[~visible] <= torch.finfo(theirs.dtype).min / 2).all(), name
            ours, theirs = ours[visible], theirs[visible]
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=name)


def test_cache_algebra_matches(both):
    model, _, _, (_, cache), (_, tl_cache) = both
    ln_w = model.gpt_neox.final_layer_norm.weight
    for method in ("accumulated_resid", "decompose_resid", "stack_head_results"):
        ours, labels = getattr(cache, method)(return_labels=True)
        theirs, tl_labels = getattr(tl_cache, method)(return_labels=True)
        assert labels == tl_labels, method
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=method)
        # Components of one residual: TransformerLens leaves the LayerNorm weight to W_U (folded), we apply it.
        # Whole residuals (accumulated_resid): both apply the full LayerNorm, each with its own statistics.
        ours_ln = getattr(cache, method)(apply_ln=True)
        theirs_ln = getattr(tl_cache, method)(apply_ln=True)
        if method != "accumulated_resid":
            theirs_ln = theirs_ln * ln_w
        torch.testing.assert_close(ours_ln, theirs_ln, atol=ATOL, rtol=0, msg=method + " apply_ln")
    if not model.config.use_parallel_residual:
        ours, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
        theirs, tl_labels = tl_cache.accumulated_resid(incl_mid=True, return_labels=True)
        assert labels == tl_labels
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_logit_attrs_match():
    # Without weight processing TransformerLens's logit_attrs leaves out ln_final's weight (it expects it folded
    # into W_U); with a unit weight and zero bias the two conventions coincide.
    model = tiny_model(parallel=True, seed=22)
    with torch.no_grad():
        model.gpt_neox.final_layer_norm.weight.fill_(1.0)
        model.gpt_neox.final_layer_norm.bias.zero_()
    bridge = bridge_for(model)
    ids = random_tokens(batch=2, pos=9)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
        _, tl_cache = bridge.run_with_cache(ids)
    ours = cache.logit_attrs(cache.decompose_resid(pos_slice=-1), ids[:, -1], incorrect_tokens=ids[:, 0], pos_slice=-1)
    theirs = tl_cache.logit_attrs(tl_cache.decompose_resid(pos_slice=-1), ids[:, -1], incorrect_tokens=ids[:, 0],
                                  pos_slice=-1)
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    rows = torch.arange(2)
    torch.testing.assert_close(ours.sum(0), logits[rows, -1, ids[:, -1]] - logits[rows, -1, ids[:, 0]], atol=ATOL, rtol=0)


def test_activation_patching_matches(both):
    model, bridge, ids, _, _ = both
    clean = ids[:1]
    corrupted = clean.clone()
    corrupted[0, 4] = (clean[0, 4] + 9) % model.config.vocab_size

    def metric(logits):
        return logits[0, -1, 3] - logits[0, -1, 4]

    ours, _ = patch(model, clean, corrupted, metric, hook="resid_pre", by=("layer", "pos"), progress=False)
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        theirs = tl_patching.get_act_patch_resid_pre(bridge, corrupted, clean_cache, metric)
    torch.testing.assert_close(ours, theirs.float(), atol=ATOL, rtol=0)
