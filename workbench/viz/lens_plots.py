"""Logit lens against tuned lens, layer by layer: KL to the final distribution and perplexity (the tuned-lens
paper's figure, from `workbench.lens.lens_metrics`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.figures import new_figure
from workbench.viz.plots import BLUE, GREY, ORANGE, _styled

COLUMNS = ("lens", "layer", "label", "kl", "perplexity")
COLOURS = {"logit": GREY, "tuned": BLUE}


@_styled
def plot_lens_comparison(metrics: pd.DataFrame, title: str = "Logit lens vs tuned lens") -> Figure:
    """Two panels over layers, one line per lens: mean KL(final || lens) in nats, and next-token perplexity (log
    scale).

    Args:
        metrics: `workbench.lens.lens_metrics(...)`: columns `lens, layer, label, kl, perplexity`, one row per
            (lens, layer).
        title: the figure's title.

    Returns:
        The Figure (`fig.axes[0]`: KL, `fig.axes[1]`: perplexity; x: "layer", one line per lens in input order).
    """
    if not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics must be the DataFrame of workbench.lens.lens_metrics, got {type(metrics).__name__}")
    missing = [c for c in COLUMNS if c not in metrics.columns]
    if missing or metrics.empty:
        raise ValueError(f"metrics lacks columns {missing} or rows; expected {list(COLUMNS)} (workbench.lens.lens_metrics)")
    layers = metrics.drop_duplicates("layer").sort_values("layer")
    x, labels = layers["layer"].to_numpy(), layers["label"].tolist()
    fig = new_figure(max(6.0, 0.7 * len(x) + 4), 3.2, nrows=1, ncols=2)
    kl_ax, ppl_ax = fig.axes
    extra = iter([ORANGE, "#1b7837", "#762a83"])
    for name, rows in metrics.groupby("lens", sort=False):
        rows = rows.sort_values("layer")
        colour = COLOURS.get(str(name)) or next(extra, None)
        label = f"{name} lens"
        kl_ax.plot(rows["layer"], rows["kl"], marker="o", color=colour, label=label)
        ppl_ax.plot(rows["layer"], rows["perplexity"], marker="o", color=colour, label=label)
    for ax, ylabel in ((kl_ax, "KL to final (nats)"), (ppl_ax, "perplexity")):
        ax.set_xticks(x, labels)
        ax.set_xlabel("layer")
        ax.set_ylabel(ylabel)
    ppl_ax.set_yscale("log")
    final = metrics.loc[metrics["layer"] == x.max(), "perplexity"]
    if len(final):
        line = ppl_ax.axhline(float(np.mean(final)), color=GREY, lw=0.8, ls=":", label="model output")
        ppl_ax.legend(handles=[line], frameon=False)
    kl_ax.legend(frameon=False)
    fig.suptitle(title, fontweight="bold")
    return fig
