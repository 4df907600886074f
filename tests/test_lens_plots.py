"""plot_lens_comparison: the lens_metrics numbers drawn per lens and layer, displayed as image/png."""

from __future__ import annotations

import numpy as np
import pytest
from IPython.core.formatters import DisplayFormatter

import workbench
from tests.helpers import SCREENSHOTS
from workbench.lens import LogitLens, TunedLens, lens_metrics, token_windows
from workbench.viz import plot_lens_comparison


@pytest.fixture(scope="module")
def metrics():
    model = workbench.load("demo")
    tuned = TunedLens(model)
    for t in tuned.translators:
        t.bias.data.normal_(0, 0.1)
    texts = token_windows(model, "In the beginning God created the heaven and the earth. " * 4, 16)
    return lens_metrics(model, texts, {"logit": LogitLens(model), "tuned": tuned})


def test_the_figure_shows_both_lenses(metrics):
    fig = plot_lens_comparison(metrics)
    kl_ax, ppl_ax = fig.axes
    assert (kl_ax.get_ylabel(), ppl_ax.get_ylabel(), ppl_ax.get_yscale()) == ("KL to final (nats)", "perplexity", "log")
    assert [t.get_text() for t in kl_ax.get_xticklabels()] == ["embed", "L0", "L1", "L2", "L3"]
    assert [t.get_text() for t in kl_ax.get_legend().get_texts()] == ["logit lens", "tuned lens"]
    for ax, column in ((kl_ax, "kl"), (ppl_ax, "perplexity")):
        for line, name in zip(ax.lines, ["logit", "tuned"]):
            np.testing.assert_allclose(line.get_ydata(), metrics[metrics.lens == name].sort_values("layer")[column])
    data, _ = DisplayFormatter().format(fig)  # what a notebook cell returning the figure displays
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n" and "text/html" not in data
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "plot_lens_comparison.png").write_bytes(data["image/png"])


def test_bad_metrics(metrics):
    with pytest.raises(ValueError, match=r"lacks columns \['kl'\]"):
        plot_lens_comparison(metrics.drop(columns="kl"))
    with pytest.raises(TypeError, match="DataFrame of workbench.lens.lens_metrics"):
        plot_lens_comparison({"kl": [1]})
