"""Static figures: render to PNG under Agg with the expected axes, labels and data."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tests.helpers import SCREENSHOTS, random_model
from workbench.analysis import logit_diff_by_layer, per_token_loss, residual_norms
from workbench.inputs import as_prompts
from workbench.viz import plots as P


def _png(fig, name: str) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"plot_{name}.png").write_bytes(png)
    return png


@pytest.fixture(scope="module")
def model(neox_tokenizer_file):
    return random_model(str(neox_tokenizer_file), n_layers=3, n_heads=4, d_model=32)


def test_residual_norms(model):
    norms, labels = residual_norms(model, ["The cat sat on the mat.", "Hello world"])
    fig = P.plot_residual_norms(norms, labels)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("layer", "\u2016resid\u2016\u2082")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["embed", "L0", "L1", "L2"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), norms)
    assert ax.title.get_fontweight() == "bold"  # the shared style is applied
    _png(fig, "residual_norms")
    band = P.plot_residual_norms(np.abs(np.random.default_rng(0).normal(size=(4, 7))))
    assert len(band.axes[0].collections) == 1 and band.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="labels"):
        P.plot_residual_norms(norms, ["a"])


def test_logit_diff_contributions(model):
    attn, mlp, total = logit_diff_by_layer(model, "The cat sat on the", " mat", " dog")
    fig = P.plot_logit_diff_contributions(attn, mlp, total)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "logit difference contribution" and ax.get_xlabel() == "layer"
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, np.concatenate([attn, mlp]), rtol=1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["attn", "mlp"]
    assert f"{total:.3f}" in ax.get_title()
    _png(fig, "logit_diff")
    with pytest.raises(ValueError, match="same length"):
        P.plot_logit_diff_contributions([1, 2], [1])


def test_patching_and_detector_heatmaps():
    rng = np.random.default_rng(0)
    tokens = ["When", " Mary", " and", " John", "\n", " gave"]
    lp = rng.normal(size=(4, 6))
    fig = P.plot_patching_layer_pos(lp, tokens)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("position", "layer")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["When", "\u00b7Mary", "\u00b7and", "\u00b7John", "\\n", "\u00b7gave"]
    im = ax.images[0]
    np.testing.assert_allclose(im.get_array(), lp)
    assert im.get_clim() == (-np.abs(lp).max(), np.abs(lp).max())  # diverging around 0
    assert fig.axes[1].get_ylabel() == "patching effect"  # colour bar
    _png(fig, "patching_layer_pos")
    lh = rng.normal(size=(4, 8))
    fig = P.plot_patching_layer_head(lh, metric="logit diff recovered")
    assert fig.axes[0].get_xlabel() == "head" and fig.axes[1].get_ylabel() == "logit diff recovered"
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["L0", "L1", "L2", "L3"]
    _png(fig, "patching_layer_head")
    det = rng.uniform(size=(4, 8))
    fig = P.plot_head_detector(det, "induction")
    assert fig.axes[0].get_title() == "induction head scores" and fig.axes[1].get_ylabel() == "induction score"
    assert fig.axes[0].images[0].get_cmap().name == "Blues"
    _png(fig, "head_detector")
    with pytest.raises(ValueError, match="2 dimension"):
        P.plot_head_detector(det[0])
    with pytest.raises(ValueError, match="positions"):
        P.plot_patching_layer_pos(lp, tokens[:3])


def test_token_loss(model):
    prompt = as_prompts(model, "The cat sat on the mat and the dog sat on the log.")[0]
    loss = per_token_loss(model, prompt.ids)[0][0].numpy()
    fig = P.plot_token_loss(prompt.tokens[1:], loss)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("token", "loss (nats)")
    assert len(ax.patches) == len(loss) == len(ax.get_xticklabels())
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [loss.mean()] * 2, rtol=1e-6)
    _png(fig, "token_loss")
    with pytest.raises(ValueError, match="tokens for"):
        P.plot_token_loss(prompt.tokens, loss)
