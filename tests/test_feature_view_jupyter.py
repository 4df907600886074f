"""End to end in JupyterLab: a notebook shows a FeatureView; a click on a feature goes through the widget's comm to
the kernel, the view shows the kernel's numbers, and the selection syncs back into the kernel's traits."""

from __future__ import annotations

import json
import urllib.request

import nbformat
import pytest
import torch

import workbench
from tests.helpers import REPO, browser, run_cell_in_lab, run_notebook_in_lab, screenshot
from tests.test_feature_view import make_sae
from tests.test_viz_jupyter import _log, lab  # noqa: F401 (the JupyterLab server fixture)
from workbench.viz.feature_view import FeatureView

pytestmark = [pytest.mark.browser, pytest.mark.slow, browser]

SETUP = f"""import sys
sys.path[:0] = [{str(REPO)!r}]
import torch, workbench
from tests.test_feature_view import make_sae
from workbench.viz import FeatureView
model = workbench.load("demo").eval()
corpus = torch.randint(2, 4096, (16, 24), generator=torch.Generator().manual_seed(7))
view = FeatureView.from_sae(make_sae(model), model, corpus, prompts=["And God said"], k=4, progress=False)
view"""


def _expected() -> FeatureView:
    """The same view, built in the test process (same seeds)."""
    model = workbench.load("demo").eval()
    corpus = torch.randint(2, 4096, (16, 24), generator=torch.Generator().manual_seed(7))
    return FeatureView.from_sae(make_sae(model), model, corpus, prompts=["And God said"], k=4, progress=False)


def _put_notebook(url: str, token: str, name: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_code_cell('print("selected", view.feature)')]
    body = json.dumps({"type": "notebook", "format": "json", "content": json.loads(nbformat.writes(nb))}).encode()
    req = urllib.request.Request(f"{url}/api/contents/{name}?token={token}", data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


def test_feature_view_in_jupyterlab(lab):  # noqa: F811
    from playwright.sync_api import sync_playwright

    url, token = lab
    _put_notebook(url, token, "features.ipynb")
    view = _expected()
    start = view.feature
    target = next(r[0] for r in reversed(view.features[:300]) if r[0] != start and r[1] > 0)  # not 0, the default
    errors: list[str] = []
    with sync_playwright() as pw:
        page = run_notebook_in_lab(pw, url, token, "features.ipynb", errors)
        _log("running the FeatureView notebook")
        root = page.locator(".wb-featview")
        page.locator(f".wb-featview[data-loaded='{start}']").wait_for(timeout=120_000)
        assert root.get_attribute("data-source") == "kernel"
        assert root.locator(".wb-frow").count() == view.n_features
        root.locator(f".wb-frow[data-f='{target}']").click()
        page.locator(f".wb-featview[data-loaded='{target}']").wait_for(timeout=30_000)
        data = view.feature_data(target)
        assert root.get_attribute("data-source") == "kernel"
        assert root.get_attribute("data-hist-total") == str(data["fires"])
        shown = root.locator(".wb-fcontexts .wb-score").evaluate_all("es => es.map(e => e.textContent)")
        assert shown == [f"{c['score']:.3f}" for c in data["contexts"]]
        root.locator(".wb-fprompt .wb-tok[data-i='1']").click()
        page.locator(".wb-featview[data-token='0:1']").wait_for(timeout=30_000)
        chips = root.locator(".wb-ftoken .wb-fchip").evaluate_all("es => es.map(e => e.textContent)")
        assert chips == [f"#{g} {v:.3f}" for g, v in view.token_features(0, 1)]
        run_cell_in_lab(page, 1)
        page.get_by_text(f"selected {target}").wait_for(timeout=30_000)
        screenshot(page, "jupyterlab_feature_view")
        page.context.browser.close()
    assert errors == []
