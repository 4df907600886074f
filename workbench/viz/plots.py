"""Static matplotlib figures in one style. Each function takes arrays and returns a `Figure`.

Figures come from `workbench.figures.new_figure` (not pyplot), so they never touch global state, render
under any backend (Agg included) and display as PNG images when a notebook cell returns one.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any, Callable

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from workbench.figures import new_figure

#: The shared look: colours match the widgets (blue = attention/positive, orange = highlight).
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "figure.dpi": 110,
}
BLUE, ORANGE, GREY = "#2166ac", "#e66101", "#777777"


def _arr(x: Any, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(x.detach().float().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    return a


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Build the figure inside `rc_context(STYLE)`: every artist picks the shared style up when created."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _short(tokens: Sequence[str]) -> list[str]:
    return [t.replace("\n", "\\n").replace(" ", "\u00b7")[:12] for t in tokens]


@_styled
def plot_residual_norms(norms: Any, labels: Sequence[str] | None = None, title: str = "Residual stream norm by layer") -> Figure:
    """Mean L2 norm of the residual stream before layer 0 and after each layer.

    Args:
        norms: [n_layers + 1] (or [n_layers + 1, pos]: the mean over positions is drawn, with the min-max band).
        labels: x tick labels (default "embed", "L0", ...).

    Returns:
        The Figure (x: "layer", y: "‖resid‖₂").
    """
    a = np.asarray(norms.detach().cpu().numpy() if hasattr(norms, "detach") else norms, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"norms must be [layers] or [layers, pos], got shape {a.shape}")
    labels = list(labels) if labels is not None else ["embed"] + [f"L{i}" for i in range(a.shape[0] - 1)]
    if len(labels) != a.shape[0]:
        raise ValueError(f"{len(labels)} labels for {a.shape[0]} layers")
    fig = new_figure(max(4.0, 0.35 * len(labels) + 2), 3.0)
    ax = fig.axes[0]
    x = np.arange(a.shape[0])
    mean = a if a.ndim == 1 else a.mean(1)
    if a.ndim == 2:
        ax.fill_between(x, a.min(1), a.max(1), color=BLUE, alpha=0.15, lw=0, label="min-max over positions")
    ax.plot(x, mean, marker="o", color=BLUE, label="mean" if a.ndim == 2 else None)
    ax.set_xticks(x, labels)
    ax.set_xlabel("layer")
    ax.set_ylabel("\u2016resid\u2016\u2082")
    ax.set_title(title)
    if a.ndim == 2:
        ax.legend(frameon=False)
    return fig


@_styled
def plot_logit_diff_contributions(attn: Any, mlp: Any, total: float | None = None, title: str = "Direct contributions to the logit difference") -> Figure:
    """Per-layer attention and MLP direct contributions to a logit difference, as grouped bars.

    Args:
        attn: [n_layers] attention-output contributions.
        mlp: [n_layers] MLP-output contributions.
        total: the model's actual logit difference (drawn as a note), optional.

    Returns:
        The Figure (x: "layer", y: "logit difference contribution", legend "attn"/"mlp").
    """
    a, m = _arr(attn, 1, "attn"), _arr(mlp, 1, "mlp")
    if a.shape != m.shape:
        raise ValueError(f"attn and mlp must have the same length, got {a.shape} and {m.shape}")
    fig = new_figure(max(4.0, 0.5 * len(a) + 2), 3.0)
    ax = fig.axes[0]
    x = np.arange(len(a))
    ax.bar(x - 0.2, a, 0.4, color=BLUE, label="attn")
    ax.bar(x + 0.2, m, 0.4, color=ORANGE, label="mlp")
    ax.axhline(0, color=GREY, lw=0.8)
    ax.set_xticks(x, [f"L{i}" for i in x])
    ax.set_xlabel("layer")
    ax.set_ylabel("logit difference contribution")
    ax.set_title(title if total is None else f"{title} (total {total:.3f})")
    ax.legend(frameon=False)
    return fig


def _heatmap(scores: np.ndarray, xlabel: str, ylabel: str, title: str, cbar: str, diverging: bool, xticks: Sequence[str] | None, ylabels: Sequence[str] | None = None) -> Figure:
    rows, cols = scores.shape
    fig = new_figure(min(14.0, max(4.0, 0.32 * cols + 2.2)), min(10.0, max(2.8, 0.3 * rows + 1.4)))
    ax = fig.axes[0]
    if diverging:
        lim = float(np.nanmax(np.abs(scores))) or 1.0
        im = ax.imshow(scores, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    else:
        im = ax.imshow(scores, cmap="Blues", aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(cols), list(xticks) if xticks is not None else [str(i) for i in range(cols)], rotation=90 if xticks is not None else 0)
    ax.set_yticks(np.arange(rows), list(ylabels) if ylabels is not None else [f"L{i}" for i in range(rows)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)
    return fig


@_styled
def plot_patching_layer_pos(scores: Any, tokens: Sequence[str] | None = None, title: str = "Activation patching (residual stream)", metric: str = "patching effect") -> Figure:
    """Patching results per (layer, position).

    Args:
        scores: [n_layers, pos] (e.g. the normalised logit-difference recovered).
        tokens: position labels (length pos); default position indices.

    Returns:
        The Figure (y: "layer", x: "position", colour bar `metric`, diverging around 0).
    """
    s = _arr(scores, 2, "scores")
    if tokens is not None and len(tokens) != s.shape[1]:
        raise ValueError(f"{len(tokens)} tokens for {s.shape[1]} positions")
    return _heatmap(s, "position", "layer", title, metric, True, _short(tokens) if tokens is not None else None)


@_styled
def plot_patching_layer_head(scores: Any, title: str = "Activation patching (attention heads)", metric: str = "patching effect") -> Figure:
    """Patching results per (layer, head).

    Args:
        scores: [n_layers, n_heads].

    Returns:
        The Figure (y: "layer", x: "head", colour bar `metric`, diverging around 0).
    """
    s = _arr(scores, 2, "scores")
    return _heatmap(s, "head", "layer", title, metric, True, None)


@_styled
def plot_head_detector(scores: Any, detector: str = "induction", title: str | None = None) -> Figure:
    """Head-detector scores per (layer, head) (e.g. previous-token, induction, duplicate-token).

    Args:
        scores: [n_layers, n_heads], typically in [0, 1].
        detector: the detector's name, used in the title and colour bar.

    Returns:
        The Figure (y: "layer", x: "head", colour bar "<detector> score").
    """
    s = _arr(scores, 2, "scores")
    diverging = bool(np.nanmin(s) < 0)
    return _heatmap(s, "head", "layer", title or f"{detector} head scores", f"{detector} score", diverging, None)


@_styled
def plot_token_loss(tokens: Sequence[str], losses: Any, title: str = "Per-token loss") -> Figure:
    """Cross-entropy of each token given the ones before it.

    Args:
        tokens: the predicted tokens, length pos (the first token of a text has no loss: pass tokens[1:]).
        losses: [pos] in nats.

    Returns:
        The Figure (x: "token", y: "loss (nats)", mean drawn as a dashed line).
    """
    v = _arr(losses, 1, "losses")
    if len(tokens) != len(v):
        raise ValueError(f"{len(tokens)} tokens for {len(v)} losses")
    fig = new_figure(min(14.0, max(4.0, 0.3 * len(v) + 1.5)), 3.0)
    ax = fig.axes[0]
    x = np.arange(len(v))
    ax.bar(x, v, color=BLUE, width=0.8)
    ax.axhline(float(np.mean(v)), color=ORANGE, ls="--", lw=1, label=f"mean {np.mean(v):.2f}")
    ax.set_xticks(x, _short(tokens), rotation=90)
    ax.set_xlabel("token")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return fig
