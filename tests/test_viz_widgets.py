"""Widget kernels (no browser): what each view answers, its export size and its fallback HTML."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.helpers import demo_or_random, random_model
from workbench.inputs import as_prompts
from workbench.viz.attention import AttentionView, pool_max, quantise
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

TEXTS = ["When Mary and John went to the store, John gave a drink to", "1 2 3 4 5 1 2 3 4 5"]


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return demo_or_random(str(neox_tokenizer_file))


def _mlp_post(model, ids: list[int]) -> np.ndarray:
    """MLP activations [layer, pos, d_mlp] as run_with_cache records them."""
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n.endswith("mlp.hook_post"))
    return np.stack([cache["post", layer][0].numpy() for layer in range(model.config.num_hidden_layers)])


def _payload(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="wb-data">(.*?)</script>', page, re.S).group(1))


def test_attention_view_serves_the_models_patterns(model):
    view = AttentionView(model, TEXTS)
    ids = as_prompts(model, TEXTS[1])[0].ids
    with torch.no_grad():
        att = model(torch.tensor([ids]), output_attentions=True).attentions
    layer, head = len(att) - 1, att[0].shape[1] - 1
    meta, (buf,) = view._respond({"what": "head", "prompt": 1, "layer": layer, "head": head})
    p = att[layer][0, head].double().numpy()
    got = np.frombuffer(buf, dtype=np.uint8).reshape(len(ids), len(ids)) / 255.0
    np.testing.assert_allclose(got, p, atol=0.5 / 255 + 1e-6)
    ent = -(p * np.log(np.where(p > 0, p, 1))).sum(-1).mean()
    assert meta["entropy"] == pytest.approx(ent, abs=1e-5)
    assert meta["n"] == len(ids) and meta["max"] == pytest.approx(p.max(), abs=1e-6)
    tmeta, (tbuf,) = view._respond({"what": "thumbs", "prompt": 0})
    assert len(tbuf) == len(view.layers) * len(view.heads) * tmeta["t"] ** 2


def test_attention_view_from_cache_equals_the_live_one(model):
    ids = as_prompts(model, TEXTS[0])[0].ids
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    tokens = as_prompts(model, TEXTS[0])[0].tokens
    a = AttentionView.from_cache(out.attentions, tokens, layers=[0], heads=[1])
    b = AttentionView(model, TEXTS[0], layers=[0], heads=[1])
    assert a.prompts == b.prompts and a.layers == [0] and a.heads == [1]
    np.testing.assert_array_equal(a.pattern(0, 0, 1), b.pattern(0, 0, 1))


def test_attention_view_rejects_bad_selections(model):
    with pytest.raises(ValueError, match="layers must be indices"):
        AttentionView(model, "hello", layers=[99])
    with pytest.raises(ValueError, match="heads must be indices"):
        AttentionView(model, "hello", heads=-1)
    view = AttentionView(model, "hello there", layers=[0])
    with pytest.raises(KeyError):
        view._respond({"what": "head", "prompt": 0, "layer": 1, "head": 0})
    with pytest.raises(ValueError, match="unknown request"):
        view._respond({"what": "nope"})
    with pytest.raises(ValueError, match="batch size"):
        AttentionView.from_cache([np.zeros((2, 1, 3, 3))], ["a", "b", "c"])


def test_pool_max_matches_a_loop():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(2, 13, 13)).astype(np.uint8)
    got = pool_max(x, 5)  # blocks of 3
    for i in range(5):
        for j in range(5):
            assert (got[:, i, j] == x[:, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].max(axis=(1, 2))).all()


def test_export_512_tokens_12x12_stays_under_5mb(neox_tokenizer_file, tmp_path):
    big = random_model(str(neox_tokenizer_file), n_layers=12, n_heads=12, d_model=48)
    ids = torch.randint(0, 50000, (512,), generator=torch.Generator().manual_seed(0)).tolist()
    view = AttentionView(big, ids)
    assert view.to_html(tmp_path / "a.html") == tmp_path / "a.html"
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert len(page.encode()) < 5_000_000
    data = _payload(page)
    assert data["prompts"][0]["n"] == 512 and len(data["prompts"][0]["layers"]) == 12


def test_export_falls_back_to_lower_precision_to_fit_the_budget(tmp_path):
    """When the 8-bit page is over budget, precision and then resolution drop until it fits."""
    rng = np.random.default_rng(0)
    n, L, H = 256, 3, 4
    logits = rng.normal(size=(L, 1, H, n, n)).astype(np.float32)
    logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    pats = np.exp(logits - logits.max(-1, keepdims=True))
    pats /= pats.sum(-1, keepdims=True)
    view = AttentionView.from_cache(list(pats), [f"t{i}" for i in range(n)])
    full = view.to_html()
    assert _payload(full)["prompts"][0]["bits"] == 8
    budget = int(len(full.encode()) * 0.6)
    page = view.to_html(tmp_path / "noisy.html", max_bytes=budget).read_text(encoding="utf-8")
    assert len(page.encode()) < budget
    pd = _payload(page)["prompts"][0]
    assert pd["bits"] == 4 or pd["m"] < n
    small = view.to_html(max_bytes=120_000)
    assert len(small.encode()) < 120_000


def test_widgets_offer_a_static_html_fallback(model):
    view = AttentionView(model, "hello world")
    data, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/html"].startswith("<iframe srcdoc=") and "wb-data" in data["text/html"]
    with pytest.raises(ValueError, match="max_bytes"):
        view.to_html(max_bytes=10)


def test_logit_lens_grid_matches_the_model(model):
    view = LogitLensView(model, TEXTS[0], k=3, targets=[" drink"])
    ids = as_prompts(model, TEXTS[0])[0].ids
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    n_rows = len(model.gpt_neox.layers) + 1
    g = view.grid(0, "next")
    assert len(g["top_tokens"]) == n_rows and len(g["top_tokens"][0]) == len(ids)
    assert g["target_prob"][-1][-1] is None  # no next token after the last one
    np.testing.assert_allclose(g["target_prob"][-1][:-1], probs[np.arange(len(ids) - 1), ids[1:]].numpy(), rtol=1e-3, atol=1e-6)
    want_rank = 1 + (probs[np.arange(len(ids) - 1)] > probs[np.arange(len(ids) - 1), ids[1:]][:, None]).sum(-1)
    assert g["target_rank"][-1][:-1] == want_rank.tolist()
    top = probs.topk(3, -1)
    np.testing.assert_allclose(g["top_probs"][-1], top.values.numpy(), atol=1e-4)
    final = view.grid(0, "final")
    assert all(r == 1 for r in final["target_rank"][-1])
    drink = view.grid(0, "text: drink")
    tid = model.tokenizer.encode(" drink")[0]
    np.testing.assert_allclose(drink["target_prob"][-1], probs[:, tid].numpy(), rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="unknown target"):
        view.grid(0, "bogus")
    page = view.to_html()
    assert set(_payload(page)["grids"][0]) == {"top", "final", "next", "text: drink"}


def test_token_view_values(model):
    view = TokenView(model, TEXTS, kind="neuron", layer=0, neuron=3, k=4)
    ids = as_prompts(model, TEXTS[0])[0].ids
    loss = view.values("loss")["values"][0]
    assert loss[0] is None and len(loss) == len(ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    ref = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(ids[1:]), reduction="none")
    np.testing.assert_allclose(loss[1:], ref.numpy(), atol=1e-5)
    neuron = view.values("neuron:0:3")
    post = _mlp_post(model, ids)[0, :, 3]
    np.testing.assert_allclose(neuron["values"][0], post, atol=2e-3)  # stored as float16
    scores = [e["score"] for e in neuron["examples"]]
    assert scores == sorted(scores, reverse=True) and 0 < len(scores) <= 4  # fewer where windows would overlap
    best = max(float(np.max(_mlp_post(model, p.ids)[0, :, 3])) for p in as_prompts(model, TEXTS))
    assert scores[0] == pytest.approx(best, abs=2e-3)
    last = f"L{len(model.gpt_neox.layers) - 1}.mlp"
    dla = view.values(f"dla:{last}")
    assert dla["values"][0][-1] is None and dla["diverging"]
    for bad in ["neuron:0", "neuron:0:999999", "dla:L99.attn", "x"]:
        with pytest.raises(ValueError):
            view.values(bad)
    with pytest.raises(ValueError, match="kind must be one of"):
        TokenView(model, "hi", kind="bogus")


def test_attention_view_from_an_activation_cache(model):
    if not hasattr(model, "run_with_cache"):
        pytest.skip("this model has no run_with_cache (hooks not available)")
    prompt = as_prompts(model, TEXTS[1])[0]
    _, cache = model.run_with_cache(torch.tensor([prompt.ids]))
    a = AttentionView.from_cache(cache, prompt.tokens)
    b = AttentionView(model, TEXTS[1])
    assert a.layers == b.layers and a.heads == b.heads
    for layer in a.layers:
        np.testing.assert_array_equal(a.pattern(0, layer, a.heads[-1]), b.pattern(0, layer, b.heads[-1]))


def test_token_view_top_examples_show_each_context_once():
    """Neighbouring high activations of one text share a context window: only the highest is listed."""
    n, window = 30, 4
    post = np.zeros((1, n, 2), np.float32)
    post[0, [10, 11, 12, 25], 1] = [5.0, 4.0, 3.0, 2.0]  # 11 and 12 fall in 10's window [6, 13)
    other = np.zeros((1, 8, 2), np.float32)
    other[0, 5, 1] = 4.5  # another text: its own context
    tokens = [[f"t{i}" for i in range(n)], [f"u{i}" for i in range(8)]]
    dla = [np.zeros((1, n)), np.zeros((1, 8))]
    view = TokenView(tokens, activations=[post, other], dla=dla, components=["embed"], kind="neuron", layer=0,
                     neuron=1, k=4, window=window)
    examples = view.top_examples(0, 1)
    assert [(e["text"], e["pos"], e["score"]) for e in examples[:3]] == [(0, 10, 5.0), (1, 5, 4.5), (0, 25, 2.0)]
    windows = [(e["text"], e["pos"] - e["center"], e["pos"] - e["center"] + len(e["tokens"])) for e in examples]
    for i, (t, lo, hi) in enumerate(windows):  # no two windows of one text overlap
        assert not any(t == u and lo < b and a < hi for u, a, b in windows[:i])
    assert examples[0]["tokens"] == tokens[0][6:13] and examples[0]["center"] == 4
