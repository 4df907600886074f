"""`analysis.process_weights`: a processed copy computing the same log-probabilities, with the weights
TransformerLens's `enable_compatibility_mode()` computes on a bridge holding the same weights."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_tokens, tiny_model
from workbench.analysis import process_weights

ATOL = 1e-5


def _log_probs(model, ids, mask=None):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits.log_softmax(-1)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
@pytest.mark.parametrize("options", [{}, {"fold_ln": False}, {"center_writing_weights": False},
                                     {"center_unembed": False}, {"fold_value_biases": False}], ids=str)
def test_same_log_probs(parallel, options):
    model = tiny_model(parallel=parallel, seed=51)
    processed = process_weights(model, **options)
    ids = random_tokens(batch=2, pos=9)
    torch.testing.assert_close(_log_probs(processed, ids), _log_probs(model, ids), atol=ATOL, rtol=0)
    assert processed.weight_processing == {"fold_ln": True, "center_writing_weights": True, "center_unembed": True,
                                           "fold_value_biases": True, **options}


def test_padding_and_the_folded_layer_norms():
    model = tiny_model(seed=52)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    processed = process_weights(model)
    ids = random_tokens(batch=2, pos=7)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    real = mask.bool()
    torch.testing.assert_close(_log_probs(processed, ids, mask)[real], _log_probs(model, ids, mask)[real],
                               atol=ATOL, rtol=0)
    for ln in [processed.gpt_neox.final_layer_norm] + [m for l in processed.gpt_neox.layers
                                                       for m in (l.input_layernorm, l.post_attention_layernorm)]:
        assert torch.equal(ln.weight, torch.ones(64)) and torch.equal(ln.bias, torch.zeros(64))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched
    assert processed.tokenizer is model.tokenizer and not processed.gpt_neox.layers[0].hook_resid_pre.is_active()
    # centred writing weights: the embedding and each output write have mean 0 over d_model
    assert processed.gpt_neox.embed_in.weight.mean(-1).abs().max() < 1e-6
    assert processed.gpt_neox.layers[1].mlp.dense_4h_to_h.weight.mean(0).abs().max() < 1e-6


def test_tied_embeddings_and_no_attention_bias():
    model = tiny_model(seed=53, tie_word_embeddings=True, attention_bias=False)
    assert model.embed_out.weight is model.gpt_neox.embed_in.weight
    processed = process_weights(model)
    assert not processed.config.tie_word_embeddings and model.config.tie_word_embeddings
    assert processed.embed_out.weight.data_ptr() != processed.gpt_neox.embed_in.weight.data_ptr()
    assert processed.gpt_neox.layers[0].attention.query_key_value.bias is not None  # created to fold ln1's bias
    ids = random_tokens(batch=2, pos=9)
    torch.testing.assert_close(_log_probs(processed, ids), _log_probs(model, ids), atol=ATOL, rtol=0)
    again = process_weights(processed)  # idempotent, extra biases and all
    torch.testing.assert_close(_log_probs(again, ids), _log_probs(model, ids), atol=ATOL, rtol=0)


def test_conventions_coincide_on_the_processed_model():
    processed = process_weights(tiny_model(seed=54))
    ids = random_tokens(batch=2, pos=6)
    with torch.no_grad():
        _, cache = processed.run_with_cache(ids)
    stack = cache.get_full_resid_decomposition(pos_slice=-1)
    ours = cache.logit_attrs(stack, ids[:, -1], pos_slice=-1)
    torch.testing.assert_close(ours, cache.logit_attrs(stack, ids[:, -1], pos_slice=-1, convention="transformer_lens"),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_weights_equal_transformer_lens(parallel):
    pytest.importorskip("transformers")
    pytest.importorskip("transformer_lens")
    from tests.test_transformer_lens_parity import bridge_for

    model = tiny_model(parallel=parallel, seed=55)
    processed = process_weights(model)
    bridge = bridge_for(model)
    bridge.enable_compatibility_mode(disable_warnings=True)
    h, dh, d = 4, 16, 64
    pairs = [(processed.gpt_neox.embed_in.weight, bridge.W_E), (processed.embed_out.weight.T, bridge.W_U),
             (processed.embed_out.bias, bridge.b_U)]
    for layer, block in zip(processed.gpt_neox.layers, bridge.blocks):
        qkv = layer.attention.query_key_value
        weight, bias = qkv.weight.view(h, 3, dh, d), qkv.bias.view(h, 3, dh)
        for i, name in enumerate("QKV"):
            pairs += [(weight[:, i].transpose(1, 2), getattr(block.attn, f"W_{name}")),
                      (bias[:, i], getattr(block.attn, f"b_{name}"))]
        dense, mlp = layer.attention.dense, layer.mlp
        pairs += [(dense.weight.view(d, h, dh).permute(1, 2, 0), block.attn.W_O), (dense.bias, block.attn.b_O),
                  (mlp.dense_h_to_4h.weight.T, block.mlp.W_in), (mlp.dense_h_to_4h.bias, block.mlp.b_in),
                  (mlp.dense_4h_to_h.weight.T, block.mlp.W_out), (mlp.dense_4h_to_h.bias, block.mlp.b_out)]
    for ours, theirs in pairs:
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours.detach(), theirs.detach(), atol=1e-6, rtol=0)
    ids = random_tokens(batch=2, pos=9)
    with torch.no_grad():
        torch.testing.assert_close(processed(ids).logits, bridge(ids), atol=ATOL, rtol=0)
