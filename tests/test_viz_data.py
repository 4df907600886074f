"""workbench.viz.data: the arrays the widgets show, checked against the model's own outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_viz_support import random_model
from workbench.viz import data as D

TEXT = "The quick brown fox jumps over the lazy dog. The quick brown fox"


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return random_model(str(neox_tokenizer_file), n_layers=3, n_heads=4, d_model=32)


def test_to_prompts_accepts_text_ids_and_batches(model):
    tok_ids = D._encode(model.tokenizer, TEXT)
    from_text = D.to_prompts(model, TEXT)
    assert from_text[0].ids == tok_ids
    assert "".join(from_text[0].tokens) == TEXT  # one piece per position, nothing lost
    assert D.to_prompts(model, tok_ids)[0].ids == tok_ids
    assert [p.ids for p in D.to_prompts(model, torch.tensor([tok_ids, tok_ids]))] == [tok_ids, tok_ids]
    assert len(D.to_prompts(model, ["a b", "c d e"])) == 2


@pytest.mark.parametrize("bad, err", [(3.5, TypeError), ([], TypeError), ("", ValueError), (np.zeros((2, 2, 2), dtype=np.int64), ValueError)])
def test_to_prompts_rejects_bad_input(model, bad, err):
    with pytest.raises(err):
        D.to_prompts(model, bad)


def test_resid_stack_ends_in_the_models_logits(model):
    ids = D.to_prompts(model, TEXT)[0].ids
    resid, labels = D.resid_stack(model, ids)
    assert labels == ["embed", "L0", "L1", "L2"]
    assert resid.shape == (4, len(ids), 32)
    with torch.no_grad():
        emb = model.gpt_neox.embed_in(torch.tensor(ids))
        logits = model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(resid[0], emb)
    lens = D.logit_lens_logprobs(model, resid)
    torch.testing.assert_close(lens[-1], torch.log_softmax(logits.float(), -1), atol=1e-4, rtol=1e-4)


def test_mlp_post_matches_a_manual_layer(model):
    """Neuron activations = act(dense_h_to_4h(post_attention_layernorm(x))) for the parallel-residual layer."""
    ids = D.to_prompts(model, TEXT)[0].ids
    post = D.mlp_post(model, ids)
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
        layer = model.gpt_neox.layers[1]
        manual = torch.nn.functional.gelu(layer.mlp.dense_h_to_4h(layer.post_attention_layernorm(hs[1][0])))
    np.testing.assert_allclose(post[1], manual.numpy(), atol=1e-5)


def test_direct_logit_attribution_adds_up_to_the_logit(model):
    """Sum over components + the final LN bias term = the model's logit of the next token."""
    ids = D.to_prompts(model, TEXT)[0].ids
    nxt = ids[1:] + [ids[0]]
    dirs = D.unembed_directions(model, nxt)
    contrib, labels = D.direct_logit_attribution(model, ids, dirs)
    assert labels[0] == "embed" and labels[1:3] == ["L0.attn", "L0.mlp"] and len(labels) == 7
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
    expected = logits[np.arange(len(ids)), nxt]
    np.testing.assert_allclose(contrib.sum(0) + D.ln_bias_term(model, dirs), expected, atol=1e-3)


def test_logit_diff_contributions_and_per_token_loss(model):
    attn, mlp, total = D.logit_diff_contributions(model, "The quick brown", " fox", " dog")
    assert attn.shape == mlp.shape == (3,)
    ids = D.to_prompts(model, "The quick brown")[0].ids
    embed_and_bias = total - attn.sum() - mlp.sum()  # what the embedding and LN bias contribute
    d = D.unembed_directions(model, [D._encode(model.tokenizer, " fox")[0]], [D._encode(model.tokenizer, " dog")[0]])
    contrib, labels = D.direct_logit_attribution(model, ids, d.expand(len(ids), -1))
    assert embed_and_bias == pytest.approx(contrib[0, -1] + D.ln_bias_term(model, d)[0], abs=1e-3)
    with pytest.raises(ValueError, match="one token"):
        D.logit_diff_contributions(model, "The", " quick brown", " dog")
    ids = D.to_prompts(model, TEXT)[0].ids
    loss = D.per_token_loss(model, ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ref = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")
    np.testing.assert_allclose(loss, ref.numpy(), atol=1e-5)
