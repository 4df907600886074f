"""SAE figures: the L0 / loss trade-off and the feature-density histogram draw their data and display as PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from IPython.core.formatters import DisplayFormatter

import workbench
from tests.helpers import SCREENSHOTS
from workbench.analysis.features import feature_stats
from workbench.sae import SAE, SAEConfig
from workbench.viz import plot_feature_density, plot_l0_loss_tradeoff


def _shows_png(fig, name: str) -> None:
    data, _ = DisplayFormatter().format(fig)  # what IPython sends for a cell whose value is the figure
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n" and "text/html" not in data
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / f"plot_{name}.png").write_bytes(data["image/png"])


def test_l0_loss_tradeoff():
    l0, loss = [32.0, 4.0, 8.0, 16.0], [3.2, 4.1, 3.7, 3.4]
    fig = plot_l0_loss_tradeoff(l0, loss, labels=["k=32", "k=4", "k=8", "k=16"], clean_loss=3.0, zero_loss=6.5)
    ax = fig.axes[0]
    line = ax.lines[0]
    np.testing.assert_array_equal(line.get_xdata(), [4.0, 8.0, 16.0, 32.0])  # joined in L0 order
    np.testing.assert_array_equal(line.get_ydata(), [4.1, 3.7, 3.4, 3.2])
    assert [l.get_ydata()[0] for l in ax.lines[1:]] == [3.0, 6.5]
    assert [t.get_text() for t in ax.texts] == ["k=32", "k=4", "k=8", "k=16"]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "L0 (active features per token)"
    assert plot_l0_loss_tradeoff([1, 50], [2, 1]).axes[0].get_xscale() == "log"
    _shows_png(fig, "l0_loss_tradeoff")
    with pytest.raises(ValueError, match="same length"):
        plot_l0_loss_tradeoff([1, 2], [3])
    with pytest.raises(ValueError, match="2 labels for 1 SAEs"):
        plot_l0_loss_tradeoff([1], [3], labels=["a", "b"])
    with pytest.raises(ValueError, match="L0 must be positive"):
        plot_l0_loss_tradeoff([0, 2], [3, 4])


def test_feature_density_of_a_real_corpus_pass():
    model = workbench.load("demo").eval()
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=128, d_sae=64, architecture="standard", hook_name="blocks.0.hook_resid_post"), init="kaiming")
    with torch.no_grad():
        sae.b_enc.normal_(-2.0, 1.0)  # some features rare, some dead
    ids = torch.randint(2, 4096, (12, 16), generator=torch.Generator().manual_seed(0))
    stats = feature_stats(model, sae, ids, progress=False)
    fig = plot_feature_density(stats, bins=20)
    ax = fig.axes[0]
    alive = stats.density[stats.density > 0]
    dead = stats.d_sae - alive.size
    assert 0 < alive.size and sum(p.get_height() for p in ax.patches) == alive.size
    lo, hi = ax.patches[0].get_x(), ax.patches[-1].get_x() + ax.patches[-1].get_width()
    assert lo == pytest.approx(np.log10(alive).min()) and hi == pytest.approx(np.log10(alive).max())
    assert ax.get_legend().get_texts()[0].get_text() == f"{alive.size} alive, {dead} dead ({100 * dead / stats.d_sae:.1f}%)"
    _shows_png(fig, "feature_density")
    assert "every feature is dead (3)" in plot_feature_density(np.zeros(3)).axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match=r"firing rates in \[0, 1\]"):
        plot_feature_density([0.5, 1.5])
