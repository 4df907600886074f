"""Analysis helpers: patching, attribution patching, DLA, ablation, logit lens, steering, per-token loss."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import random_tokens, tiny_model
from workbench.analysis import (
    ablate_heads,
    attribution_patch,
    direct_logit_attribution,
    logit_diff_metric,
    logit_lens,
    mean_ablate_heads,
    patch,
    per_token_loss,
    resample_ablate_heads,
    steer,
    steering_hook,
    steering_vector,
    zero_ablate_heads,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model(parallel=True, seed=11)


@pytest.fixture(scope="module")
def pair():
    clean = random_tokens(batch=1, pos=6, seed=2)
    corrupted = clean.clone()
    corrupted[0, 2] = (clean[0, 2] + 17) % 128  # one token differs
    return clean, corrupted


def test_patching_whole_layer0_resid_pre_restores_clean_logits_exactly(model, pair):
    clean, corrupted = pair
    seen = []
    values, frame = patch(model, clean, corrupted, lambda logits: seen.append(logits) or 0.0, hook="resid_pre",
                          by="layer", progress=False)
    assert values.shape == (3,) and list(frame.columns) == ["layer", "metric"]
    with torch.no_grad():
        clean_logits = model(clean).logits
    assert torch.equal(seen[2], clean_logits)  # the first patched run (after clean and corrupted baselines)


def test_patch_by_layer_pos_and_head(model, pair):
    clean, corrupted = pair
    metric = logit_diff_metric(5, 6)
    with torch.no_grad():
        clean_m, corr_m = float(metric(model(clean).logits)), float(metric(model(corrupted).logits))
    values, frame = patch(model, clean, corrupted, metric, hook="resid_pre", by=("layer", "pos"), progress=False)
    assert values.shape == (3, 6) and len(frame) == 18 and {"layer", "pos", "token", "metric"} <= set(frame.columns)
    assert frame.attrs["clean_metric"] == pytest.approx(clean_m) and frame.attrs["corrupted_metric"] == pytest.approx(corr_m)
    # positions other than the corrupted one hold the same value at layer 0: patching them changes nothing
    torch.testing.assert_close(values[0, [0, 1, 3, 4, 5]], torch.full((5,), corr_m), atol=1e-5, rtol=0)
    assert values[0, 2] == pytest.approx(clean_m, abs=1e-5)
    # before position 2 nothing differs at any layer (causal attention)
    torch.testing.assert_close(values[:, :2], torch.full((3, 2), corr_m), atol=1e-5, rtol=0)
    heads, hframe = patch(model, clean, corrupted, metric, hook="z", by=("layer", "head"), progress=False)
    assert heads.shape == (3, 4) and set(hframe.columns) == {"layer", "head", "metric"}
    # patching every head's z of the last layer at once == patching its whole z
    whole, _ = patch(model, clean, corrupted, metric, hook="z", by="layer", progress=False)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter="blocks.2.attn.hook_z")
        manual = metric(model.run_with_hooks(corrupted, fwd_hooks=[("blocks.2.attn.hook_z",
                                                                    lambda z, h: cache["z", 2])]).logits)
    assert whole[2] == pytest.approx(float(manual), abs=1e-6)
    with pytest.raises(ValueError, match="head dimension"):
        patch(model, clean, corrupted, metric, hook="resid_pre", by=("layer", "head"), progress=False)
    with pytest.raises(KeyError, match="parallel"):
        patch(model, clean, corrupted, metric, hook="resid_mid", progress=False)
    with pytest.raises(ValueError, match="same shape"):
        patch(model, clean, corrupted[:, :4], metric, progress=False)


def test_attribution_patching_is_the_directional_derivative(model, pair):
    """Each estimate is `(clean - corrupted) . grad` at one spot: the derivative of the metric along the
    straight line from the corrupted to the clean activation there, checked by central differences."""
    clean, corrupted = pair
    metric = logit_diff_metric(5, 6)
    estimate, frame = attribution_patch(model, clean, corrupted, metric, hook="resid_pre")
    assert estimate.shape == (3, 6) and "estimate" in frame.columns
    assert estimate[:, :2].abs().max() == 0  # nothing differs before the corrupted position
    assert all(p.grad is None for p in model.parameters())
    heads, _ = attribution_patch(model, clean, corrupted, metric, hook="z", by=("layer", "head"))
    whole, _ = attribution_patch(model, clean, corrupted, metric, hook="mlp_out", by="layer")
    assert heads.shape == (3, 4) and whole.shape == (3,)
    with torch.no_grad():
        _, c = model.run_with_cache(clean, names_filter=["blocks.1.hook_resid_pre", "blocks.2.attn.hook_z",
                                                         "blocks.0.hook_mlp_out"])
        _, x = model.run_with_cache(corrupted, names_filter=list(c.keys()))

        def along(name, sel, eps):
            def hook(act, h):
                act = act.clone()
                act[sel] += eps * (c[name] - x[name])[sel]
                return act
            return float(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)]).logits))

        eps = 1e-2
        for name, sel, value in [("blocks.1.hook_resid_pre", (slice(None), 3), estimate[1, 3]),
                                 ("blocks.2.attn.hook_z", (slice(None), slice(None), 1), heads[2, 1]),
                                 ("blocks.0.hook_mlp_out", (slice(None),), whole[0])]:
            numeric = (along(name, sel, eps) - along(name, sel, -eps)) / (2 * eps)
            assert float(value) == pytest.approx(numeric, rel=1e-2, abs=1e-4), name
    # and the first-order estimate moves the same way as real patching for the last layer's heads
    true, pframe = patch(model, clean, corrupted, metric, hook="z", by=("layer", "head"), progress=False)
    change = true[2] - pframe.attrs["corrupted_metric"]
    assert torch.corrcoef(torch.stack([heads[2], change]))[0, 1] > 0.8


def test_zero_ablating_every_head_equals_attn_out_of_only_the_bias(model):
    ids = random_tokens()
    bias = model.gpt_neox.layers[1].attention.dense.bias
    with torch.no_grad():
        by_heads = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero_ablate_heads())]).logits
        by_out = model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_attn_out",
                                                       lambda a, h: torch.zeros_like(a) + bias)]).logits
        plain = model(ids).logits
    torch.testing.assert_close(by_heads, by_out, atol=1e-5, rtol=0)
    assert (by_heads - plain).abs().max() > 1e-3


def test_mean_and_resample_ablation(model):
    ids = random_tokens(batch=1)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter="blocks.0.attn.hook_z")
        plain = model(ids).logits
        # resampling from the run itself (one row) and the per-position mean of one row change nothing
        same = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z",
                                                     resample_ablate_heads(cache["z", 0], heads=[1, 2]))]).logits
        mean_self = model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z",
                                                          mean_ablate_heads(cache["z", 0][0], heads=2))]).logits
        seen = {}
        mean = cache["z", 0].mean((0, 1))
        model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_z", mean_ablate_heads(mean, heads=[3])),
                                             ("blocks.0.attn.hook_z", lambda z, h: seen.setdefault("z", z))])
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean_self, plain, atol=1e-6, rtol=0)
    assert torch.equal(seen["z"][0, :, 3], mean[3].expand(9, 16)) and torch.equal(seen["z"][:, :, :3], cache["z", 0][:, :, :3])
    values, frame = ablate_heads(model, ids, lambda logits: logits[0, -1, 5], kind="zero", progress=False)
    assert values.shape == (3, 4) and list(frame.columns) == ["layer", "head", "metric", "change"]
    with torch.no_grad():
        manual = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.attn.hook_z", zero_ablate_heads(1))]).logits
    assert values[2, 1] == pytest.approx(float(manual[0, -1, 5]), abs=1e-5)
    values, _ = ablate_heads(model, ids, lambda logits: logits[0, -1, 5], kind="resample", reference=ids, progress=False)
    torch.testing.assert_close(values, torch.full((3, 4), float(plain[0, -1, 5])), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="kind"):
        ablate_heads(model, ids, lambda logits: 0.0, kind="bogus")


def test_direct_logit_attribution_sums_to_the_logit_difference(model):
    ids = random_tokens(batch=2, pos=7)
    attrs, frame = direct_logit_attribution(model, ids, answer=[3, 8], wrong=[4, 9])
    with torch.no_grad():
        logits = model(ids).logits[:, -1]
    diff = torch.stack([logits[0, 3] - logits[0, 4], logits[1, 8] - logits[1, 9]])
    torch.testing.assert_close(attrs.sum(0), diff, atol=1e-5, rtol=0)
    assert set(frame["kind"]) == {"embed", "head", "attn_bias", "mlp", "ln_final_bias"}
    assert len(frame) == 2 * (1 + 3 * (4 + 2) + 1)
    # one head's attribution by hand: its result at the last position, normalised, on the answer direction
    _, cache = model.run_with_cache(ids, names_filter=["blocks.1.attn.hook_result", "ln_final.hook_scale"])
    ln = model.gpt_neox.final_layer_norm
    r = cache["result", 1][0, -1, 2]
    by_hand = ((r - r.mean()) / cache["scale"][0, -1] * ln.weight) @ (model.embed_out.weight[3] - model.embed_out.weight[4])
    row = frame[(frame.batch == 0) & (frame.component == "L1H2")]
    assert float(row.attribution.iloc[0]) == pytest.approx(float(by_hand.detach()), abs=1e-5)
    single, _ = direct_logit_attribution(model, ids, answer=3)
    torch.testing.assert_close(single.sum(0), logits[:, 3], atol=1e-5, rtol=0)


def test_logit_lens(model):
    ids = random_tokens(batch=1, pos=5)
    log_probs, frame = logit_lens(model, ids, target=7, top_k=3)
    with torch.no_grad():
        final = model(ids).logits.log_softmax(-1)
    assert log_probs.shape == (4, 1, 5, 128)
    torch.testing.assert_close(log_probs[-1], final, atol=1e-5, rtol=0)
    assert len(frame) == 4 * 5 * 3
    last = frame[(frame.label == "final_post") & (frame["rank"] == 0)]
    assert last.top_id.tolist() == final[0].argmax(-1).tolist()
    torch.testing.assert_close(torch.tensor(last.target_prob.tolist()), final[0, :, 7].exp(), atol=1e-5, rtol=0)
    ranks = (final[0] > final[0, :, 7:8]).sum(-1)
    assert last.target_rank.tolist() == ranks.tolist()
    # default target: the next token; the last position has none
    _, nxt = logit_lens(model, ids, top_k=1)
    assert nxt[nxt.pos == 4].target.isna().all() and nxt[nxt.pos == 0].target.iloc[0] == int(ids[0, 1])


def test_steering(model):
    ids = random_tokens(batch=1, pos=4)
    vector = model.embed_out.weight[11].detach() * 50
    steered, frame = steer(model, ids, vector, hook="resid_post", layer=2, max_new_tokens=3)
    assert steered[0, 4:].eq(11).all() and isinstance(frame, pd.DataFrame)
    assert frame.steered[0] == steered[0].tolist()
    unsteered, frame0 = steer(model, ids, vector, hook="resid_post", layer=2, scale=0.0, max_new_tokens=3)
    assert frame0.steered[0] == frame0.baseline[0]
    assert not any(p.is_active() for p in model.hook_dict.values())
    v = steering_vector(model, random_tokens(1, 4, seed=5), random_tokens(1, 4, seed=6), hook="resid_pre", layer=1)
    with torch.no_grad():
        _, a = model.run_with_cache(random_tokens(1, 4, seed=5), names_filter="blocks.1.hook_resid_pre")
        _, b = model.run_with_cache(random_tokens(1, 4, seed=6), names_filter="blocks.1.hook_resid_pre")
    torch.testing.assert_close(v, a["resid_pre", 1].mean((0, 1)) - b["resid_pre", 1].mean((0, 1)))
    with pytest.raises(KeyError):
        steer(model, ids, vector, hook="resid_mid", layer=0)
    with pytest.raises(ValueError, match="size"):
        model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_pre", steering_hook(torch.ones(3)))])


def test_per_token_loss(model):
    ids = random_tokens(batch=2, pos=8)
    loss, frame = per_token_loss(model, ids)
    with torch.no_grad():
        out = model(ids, labels=ids)
    assert loss.shape == (2, 7) and len(frame) == 14
    assert float(loss.mean()) == pytest.approx(float(out.loss), abs=1e-5)
    assert frame.token_id.tolist()[:7] == ids[0, 1:].tolist()
    torch.testing.assert_close(torch.tensor(frame.prob.tolist()), (-loss.flatten()).exp())


def test_per_token_loss_of_padded_texts(neox_tokenizer_file):
    from workbench import Tokenizer

    model = tiny_model(vocab_size=50304)
    model.tokenizer = Tokenizer.from_file(neox_tokenizer_file)
    loss, frame = per_token_loss(model, ["In the beginning God created", "And God said"])
    alone, _ = per_token_loss(model, "And God said")
    n = alone.shape[1]
    torch.testing.assert_close(loss[1, :n], alone[0], atol=1e-5, rtol=0)
    assert loss[1, n:].isnan().all() and len(frame) == loss.shape[1] + n
