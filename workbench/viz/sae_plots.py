"""Sparse-autoencoder figures: the sparsity / fidelity trade-off of several SAEs and one SAE's feature densities.

Arrays in, a `workbench.figures` Figure out (PNG in notebooks), in the style of `workbench.viz.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from workbench.figures import new_figure
from workbench.viz.plots import BLUE, GREY, ORANGE, _arr, _styled


@_styled
def plot_l0_loss_tradeoff(
    l0: Any,
    loss: Any,
    labels: Sequence[str] | None = None,
    clean_loss: float | None = None,
    zero_loss: float | None = None,
    ylabel: str = "CE loss with the SAE spliced in (nats)",
    title: str = "Sparsity vs reconstruction: L0 / loss trade-off",
) -> Figure:
    """Each SAE as a point (mean active features per token, its spliced CE loss), the points joined in L0 order,
    with the clean and zero-ablated losses as reference lines (SAELens / sparsify's comparison plot).

    Args:
        l0: mean active features per token of each SAE  # [n_saes]
        loss: each SAE's metric: spliced CE loss, or CE loss recovered (then set `ylabel`)  # [n_saes]
        labels: one label per SAE (e.g. "k=16"), written beside its point.
        clean_loss: the model's loss without an SAE (dashed line), optional.
        zero_loss: the loss with the site zero-ablated (dotted line), optional.

    Returns:
        The Figure (x: "L0 (active features per token)", log scale when L0 spans more than a factor 10).
    """
    x, y = _arr(l0, 1, "l0"), _arr(loss, 1, "loss")
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"l0 and loss must be non-empty and of the same length, got {x.shape} and {y.shape}")
    if labels is not None and len(labels) != x.size:
        raise ValueError(f"{len(labels)} labels for {x.size} SAEs")
    if np.any(x <= 0):
        raise ValueError(f"L0 must be positive (mean active features per token), got {x.tolist()}")
    fig = new_figure(5.0, 3.4)
    ax = fig.axes[0]
    order = np.argsort(x, kind="stable")
    ax.plot(x[order], y[order], marker="o", color=BLUE, label="SAE")
    for i, text in enumerate(labels or []):
        ax.annotate(text, (x[i], y[i]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if clean_loss is not None:
        ax.axhline(clean_loss, color=ORANGE, ls="--", lw=1, label=f"clean {clean_loss:.3f}")
    if zero_loss is not None:
        ax.axhline(zero_loss, color=GREY, ls=":", lw=1, label=f"zero-ablated {zero_loss:.3f}")
    if x.max() / x.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig


@_styled
def plot_feature_density(density: Any, bins: int = 40, title: str = "Feature density") -> Figure:
    """Histogram of log10(feature density), the fraction of tokens on which each feature fires; dead features
    (density 0) have no logarithm and are counted in the legend (SAELens's feature-density plot).

    Args:
        density: per feature, its firing rate in [0, 1]  # [d_sae] (or a `FeatureStats`, whose `.density` is used)
        bins: histogram bins.

    Returns:
        The Figure (x: "log10 feature density", y: "features").
    """
    d = _arr(getattr(density, "density", density), 1, "density")
    if d.size == 0 or np.any((d < 0) | (d > 1)) or not np.all(np.isfinite(d)):
        raise ValueError("density must be a non-empty array of firing rates in [0, 1]")
    alive = d[d > 0]
    fig = new_figure(5.0, 3.2)
    ax = fig.axes[0]
    dead = d.size - alive.size
    label = f"{alive.size} alive, {dead} dead ({100 * dead / d.size:.1f}%)"
    if alive.size:
        ax.hist(np.log10(alive), bins=bins, color=BLUE, label=label)
        ax.legend(frameon=False, loc="upper left")
    else:
        ax.text(0.5, 0.5, f"every feature is dead ({d.size})", transform=ax.transAxes, ha="center")
    ax.set_xlabel("log10 feature density")
    ax.set_ylabel("features")
    ax.set_title(title)
    return fig
