"""FeatureView's kernel side and the corpus pass behind it (no browser): every number against an independent path.

The reference for feature activations is the SAE spliced into a whole forward (`run_with_cache_with_saes`, its
`hook_sae_acts_post` over the entire corpus at once); the corpus pass reads the site with `stop_at_layer` in
batches and keeps only running summaries. Logit effects are checked against `process_weights` (TransformerLens's
fold_ln + center_unembed) applied to the model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench
from workbench.analysis import features as F
from workbench.analysis.weights import process_weights
from workbench.sae import SAE, SAEConfig
from workbench.viz.feature_view import FeatureView

HOOK = "blocks.1.hook_resid_post"
TEXTS = ["And God said, Let there be light: and there was light.", "In the beginning God created the heaven and the earth."]


@pytest.fixture(scope="module")
def model():
    return workbench.load("demo").eval()


def make_sae(model, architecture: str = "topk", d_sae: int = 96, seed: int = 0, hook: str = HOOK) -> SAE:
    """A seeded random SAE of the workbench's own class (kaiming init, a negative encoder bias so ReLU is sparse)."""
    torch.manual_seed(seed)
    cfg = SAEConfig(d_in=model.config.hidden_size, d_sae=d_sae, architecture=architecture, hook_name=hook,
                    k=6 if architecture == "topk" else None)
    sae = SAE(cfg, init="kaiming")
    if sae.b_enc is not None:
        with torch.no_grad():
            sae.b_enc.normal_(-1.0, 0.5)
    return sae


@pytest.fixture(scope="module")
def sae(model):
    return make_sae(model)


@pytest.fixture(scope="module")
def corpus():
    return torch.randint(2, 4096, (23, 20), generator=torch.Generator().manual_seed(3))


