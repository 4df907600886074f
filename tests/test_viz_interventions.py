"""Widgets show the model under the user's interventions: their data is what run_with_cache gives under the
same hooks (and differs from the clean run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import random_model
from workbench.analysis import lens_log_probs
from workbench.viz.attention import AttentionView, quantise
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

TEXT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return random_model(str(neox_tokenizer_file), n_layers=3, n_heads=4, d_model=32)


@pytest.fixture(scope="module")
def steer(model):
    """A steering hook: a large fixed vector added to the residual stream after block 0."""
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(3)) * 4
    return [("blocks.0.hook_resid_post", lambda resid, hook: resid + vector)]


def _ids(model) -> torch.Tensor:
    return torch.tensor([model.tokenizer.encode(TEXT)])


def test_attention_view_under_a_hook_equals_run_with_cache(model, steer):
    with model.hooks(fwd_hooks=steer):
        view = AttentionView.from_model(model, TEXT)
        _, cache = model.run_with_cache(_ids(model))
    clean = AttentionView.from_model(model, TEXT)
    differs = False
    for layer in view.layers:
        for head in view.heads:
            want = quantise(cache["pattern", layer][0, head].numpy()).astype(np.float32) / 255
            np.testing.assert_array_equal(view.pattern(0, layer, head), want)
            differs |= not np.array_equal(clean.pattern(0, layer, head), want)
    assert differs  # the hook reaches layers 1 and 2
    np.testing.assert_array_equal(clean.pattern(0, 0, 0), view.pattern(0, 0, 0))  # layer 0 is upstream of it


def test_logit_lens_view_under_a_hook_equals_run_with_cache(model, steer):
    ids = _ids(model)
    with model.hooks(fwd_hooks=steer):
        view = LogitLensView.from_model(model, TEXT)
        logits, cache = model.run_with_cache(ids)
    logits = logits.detach()
    lp = lens_log_probs(model, cache.accumulated_resid()[:, 0])  # [rows, pos, v]
    torch.testing.assert_close(lp[-1], logits[0].float().log_softmax(-1), atol=1e-5, rtol=1e-5)
    nxt = ids[0, 1:]
    want = lp[:, torch.arange(len(nxt)), nxt].exp().numpy()
    got = np.array([row[:-1] for row in view.grid(0, "next")["target_prob"]])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    clean = np.array([row[:-1] for row in LogitLensView.from_model(model, TEXT).grid(0, "next")["target_prob"]])
    np.testing.assert_allclose(clean[0], got[0], rtol=1e-6)  # the embedding row is upstream of the hook
    assert np.abs(np.log(clean[2:]) - np.log(got[2:])).max() > 0.05  # rows after the hooked block change


def test_token_view_under_a_hook_equals_run_with_cache(model, steer):
    ids = _ids(model)
    with model.hooks(fwd_hooks=steer):
        view = TokenView.from_model(model, TEXT)
        logits, cache = model.run_with_cache(ids)
    logits = logits.detach()
    clean = TokenView.from_model(model, TEXT)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none").numpy()
    np.testing.assert_allclose(view.values("loss")["values"][0][1:], loss, atol=1e-5)
    post = cache["post", 2][0, :, 7].numpy()
    np.testing.assert_allclose(view.values("neuron:2:7")["values"][0], post, atol=2e-3)  # stored as float16
    stack, labels = cache.decompose_resid(return_labels=True)
    dla = cache.logit_attrs(stack, torch.cat([ids[:, 1:], ids[:, -1:]], 1))[labels.index("2_mlp_out"), 0, :-1]
    np.testing.assert_allclose(view.values("dla:L2.mlp")["values"][0][:-1], dla.numpy(), atol=1e-5)
    for key in ("loss", "neuron:2:7", "dla:L2.mlp"):
        a, b = view.values(key)["values"][0], clean.values(key)["values"][0]
        assert max(abs(x - y) for x, y in zip(a, b) if x is not None) > 1e-2, key


def test_views_from_a_cache_equal_views_from_the_model(model):
    ids = _ids(model)
    # Only the residual stream: caching every site still switches LayerNorm and attention to other kernels,
    # which moves values by ~1e-7 (the observer-exact hooks issue, #12).
    _, cache = model.run_with_cache(ids, names_filter=lambda n: "hook_resid_p" in n)
    lens = LogitLensView.from_cache(cache, ids)
    live = LogitLensView.from_model(model, TEXT)
    assert lens.grid(0, "next") == live.grid(0, "next") and lens.row_labels == live.row_labels
    assert lens.prompts == live.prompts
