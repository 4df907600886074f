"""Residual stream, logit lens, neurons, per-position attribution and loss: checked against the model itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import random_model
from workbench.analysis import (
    component_logit_attribution,
    lens_log_probs,
    logit_diff_by_layer,
    mlp_activations,
    per_token_loss,
    residual_norms,
    residual_stack,
)

TEXT = "The quick brown fox jumps over the lazy dog. The quick brown fox"


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return random_model(str(neox_tokenizer_file), n_layers=3, n_heads=4, d_model=32)


def _ids(model, text=TEXT) -> list[int]:
    return model.tokenizer.encode(text)


def test_residual_stack_starts_at_the_embedding_and_ends_in_the_logits(model):
    ids = _ids(model)
    resid, labels, _, mask = residual_stack(model, torch.tensor([ids]))
    assert labels == ["0_pre", "1_pre", "2_pre", "final_post"] and mask is None
    assert resid.shape == (4, 1, len(ids), 32)
    with torch.no_grad():
        emb = model.gpt_neox.embed_in(torch.tensor(ids))
        logits = model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(resid[0, 0], emb)
    lens = lens_log_probs(model, resid[:, 0])
    torch.testing.assert_close(lens[-1], torch.log_softmax(logits.float(), -1), atol=1e-4, rtol=1e-4)
    norms, names = residual_norms(model, TEXT)
    assert names == ["embed", "L0", "L1", "L2"]
    torch.testing.assert_close(norms, resid[:, 0].norm(dim=-1).mean(-1))


def test_mlp_activations_match_a_manual_layer(model):
    """Neuron activations = act(dense_h_to_4h(post_attention_layernorm(x))) for the parallel-residual layer."""
    ids = _ids(model)
    post = mlp_activations(model, torch.tensor([ids]))
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        layer = model.gpt_neox.layers[1]
        manual = torch.nn.functional.gelu(layer.mlp.dense_h_to_4h(layer.post_attention_layernorm(hs[1][0])))
    torch.testing.assert_close(post[1, 0], manual, atol=1e-5, rtol=1e-5)


def test_component_attribution_adds_up_to_the_next_token_logit(model):
    """Sum over components + the final LN bias term = the model's logit of the next token."""
    ids = _ids(model)
    attrs, labels, bias = component_logit_attribution(model, torch.tensor([ids]))
    assert labels[:3] == ["embed", "0_attn_out", "0_mlp_out"] and len(labels) == 7
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
    expected = logits[np.arange(len(ids) - 1), ids[1:]]
    np.testing.assert_allclose((attrs.sum(0) + bias)[0, :-1].numpy(), expected, atol=1e-3)
    assert torch.isnan(attrs[:, 0, -1]).all()  # the last position has no next token


def test_logit_diff_by_layer_and_per_token_loss(model):
    attn, mlp, total = logit_diff_by_layer(model, "The quick brown", " fox", " dog")
    assert attn.shape == mlp.shape == (3,)
    fox, dog = _ids(model, " fox")[0], _ids(model, " dog")[0]
    attrs, labels, bias = component_logit_attribution(model, "The quick brown", fox, dog)
    embed_and_bias = total - float(attn.sum()) - float(mlp.sum())  # what the embedding and LN bias contribute
    assert embed_and_bias == pytest.approx(float(attrs[0, 0, -1] + bias[0, -1]), abs=1e-3)
    with pytest.raises(ValueError, match="not one"):
        logit_diff_by_layer(model, "The", " quick brown", " dog")
    ids = _ids(model)
    loss, _ = per_token_loss(model, torch.tensor([ids]))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ref = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    torch.testing.assert_close(loss[0], ref, atol=1e-5, rtol=1e-5)
