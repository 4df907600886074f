"""FeatureView in headless Chromium: the exported page renders and browses with no network; live, selecting a
feature in the browser asks the kernel-side view (its real request handler) and shows the kernel's numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import workbench
from workbench import sae as wsae
from tests.helpers import browser, screenshot
from tests.test_feature_view import TEXTS
from tests.test_viz_browser import chromium, open_page  # noqa: F401 (fixtures)
from workbench.viz import static
from workbench.viz.feature_view import FeatureView

pytestmark = [pytest.mark.browser, browser]


@pytest.fixture(scope="module")
def view():
    """The demo SAE over held-out Bible chapters (the README's picture)."""
    from workbench.data.corpus import load_kjv, split_documents

    model = workbench.load("demo").eval()
    held_out = [d.text for d in split_documents(load_kjv())[1]]
    return FeatureView.from_sae(wsae.load("demo"), model, held_out, prompts=TEXTS, ctx_len=32, max_contexts=64, k=5,
                                progress=False, title="FeatureView: the demo SAE (exported page)")


def _shown(page, sel: str) -> list[str]:
    return page.eval_on_selector_all(sel, "es => es.map(e => e.textContent)")


def _check_feature(page, view, f: int, sig: int | None = None) -> None:
    """The page shows feature `f` as Python computed it (rounded to `sig` significant digits)."""
    page.wait_for_selector(f".wb-featview[data-loaded='{f}']")
    data = view.feature_data(f, sig)
    assert page.get_attribute(".wb-featview", "data-hist-total") == str(data["fires"])
    assert page.locator(".wb-fcontexts .wb-example").count() == len(data["contexts"])
    scores = _shown(page, ".wb-fcontexts .wb-score")
    assert scores == [f"{c['score']:.3f}" for c in data["contexts"]]
    assert f"Feature #{f}" in page.inner_text(".wb-fhead")
    assert page.locator(".wb-flogits td.wb-fup").count() == 2 * len(data["boosted"])


def test_exported_page_browses_features_and_tokens_offline(view, open_page, tmp_path):  # noqa: F811
    page = open_page(view.to_html(tmp_path / "features.html"))
    f0 = view.feature
    _check_feature(page, view, f0)
    assert page.locator(".wb-frow").count() == min(300, view.n_features)
    assert page.get_attribute(".wb-featview", "data-source") == "standalone page"
    first = view.feature_data(f0)["contexts"][0]
    centre = page.locator(".wb-fcontexts .wb-example >> nth=0").locator(f".wb-tok[data-i='{first['center']}']")
    assert centre.evaluate("e => e.style.fontWeight") == "700" and centre.evaluate("e => e.style.backgroundColor")
    centre.hover()
    assert f"{first['values'][first['center']]:.4f}" in page.inner_text(".wb-tip")
    # the search box filters the list; clicking a row selects that feature
    page.fill(".wb-fsearch", "#1")
    rows = _shown(page, ".wb-frow .wb-fid")
    matching = sum(str(i).startswith("1") for i in range(view.n_features))
    assert rows and all(r.startswith("#1") for r in rows) and len(rows) == min(300, matching)  # 300: rows drawn at most
    assert page.inner_text(".wb-fcount").startswith(f"{matching} match")
    target = next(r[0] for r in view.features if str(r[0]).startswith("1") and r[0] != f0 and r[1] > 0)
    page.click(f".wb-frow[data-f='{target}']")
    _check_feature(page, view, target)
    word = next(t.strip() for r in [view.features[target], *view.features] for t in r[3] if t.strip().isalpha())
    page.fill(".wb-fsearch", word)  # a word: features whose top boosted tokens contain it (any case)
    matching = [r[0] for r in view.features if word.lower() in " ".join(r[3]).lower()]
    assert _shown(page, ".wb-frow .wb-fid") == [f"#{f}" for f in matching[:300]] and len(matching) > 0
    # prompt tokens are shaded by the selected feature; a click lists the features active there, as Python has it
    vals = view.feature_data(target)["prompt_values"][0]
    shaded = page.eval_on_selector_all(".wb-fprompt .wb-tok", "es => es.map(e => !!e.style.backgroundColor)")
    assert shaded == [v is not None and v > 0 for v in vals]
    page.click(".wb-fprompt .wb-tok[data-i='2']")
    page.wait_for_selector(".wb-featview[data-token='0:2']")
    chips = _shown(page, ".wb-ftoken .wb-fchip")
    assert chips == [f"#{g} {v:.3f}" for g, v in view.token_features(0, 2)]
    g = view.token_features(0, 2)[0][0]
    page.click(f".wb-ftoken .wb-fchip[data-f='{g}']")
    _check_feature(page, view, g)
    page.mouse.move(0, 0)  # no hover card in the picture
    screenshot(page, "feature_view", page.locator(".wb-featview"))
    page.select_option(".wb-featview .wb-fmain select", "1")  # the second prompt
    assert page.locator(".wb-fprompt .wb-tok").count() == len(view.prompts[1]["tokens"])


def test_page_cut_to_its_budget_says_so(view, open_page, tmp_path):  # noqa: F811
    page = open_page(view.to_html(tmp_path / "small.html", max_bytes=70_000))
    _check_feature(page, view, view.feature, sig=3)
    note = page.inner_text(".wb-note")
    assert "values rounded to 3 significant digits" in note
    kept = int(re.search(rf"carrying (\d+) of {view.n_features} features", note).group(1))
    assert 0 < kept < view.n_features and page.locator(".wb-frow").count() == min(300, kept)


# A stand-in for anywidget's comm: the page's model sends each request to the Python view's own handler
# (`_on_custom_msg`, as the kernel would) and syncs traits it sets back to the view.
MOUNT = """async ([src, state]) => {
  const mod = await import(URL.createObjectURL(new Blob([src], { type: "text/javascript" })));
  const listeners = {};
  const emit = (ev, ...args) => (listeners[ev] || []).slice().forEach((f) => f(...args));
  let dirty = {};
  const model = {
    get: (k) => state[k],
    set: (k, v) => { if (state[k] === v) return; state[k] = v; dirty[k] = v; emit(`change:${k}`); },
    save_changes: () => { const d = dirty; dirty = {}; window.kernelSync(d); },
    on: (ev, f) => ev.split(" ").forEach((e) => (listeners[e] ||= []).push(f)),
    off: (ev, f) => ev.split(" ").forEach((e) => (listeners[e] = (listeners[e] || []).filter((g) => g !== f))),
    send: async (msg) => { for (const reply of await window.kernelMsg(msg)) emit("msg:custom", reply, []); },
  };
  window.fromKernel = (k, v) => { state[k] = v; emit(`change:${k}`); };
  mod.default.render({ model, el: document.getElementById("root") });
  return [typeof mod.render, typeof mod.default.render];  // anywidget warns about a named `render` export
}"""


def test_selecting_a_feature_asks_the_kernel(view, chromium):  # noqa: F811
    asked, errors = [], []

    def kernel_msg(msg):
        replies = []
        view.send = lambda content, buffers=None: replies.append(json.loads(json.dumps(content)))
        try:
            view._on_custom_msg(view, msg, [])
        finally:
            del view.send
        asked.append(msg)
        return replies

    def kernel_sync(changes):
        for k, v in changes.items():
            setattr(view, k, v)

    page = chromium.new_page(viewport={"width": 1100, "height": 800})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("http*://**", lambda route: (errors.append(f"network request {route.request.url}"), route.abort()))
    page.expose_function("kernelMsg", kernel_msg)
    page.expose_function("kernelSync", kernel_sync)
    page.set_content(f"<!doctype html><html><head><style>{static.css()}</style></head><body><div id='root'></div></body></html>")
    start = view.feature
    try:
        assert page.evaluate(MOUNT, [static.bundle("feature_view.js"), view._state()]) == ["undefined", "function"]
        _check_feature(page, view, start)
        assert page.get_attribute(".wb-featview", "data-source") == "kernel"
        # a click in the browser: the trait syncs to the kernel, which answers the request
        target = next(r[0] for r in reversed(view.features[:300]) if r[0] != start and r[1] > 0)
        page.click(f".wb-frow[data-f='{target}']")
        _check_feature(page, view, target)
        assert view.feature == target and asked[-1] == {"type": "request", "id": asked[-1]["id"], "what": "feature", "feature": target}
        assert page.get_attribute(".wb-featview", "data-source") == "kernel"
        # the prompt's shading is the kernel's dense activations (no page payload exists here)
        vals = np.array(view.feature_data(target)["prompt_values"][1], dtype=float)
        page.select_option(".wb-fmain select", "1")
        assert view.prompt == 1
        shaded = page.eval_on_selector_all(".wb-fprompt .wb-tok", "es => es.map(e => !!e.style.backgroundColor)")
        assert shaded == (vals > 0).tolist()
        page.click(".wb-fprompt .wb-tok[data-i='1']")
        page.wait_for_selector(".wb-featview[data-token='1:1']")
        assert asked[-1]["what"] == "token" and asked[-1]["prompt"] == 1 and asked[-1]["pos"] == 1
        assert _shown(page, ".wb-ftoken .wb-fchip") == [f"#{g} {v:.3f}" for g, v in view.token_features(1, 1)]
        # the kernel sets the trait: the browser follows and asks for that feature
        other = next(r[0] for r in view.features if r[0] not in (start, target) and r[1] > 0)
        view.feature = other
        page.evaluate("([k, v]) => window.fromKernel(k, v)", ["feature", view.feature])
        _check_feature(page, view, other)
    finally:
        view.feature, view.prompt = start, 0
        page.close()
    assert errors == [], errors