def dense_acts(model, sae, ids) -> np.ndarray:
    """Every feature on every corpus token, from the SAE spliced into one whole forward: `[n_ctx, pos, d_sae]`."""
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae], use_error_term=True)
    return cache[f"{sae.cfg.hook_name}.hook_sae_acts_post"].float().numpy()


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_corpus_pass_equals_one_dense_pass(model, corpus, architecture):
    sae = make_sae(model, architecture)
    k, before, after = 5, 3, 2
    stats = F.feature_stats(model, sae, corpus, batch_size=4, k=k, before=before, after=after, bins=16, progress=False)
    acts = dense_acts(model, sae, corpus)  # [c, p, f]
    n_ctx, n_pos, d = acts.shape
    assert stats.corpus_ids.tolist() == corpus.tolist() and stats.d_sae == d
    np.testing.assert_array_equal(stats.fire_count, (acts > 0).sum((0, 1)))
    np.testing.assert_allclose(stats.max_act, acts.max((0, 1)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.sum_act, acts.sum((0, 1), dtype=np.float64), rtol=1e-5, atol=1e-4)
    ctx_max, ctx_arg = acts.max(1), acts.argmax(1)  # [c, f]
    checked = 0
    for f in range(d):
        ranked = sorted(((-ctx_max[c, f], c) for c in range(n_ctx) if ctx_max[c, f] > 0))[:k]
        want_vals = [-v for v, _ in ranked]
        got = stats.top_ctx[f] >= 0
        assert got.sum() == len(ranked), f
        np.testing.assert_allclose(stats.top_values[f, : len(ranked)], want_vals, rtol=1e-6, atol=1e-6)
        assert (stats.top_values[f, len(ranked):] == 0).all()
        for j, (_, c) in enumerate(ranked):
            if j + 1 < len(ranked) and np.isclose(want_vals[j], want_vals[j + 1]):
                continue  # a tie: either order is right
            assert stats.top_ctx[f, j] == c and stats.top_pos[f, j] == ctx_arg[c, f]
            p = ctx_arg[c, f]
            expect = np.full(before + 1 + after, np.nan)
            lo, hi = max(0, p - before), min(n_pos, p + after + 1)
            expect[lo - (p - before) : hi - (p - before)] = acts[c, lo:hi, f]
            np.testing.assert_allclose(stats.windows[f, j], expect, rtol=1e-6, atol=1e-6)
            np.testing.assert_array_equal(stats.window_ids(f, j) >= 0, np.isfinite(expect))
            checked += 1
        counts, edges = stats.histogram(f)
        values = acts[..., f][acts[..., f] > 0]
        if values.size:
            assert edges[-1] > values.max()
            np.testing.assert_array_equal(counts, np.histogram(values, edges)[0])
        else:
            assert counts.sum() == 0 and stats.hist_width[f] == 0
    assert checked > d  # most features have several untied contexts


def test_logit_effects_are_w_dec_through_the_processed_unembedding(model, sae):
    processed = process_weights(model)  # fold_ln + center_unembed, as TransformerLens's from_pretrained does
    w_u = processed.embed_out.weight.detach().double().T  # [d_model, vocab]
    expect = sae.W_dec.detach().double() @ w_u
    got = F.feature_logit_effects(model, sae)
    np.testing.assert_allclose(got.numpy(), expect.numpy(), rtol=1e-4, atol=1e-5)
    up_i, up_v, down_i, down_v = F.top_logit_effects(model, sae, n=7, chunk=40)  # chunks: 40 + 40 + 16 features
    assert up_i.shape == (sae.cfg.d_sae, 7)
    np.testing.assert_array_equal(up_i.numpy(), expect.topk(7, dim=-1).indices.numpy())
    np.testing.assert_array_equal(down_i.numpy(), (-expect).topk(7, dim=-1).indices.numpy())
    np.testing.assert_allclose(down_v.numpy(), expect.gather(1, down_i).numpy(), rtol=1e-4, atol=1e-5)


def test_cache_is_reused_checked_and_rebuilt(model, sae, corpus, tmp_path, monkeypatch):
    first = F.feature_stats(model, sae, corpus, batch_size=8, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("features-*.wbfeats"))
    assert len(files) == 1 and not list(tmp_path.glob(".*"))  # written atomically: no temporary left behind

    def no_forward(*args, **kwargs):
        raise AssertionError("the cached result should have been used")

    monkeypatch.setattr(F, "encode_batch", no_forward)
    again = F.feature_stats(model, sae, corpus, batch_size=4, cache_dir=tmp_path, progress=False)  # batching is no key
    for field in ("top_values", "top_ctx", "windows", "hist_counts", "fire_count"):
        np.testing.assert_array_equal(getattr(again, field), getattr(first, field))
    monkeypatch.undo()

    data = bytearray(files[0].read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the archive
    files[0].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        F.FeatureStats.from_bytes(files[0].read_bytes(), str(files[0]))
    with pytest.warns(UserWarning, match="checksum mismatch.*recomputing"):
        rebuilt = F.feature_stats(model, sae, corpus, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(rebuilt.top_values, first.top_values)
    F.FeatureStats.from_bytes(files[0].read_bytes())  # the file was rewritten whole
    F.feature_stats(model, sae, corpus, k=3, cache_dir=tmp_path, progress=False)
    other = make_sae(model, seed=1)
    F.feature_stats(model, other, corpus, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("features-*.wbfeats"))) == 3  # settings and weights are part of the key
    with model.hooks([("blocks.0.hook_resid_post", lambda x, hook: x * 0.5)]):
        with pytest.warns(UserWarning, match="feature cache is not used"):
            hooked = F.feature_stats(model, sae, corpus, cache_dir=tmp_path, progress=False)
    assert not np.array_equal(hooked.top_values, first.top_values)  # computed under the hook, not read back


def test_texts_become_packed_contexts(model):
    ids = F.corpus_contexts(model, TEXTS * 3, ctx_len=8)
    stream = []
    for text in TEXTS * 3:
        stream += model.tokenizer.encode(text) + [model.config.eos_token_id]
    assert ids.shape == (len(stream) // 8, 8) and ids.flatten().tolist() == stream[: ids.numel()]
    assert F.corpus_contexts(model, TEXTS * 3, ctx_len=8, max_contexts=2).tolist() == ids[:2].tolist()
    with pytest.raises(ValueError, match="fewer than one context"):
        F.corpus_contexts(model, "light", ctx_len=64)


@pytest.fixture(scope="module")
def view(model, sae, corpus):
    return FeatureView.from_sae(sae, model, corpus, prompts=TEXTS, k=4, batch_size=8, progress=False, features=[3])


def test_view_answers_from_the_spliced_models_numbers(model, sae, view):
    ids = [model.tokenizer.encode(t) for t in TEXTS]
    assert [p["tokens"] for p in view.prompts] == [workbench.inputs.token_strings(model.tokenizer, i, readable=True) for i in ids]
    acts = [dense_acts(model, sae, torch.tensor([i]))[0] for i in ids]
    stats = view._stats
    f = int(np.argmax(stats.fire_count))
    assert view.feature == f  # the default: the most frequent feature
    meta, buffers = view._respond({"what": "feature", "feature": f})
    assert buffers == [] and meta == view.feature_data(f)
    assert meta["fires"] == int(stats.fire_count[f]) and meta["density"] == pytest.approx(stats.fire_count[f] / stats.n_tokens)
    for p, a in enumerate(acts):
        np.testing.assert_allclose(meta["prompt_values"][p], a[:, f], atol=2e-6)
    top = meta["contexts"][0]
    row = stats.corpus_ids[top["ctx"]]
    assert top["tokens"][top["center"]] == view._strings([int(row[top["pos"]])])[0]
    assert top["values"][top["center"]] == pytest.approx(top["score"]) == pytest.approx(stats.max_act[f])
    assert [b[0] for b in meta["boosted"]] == view._strings(F.top_logit_effects(model, sae, 10)[0][f].tolist())
    # a clicked token: the features active there, strongest first
    pos = 3
    token, _ = view._respond({"what": "token", "prompt": 1, "pos": pos})
    order = np.argsort(-acts[1][pos])
    expect = [int(g) for g in order if acts[1][pos, g] > 0][:12]
    assert [g for g, _ in token["features"]] == expect
    np.testing.assert_allclose([v for _, v in token["features"]], acts[1][pos, expect], atol=2e-6)
    rows = {r[0]: r for r in view.features}
    assert len(rows) == sae.cfg.d_sae and rows[f][1] == pytest.approx(stats.density[f], rel=1e-3)


def test_repr_says_what_the_view_shows(view):
    text = repr(view)
    assert text.startswith(f"FeatureView: 96 SAE features at {HOOK} over {23 * 20} corpus tokens, feature #{view.feature} selected")
    assert "2 texts of" in text and "view.show()" in text


def test_the_request_channel_answers_and_reports_errors(view):
    sent = []
    view.send = lambda msg, buffers=None: sent.append(msg)
    try:
        view._on_custom_msg(view, {"type": "request", "id": "a:1", "what": "feature", "feature": 3}, [])
        view._on_custom_msg(view, {"type": "request", "id": "a:2", "what": "feature", "feature": 10**6}, [])
        view._on_custom_msg(view, {"type": "request", "id": "a:3", "what": "nonsense"}, [])
    finally:
        del view.send
    assert sent[0]["ok"] and sent[0]["meta"]["feature"] == 3 and sent[0]["meta"]["source"] == "kernel"
    assert not sent[1]["ok"] and "feature must be an index in 0..95" in sent[1]["error"]
    assert not sent[2]["ok"] and "expected 'feature' or 'token'" in sent[2]["error"]


def test_bad_input_is_named(model, sae, corpus):
    stats = F.feature_stats(model, sae, corpus[:4], progress=False)
    logits = F.top_logit_effects(model, sae, 3)
    with pytest.raises(ValueError, match=r"feature must be an index in 0\.\.95, got 96"):
        FeatureView(stats, None, *logits, feature=96)
    with pytest.raises(ValueError, match=r"boosted_ids must be \[d_sae=96, n\]"):
        FeatureView(stats, None, logits[0][:5], *logits[1:])
    with pytest.raises(ValueError, match=r"prompt_acts\[0\] must be \[pos=2, d_sae=96\]"):
        FeatureView(stats, None, *logits, prompt_ids=[[5, 6]], prompt_acts=[np.zeros((2, 4))])
    with pytest.raises(TypeError, match="stats must be a FeatureStats"):
        FeatureView({"top_values": 1}, None, *logits)
    with pytest.raises(ValueError, match="bins must be even"):
        F.feature_stats(model, sae, corpus, bins=5, progress=False)
    with pytest.raises(ValueError, match=r"corpus token ids must be \[n_contexts, ctx_len\]"):
        F.feature_stats(model, sae, torch.arange(5), progress=False)
    with pytest.raises(KeyError, match="blocks.9.hook_resid_post"):
        F.feature_stats(model, make_sae(model, hook="blocks.9.hook_resid_post"), corpus, progress=False)
    mlp = SAE(SAEConfig(d_in=4 * model.config.hidden_size, d_sae=8, architecture="standard", hook_name="blocks.0.mlp.hook_post"))
    with pytest.raises(ValueError, match="need an SAE on the residual stream"):
        F.feature_logit_effects(model, mlp)
    off_stream = FeatureView(model, mlp, corpus[:4], progress=False)  # no logit effects to show, the rest as usual
    assert off_stream.feature_data(0)["boosted"] == [] and off_stream.n_features == 8
    with pytest.raises(TypeError, match="cfg.hook_name"):
        F.feature_stats(model, object(), corpus, progress=False)


def test_standalone_page_fits_its_budget_keeping_the_selected_feature(view):
    full = view.to_html()
    assert "carrying" not in full and '"notes":[]' in full
    small = view.to_html(max_bytes=80_000)
    assert len(small.encode()) <= 80_000
    assert "carrying" in small and "features=" in small
    state, payload = view._export(60_000)
    kept = [int(f) for f in payload["features"]]
    assert kept[:2] == [view.feature, 3]  # the selected one, then those passed as features=
    assert [r[0] for r in state["features"]] == sorted(kept)  # the page lists only what it carries
    assert all("prompt_values" not in d for d in payload["features"].values())  # shaded from payload["tokens"]
    with pytest.raises(ValueError, match="the selected feature alone needs about"):
        view._export(3_000)
    token_lists = payload["tokens"][1][3]
    assert [g for g, _ in token_lists][:12] == [g for g, _ in view.token_features(1, 3)]


def test_shorthand_and_hooks(model, sae, corpus):
    """`FeatureView(model, sae, corpus)` is `from_sae`; built inside `model.hooks`, it shows the model under them."""
    a = FeatureView(model, sae, corpus[:6], progress=False)
    b = FeatureView.from_model(model, sae, corpus[:6], progress=False)
    assert a.feature_data(a.feature) == b.feature_data(a.feature)
    with model.hooks([("blocks.0.hook_resid_post", lambda x, hook: x * 0.0)]):
        ablated = FeatureView(model, sae, corpus[:6], progress=False)
    assert not np.array_equal(ablated._stats.top_values, a._stats.top_values)
