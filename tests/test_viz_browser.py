"""Exported pages in headless Chromium: structure, hover highlights, kernel-free requests, no console errors."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import browser, demo_or_random, launch_browser, screenshot
from workbench.inputs import as_prompts
from workbench.viz.attention import AttentionView
from workbench.viz.logit_lens import LogitLensView
from workbench.viz.token_view import TokenView

pytestmark = [pytest.mark.browser, browser]

TEXTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The cat sat on the mat. The cat sat on the mat.",
]


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return demo_or_random(str(neox_tokenizer_file))


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_browser(p)
        yield b
        b.close()


@pytest.fixture
def open_page(chromium):
    """open_page(path) -> page; fails the test on any console error or uncaught exception."""
    pages, errors = [], []

    def _open(path):
        page = chromium.new_page(viewport={"width": 1100, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("http*://**", lambda route: (errors.append(f"network request {route.request.url}"), route.abort()))
        page.goto(path.as_uri())
        page.wait_for_selector("#wb-root[data-ready='1']", timeout=10_000)
        pages.append(page)
        return page

    yield _open
    for p in pages:
        p.close()
    assert errors == [], f"console errors / network requests: {errors}"


def _backgrounds(page, sel=".wb-attn .wb-tokens .wb-tok"):
    return page.eval_on_selector_all(sel, "es => es.map(e => [e.style.backgroundColor, e.style.boxShadow])")


def test_attention_page(model, open_page, tmp_path):
    view = AttentionView(model, TEXTS, title="AttentionView (exported page)")
    n_layers, n_heads = len(view.layers), len(view.heads)
    n0 = len(view.prompts[0]["tokens"])
    view.to_html(tmp_path / "attention.html")
    page = open_page(tmp_path / "attention.html")
    page.wait_for_selector(".wb-attn[data-loaded='0:0:0'][data-thumbs='0']")
    assert page.locator(".wb-thumb").count() == n_layers * n_heads
    assert page.locator(".wb-tokens .wb-tok").count() == n0
    assert int(page.get_attribute(".wb-attn", "data-checksum")) == int(view._q[0][0, 0].astype(np.int64).sum())
    assert all(bg == ["", ""] for bg in _backgrounds(page))
    i = min(5, n0 - 1)
    page.hover(f".wb-tokens .wb-tok[data-i='{i}']")
    styles = _backgrounds(page)
    q = view._q[0][0, 0]
    assert [bool(bg) for bg, _ in styles] == [bool(q[i, j]) for j in range(n0)]  # what token i attends to
    assert [bool(sh) for _, sh in styles] == [bool(q[j, i]) for j in range(n0)]  # what attends to token i
    assert "wb-focus" in page.get_attribute(f".wb-tokens .wb-tok[data-i='{i}']", "class")
    screenshot(page, "attention_view", page.locator(".wb-attn"))
    # a thumbnail click loads that head; its stats came from Python
    L, H = view.layers[-1], view.heads[-1]
    page.click(f".wb-thumb[data-layer='{L}'][data-head='{H}']")
    page.wait_for_selector(f".wb-attn[data-loaded='0:{L}:{H}']")
    assert float(page.get_attribute(".wb-attn", "data-entropy")) == pytest.approx(view._stats[0][-1, -1, 0], abs=1e-6)
    assert int(page.get_attribute(".wb-attn", "data-checksum")) == int(view._q[0][-1, -1].astype(np.int64).sum())
    page.select_option(".wb-attn select >> nth=0", "1")  # second prompt
    page.wait_for_selector(f".wb-attn[data-loaded='1:{L}:{H}'][data-thumbs='1']")
    assert page.locator(".wb-tokens .wb-tok").count() == len(view.prompts[1]["tokens"])


def test_attention_page_at_reduced_precision_still_renders(open_page, tmp_path):
    n = 200
    rng = np.random.default_rng(1)
    logits = np.where(np.tril(np.ones((n, n), bool)), rng.normal(size=(2, 1, 3, n, n)), -np.inf)
    pats = np.exp(logits - logits.max(-1, keepdims=True))
    pats /= pats.sum(-1, keepdims=True)
    view = AttentionView.from_cache(list(pats), [f" w{i}" for i in range(n)])
    view.to_html(tmp_path / "low.html", max_bytes=90_000)
    page = open_page(tmp_path / "low.html")
    page.wait_for_selector(".wb-attn[data-loaded='0:0:0']")
    assert "stored at" in page.inner_text(".wb-info")
    page.hover(".wb-tokens .wb-tok[data-i='150']")
    assert sum(bool(bg) for bg, _ in _backgrounds(page)) > 0


def test_logit_lens_page(model, open_page, tmp_path):
    view = LogitLensView(model, TEXTS[0], targets=[" drink"], title="LogitLensView (exported page)")
    view.to_html(tmp_path / "lens.html")
    page = open_page(tmp_path / "lens.html")
    page.wait_for_selector(".wb-lensview[data-loaded='0|final']")
    n_rows, n_pos = len(model.gpt_neox.layers) + 1, len(view.prompts[0]["tokens"])
    assert page.locator("tr[data-row]").count() == n_rows
    assert page.locator("td.wb-cell").count() == n_rows * n_pos
    grid = view.grid(0, "final")
    cell = page.locator("td[data-r='1'][data-c='3']")
    assert cell.inner_text().replace("\u00b7", " ") == grid["top_tokens"][1][3][0]
    before = cell.evaluate("e => e.style.background")
    cell.hover()
    tip = page.inner_text(".wb-tip")
    assert f"{100 * grid['top_probs'][1][3][1]:.1f}%" in tip  # the second-best token is listed too
    assert "wb-hot" in cell.get_attribute("class")
    screenshot(page, "logit_lens_view")  # whole page: the hover card may overflow the widget
    page.select_option(".wb-lensview select >> nth=0", "text: drink")
    page.wait_for_selector(".wb-lensview[data-loaded='0|text: drink']")
    assert page.get_attribute(".wb-lensview", "data-target-rank-last") == str(view.grid(0, "text: drink")["target_rank"][-1][-1])
    page.select_option(".wb-lensview select >> nth=1", "rank")
    assert page.locator("td[data-r='1'][data-c='3']").evaluate("e => e.style.background") != before


def test_token_view_page(model, open_page, tmp_path):
    view = TokenView(model, TEXTS, kind="neuron", layer=0, neuron=5, neurons=[(1, 2)], k=5, title="TokenView (exported page)")
    view.to_html(tmp_path / "tokens.html")
    page = open_page(tmp_path / "tokens.html")
    page.wait_for_selector(".wb-tokenview[data-loaded='neuron:0:5']")
    n0 = len(view.texts[0]["tokens"])
    assert page.locator(".wb-text[data-text='0'] .wb-tok").count() == n0
    neuron = view.values("neuron:0:5")
    assert page.locator(".wb-example").count() == len(neuron["examples"]) > 0  # at most k=5, one per context
    vals = neuron["values"][0]
    page.hover(".wb-text[data-text='0'] .wb-tok[data-i='2']")
    assert f"{vals[2]:.4f}" in page.inner_text(".wb-tip")
    screenshot(page, "token_view", page.locator(".wb-tokenview"))
    page.select_option(".wb-tokenview select >> nth=0", "dla")
    comp = view.components[-1]
    page.wait_for_selector(f".wb-tokenview[data-loaded='dla:{comp}']")
    dla = view.values(f"dla:{comp}")["values"][0]
    page.hover(".wb-text[data-text='0'] .wb-tok[data-i='1']")
    assert f"{dla[1]:.4f}" in page.inner_text(".wb-tip")
    page.select_option(".wb-tokenview select >> nth=0", "loss")
    page.wait_for_selector(".wb-tokenview[data-loaded='loss']")
    assert page.locator(".wb-example").count() == 0
    page.select_option(".wb-tokenview select >> nth=0", "neuron")
    page.select_option(".wb-tokenview select >> nth=2", "1:2")
    page.wait_for_selector(".wb-tokenview[data-loaded='neuron:1:2']")


def test_modules_load_as_anywidget_loads_them(open_page, model, tmp_path):
    """anywidget imports the module and warns (deprecation) if it has a named `render`; ours has only the default
    export's. Control characters show as escapes, not missing-glyph boxes."""
    from workbench.viz import static

    view = TokenView(model, "a\x0bb", title="controls")
    page = open_page(view.to_html(tmp_path / "controls.html"))
    shown = page.eval_on_selector_all(".wb-text .wb-tok", "es => es.map(e => e.textContent)")
    assert "\\v" in shown and not any(ch < " " for s in shown for ch in s)
    load = """async (src) => {
        const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
        const mod = await import(url);
        return [typeof mod.render, typeof mod.default.render];
    }"""
    for entry in ("attention.js", "logit_lens.js", "token_view.js"):
        assert page.evaluate(load, static.bundle(entry)) == ["undefined", "function"], entry
