"""LogitLensView(..., lens="logit" | "tuned" | a Lens): the grid is the chosen lens's, from a model or a cache, and
the page says which lens it shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench
from tests.helpers import browser
from workbench.lens import LogitLens, TunedLens, load
from workbench.viz import show_logit_lens
from workbench.viz.logit_lens import LogitLensView

TEXT = "And God said, Let there be light: and there was light."


@pytest.fixture(scope="module")
def model():
    return workbench.load("demo")


def _top(lens, model, k=3):
    ids = model.to_tokens(TEXT)
    _, cache = model.run_with_cache(ids)
    with torch.no_grad():  # a tuned lens's translators are trainable parameters
        lp = torch.stack([lens.log_probs(cache, i)[0] for i in range(model.config.num_hidden_layers + 1)])
    return lp.exp().topk(k, -1).values.numpy()  # [rows, p, k]


def test_tuned_view_shows_the_tuned_lens(model):
    tuned = load("demo", model)
    view = LogitLensView(model, TEXT, k=3, lens="tuned")
    assert view.lens == "tuned"
    g = view.grid(0, "top")
    np.testing.assert_allclose(g["top_probs"], _top(tuned, model), atol=1e-5)
    logit = LogitLensView.from_model(model, TEXT, k=3)
    assert logit.lens == "logit"
    np.testing.assert_allclose(logit.grid(0, "top")["top_probs"], _top(LogitLens(model), model), atol=1e-5)
    assert not np.allclose(g["top_probs"][1], logit.grid(0, "top")["top_probs"][1], atol=1e-3)
    assert g["top_probs"][-1] == logit.grid(0, "top")["top_probs"][-1]  # the last row is the model's own, for both


def test_from_cache_and_a_lens_object(model):
    ids = model.to_tokens(TEXT)
    _, cache = model.run_with_cache(ids)
    a = LogitLensView.from_cache(cache, ids, lens="tuned").grid(0, "next")
    b = LogitLensView.from_model(model, TEXT, lens="tuned").grid(0, "next")
    assert a["target_rank"] == b["target_rank"]
    np.testing.assert_allclose(np.array(a["target_prob"][0][:-1]), np.array(b["target_prob"][0][:-1]), rtol=1e-5)
    lens = TunedLens(model)
    with torch.no_grad():
        lens.translators[1].bias.fill_(0.5)
    view = show_logit_lens(model, TEXT, lens=lens, k=2)
    np.testing.assert_allclose(view.grid(0, "top")["top_probs"], _top(lens, model, 2), atol=1e-5)


def test_bad_lens(model, tmp_path):
    with pytest.raises(ValueError, match=r"lens must be one of \('logit', 'tuned'\)"):
        LogitLensView(model, TEXT, lens="tunned")
    with pytest.raises(ValueError, match=r"lens must be one of \('logit', 'tuned'\)"):
        LogitLensView([["a", "b"]], [np.zeros((2, 2, 5))], lens="other")
    import shutil

    # a copy elsewhere is another model as far as the shipped lens knows (the demo directory itself is the demo)
    shutil.copytree(workbench.demo_path(), tmp_path / "copy", ignore=shutil.ignore_patterns("revisions", "*.png"))
    with pytest.raises(ValueError, match="demo model"):
        LogitLensView(workbench.load(str(tmp_path / "copy")), TEXT, lens="tuned")


@pytest.mark.browser
@browser
def test_the_exported_page_names_the_lens(model, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.helpers import launch_browser, screenshot

    LogitLensView(model, TEXT, lens="tuned").to_html(tmp_path / "tuned.html")
    LogitLensView(model, TEXT).to_html(tmp_path / "logit.html")
    with sync_playwright() as p:
        chromium = launch_browser(p)
        page = chromium.new_page()
        requests = []
        page.route("http*://**", lambda route: (requests.append(route.request.url), route.abort()))
        for name, note in (("tuned", "tuned lens: a learned affine translator"), ("logit", "logit lens: final layer norm")):
            page.goto((tmp_path / f"{name}.html").as_uri())
            page.wait_for_selector(".wb-lensview[data-loaded='0|final']", timeout=10_000)
            assert page.get_attribute(".wb-lensview", "data-lens") == name
            assert note in page.inner_text(".wb-info")
            if name == "tuned":  # (logit_lens_view.png is test_viz_browser's README picture)
                screenshot(page, "tuned_lens_view")
        chromium.close()
    assert requests == []
