"""Page budgets (issue 15, item 9, and `LogitLensView(k=...)` from item 10): every widget's page fits `max_bytes` on
long inputs, rounding or cutting what it must and saying so in the page; too small a budget is one clear error.
Build time is measured in bench/bench_widgets.py, not asserted here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from tests.helpers import browser, random_model
from tests.test_viz_browser import chromium  # noqa: F401 (the browser fixture)
from workbench.analysis import lens_log_probs, residual_stack
from workbench.viz.attention import AttentionView, digest, pool_max, quantise
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

N = 5000  # tokens of the long inputs
BUDGETS = [5_000_000, 500_000, 100_000, 50_000]


def _payload(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="wb-data">(.*?)</script>', page, re.S).group(1))


def _state(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="wb-state">(.*?)</script>', page, re.S).group(1))


def _causal(n: int, layers: int, heads: int, sharpness: float = 3.0) -> np.ndarray:
    logits = sharpness * torch.randn(layers, heads, n, n, generator=torch.Generator().manual_seed(0))
    return logits.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), -torch.inf).softmax(-1).numpy()


def _lens(n: int = N, rows: int = 4, vocab: int = 500, **kwargs) -> LogitLensView:
    lp = torch.randn(rows, n, vocab, generator=torch.Generator().manual_seed(0)).mul_(3).log_softmax(-1)
    ids = torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(1)).tolist()
    return LogitLensView([f" w{i}" for i in range(n)], lp, ids=[ids], **kwargs)


def _tokens(n: int = N) -> TokenView:
    rng = np.random.default_rng(0)
    return TokenView([f" w{i}" for i in range(n)], loss=rng.exponential(size=n), activations=rng.normal(size=(2, n, 16)),
                     dla=rng.normal(size=(5, n)), components=["embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp"],
                     kind="neuron", neurons=[(1, 3)])  # fmt: skip


@pytest.fixture(scope="module")
def long_views() -> dict:
    return {"attention": AttentionView([f" w{i}" for i in range(1200)], _causal(1200, 2, 2)), "lens": _lens(),
            "tokens": _tokens()}


@pytest.mark.parametrize("name", ["attention", "lens", "tokens"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_every_page_fits_its_budget_and_says_what_it_left_out(long_views, name, budget):
    view = long_views[name]
    page = view.to_html(max_bytes=budget)
    assert len(page.encode("utf-8")) <= budget
    notes = _payload(page)["notes"]
    if budget < 500_000:
        assert notes and all("max_bytes" in n or "rounded" in n or "hover" in n for n in notes), notes
    if any(n.startswith("showing positions") for n in notes):
        shown = int(re.search(r"positions 0-(\d+)", " ".join(notes)).group(1)) + 1
        texts = _state(page).get("prompts") or _state(page)["texts"]
        assert len(texts[0]["tokens"]) == shown < N


def test_logit_lens_page_was_12mb_whatever_the_budget():
    """The issue's case: every target's grid at full precision, top tokens repeated per target."""
    view = _lens(rows=3, vocab=50)
    default, small = view.to_html(), view.to_html(max_bytes=1_000_000)
    assert len(default.encode()) <= 5_000_000 and len(small.encode()) <= 1_000_000
    data = _payload(default)
    assert set(data["grids"][0]) == {"top", "final", "next"} and not data["notes"]  # all there at the default budget


def test_long_prompts_of_a_random_model_fit(neox_tokenizer_file):
    model = random_model(str(neox_tokenizer_file))
    ids = torch.randint(2, 50000, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    for cls in (AttentionView, LogitLensView, TokenView):
        view = cls(model, ids)
        for budget in (1_000_000, 60_000):
            assert len(view.to_html(max_bytes=budget).encode()) <= budget, (cls.__name__, budget)


def test_too_small_a_budget_is_one_clear_error():
    n = 1000
    view = AttentionView([f" a-rather-long-token-{i:05d}" for i in range(n)], _causal(n, 1, 1))  # tokens alone: 30 kB
    with pytest.raises(ValueError, match=r"needs a page of at least \d+ bytes, over max_bytes=50000"):
        view.to_html(max_bytes=50_000)
    assert len(view.to_html(max_bytes=100_000).encode()) <= 100_000
    with pytest.raises(ValueError, match="max_bytes must be at least 50000"):
        view.to_html(max_bytes=10)


def test_digest_matches_the_reference_formulas():
    p = _causal(700, 1, 1)[0, 0]  # several row blocks
    q, ent, mx = digest(p)
    np.testing.assert_array_equal(q, quantise(p))
    pd = p.astype(np.float64)
    want = -(pd * np.log(np.where(pd > 0, pd, 1))).sum(-1).mean()
    assert ent == pytest.approx(want, rel=1e-6) and mx == p.max()


@pytest.mark.parametrize("n, m", [(100, 7), (101, 34), (64, 16)])  # big padded blocks, small padded, exact
def test_pool_max_matches_a_loop(n, m):
    x = np.random.default_rng(0).integers(0, 255, size=(2, n, n)).astype(np.uint8)
    f = -(-n // m)
    want = [[x[:, i * f : (i + 1) * f, j * f : (j + 1) * f].max(axis=(1, 2)) for j in range(m)] for i in range(m)]
    np.testing.assert_array_equal(pool_max(x, m), np.moveaxis(np.array(want), -1, 0))


def test_logit_lens_blocks_equal_one_pass(neox_tokenizer_file):
    """from_model computes the lens a block of positions at a time (~220 here): the same top tokens and targets."""
    model = random_model(str(neox_tokenizer_file))
    ids = torch.randint(2, 50000, (1, 600), generator=torch.Generator().manual_seed(2))
    view = LogitLensView(model, ids)
    lp = lens_log_probs(model, residual_stack(model, ids)[0][:, 0])  # [rows, pos, vocab] in one go
    top = lp.topk(5, -1)
    np.testing.assert_array_equal(view._topk[0][0], top.indices.numpy())
    np.testing.assert_allclose(view._topk[0][1], top.values.exp().numpy(), rtol=1e-5)
    g = view.grid(0, "next")
    nxt = ids[0, 1:]
    want = lp[:, torch.arange(599), nxt]
    np.testing.assert_allclose(np.array([r[:-1] for r in g["target_prob"]]), want.exp().numpy(), rtol=1e-5)
    assert [r[:-1] for r in g["target_rank"]] == (1 + (lp[:, :-1] > want[..., None]).sum(-1)).tolist()


def test_logit_lens_k_is_clamped_to_the_vocabulary_and_checked():
    view = _lens(n=4, rows=2, vocab=7, k=10**6)
    assert view._k == 7 and len(view.grid(0, "final")["top_tokens"][0][0]) == 7
    assert _lens(n=4, rows=2, vocab=7, k=np.int64(3))._k == 3
    for bad in (0, -1, True, 2.5, "5"):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            _lens(n=4, rows=2, vocab=7, k=bad)


def test_logit_lens_targets_outside_the_vocabulary_are_refused():
    view = _lens(n=4, rows=2, vocab=7)
    with pytest.raises(ValueError, match=r"token 7, outside the vocabulary 0\.\.6"):
        view.grid(0, "id:7")
    with pytest.raises(ValueError, match="unknown target"):
        view.grid(0, "id:seven")
    assert view.grid(0, "id:6")["target_rank"][0][0] >= 1


# ---- in Chromium: a cut page still works and shows its note ----------------------------------------------
@browser
@pytest.mark.browser
@pytest.mark.parametrize("name", ["attention", "lens", "tokens"])
def test_a_page_cut_to_its_budget_renders_and_says_so(chromium, long_views, name, tmp_path):
    view = long_views[name]
    path = view.to_html(tmp_path / f"{name}.html", max_bytes=100_000)
    notes = _payload(path.read_text(encoding="utf-8"))["notes"]
    page = chromium.new_page(viewport={"width": 1100, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#wb-root[data-ready='1'] .wb-note")
    assert page.inner_text(".wb-note") == " \u00b7 ".join(notes)
    loaded = {"attention": ".wb-attn[data-loaded='0:0:0']", "lens": ".wb-lensview[data-loaded='0|final']",
              "tokens": ".wb-tokenview[data-loaded='neuron:0:0']"}[name]
    page.wait_for_selector(loaded)
    state = _state(path.read_text(encoding="utf-8"))
    tokens = (state.get("prompts") or state["texts"])[0]["tokens"]
    cells = {"attention": ".wb-tokens .wb-tok", "lens": "tr[data-row] >> nth=0 >> td", "tokens": ".wb-text .wb-tok"}[name]
    assert page.locator(cells).count() == len(tokens)
    if name == "lens":  # the page's grid is the kernel's, rounded
        grid = view.grid(0, "final")
        assert page.inner_text("td[data-r='1'][data-c='2']").replace("\u00b7", " ") == grid["top_tokens"][1][2][0]
    page.close()
    assert errors == []
