"""Plots of a sweep's DataFrame: a metric against training step, head scores per step, and an eval curve next
to Pythia's published ones. Each takes the tidy frame `sweep` returns and returns a `workbench.figures` Figure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..viz.plots import BLUE, GREY, ORANGE, _styled, new_figure

X_AXES = ("step", "tokens")


def _check_columns(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"the sweep frame has no column(s) {missing}; it has {list(df.columns)}")


def _label(columns: list[str], values: tuple) -> str:
    """A line's legend label: `L1H2` for (layer, head), else `column=value` pairs."""
    named = dict(zip(columns, values))
    if set(named) == {"layer", "head"}:
        return f"L{named['layer']}H{named['head']}"
    return ", ".join(f"{c}={v}" for c, v in named.items())


def _mark_phases(ax, phases: Iterable[float] | None, label: str = "phase boundary") -> None:
    for i, step in enumerate(phases or ()):
        ax.axvline(step, color=GREY, linestyle="--", linewidth=0.8, label=label if i == 0 else None)


def _log_x(ax, log_x: bool) -> None:
    if log_x:  # symlog keeps step 0 (the initialisation) on the axis
        ax.set_xscale("symlog", linthresh=1.0)


@_styled
def plot_metric_vs_step(
    df: pd.DataFrame,
    metric: str,
    *,
    x: str = "step",
    by: str | Sequence[str] | None = None,
    log_x: bool = False,
    phases: Iterable[float] | None = None,
    title: str | None = None,
) -> Figure:
    """A metric against training step (or tokens seen), one line per group.

    Args:
        df: a sweep frame (`revision, step, tokens, ...`).
        metric: the column to plot (e.g. "icl_score", "score", "acc").
        x: "step" or "tokens".
        by: column(s) whose values make separate lines (e.g. ["layer", "head"]); None: one line (the mean over
            any other rows of a revision).
        log_x: symmetric-log x axis (step 0 stays visible), as Pythia's early checkpoints are log-spaced.
        phases: x values to mark with dashed lines (e.g. the demo's data-phase boundaries).
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    by = [by] if isinstance(by, str) else list(by or [])
    _check_columns(df, x, metric, *by)
    fig = new_figure(6.4, 3.6)
    ax = fig.axes[0]
    groups = df.groupby(by) if by else [((), df)]
    for key, part in groups:
        curve = part.groupby(x, sort=True)[metric].mean()
        label = _label(by, key if isinstance(key, tuple) else (key,)) if by else metric
        ax.plot(curve.index.astype(float), curve.values, marker="o", markersize=3, label=label)
    _mark_phases(ax, phases)
    _log_x(ax, log_x)
    ax.set_xlabel("training step" if x == "step" else "tokens seen")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} across training")
    if by or phases:
        ax.legend(fontsize=7, ncol=2 if len(by) and len(groups) > 8 else 1)
    return fig


@_styled
def plot_head_scores(
    df: pd.DataFrame, detector: str = "induction", *, phases: Iterable[float] | None = None, title: str | None = None
) -> Figure:
    """Heatmap of one head detector's score: heads (`L<layer>H<head>`) down, checkpoints across.

    Args:
        df: a sweep frame of the "heads" analysis (`detector, layer, head, score` columns).
        detector: "previous_token", "duplicate_token" or "induction".
        phases: steps to mark (a line between the checkpoints either side).
    """
    _check_columns(df, "detector", "layer", "head", "score", "step")
    part = df[df["detector"] == detector]
    if part.empty:
        raise ValueError(f"no rows for detector {detector!r}; the frame has {sorted(df['detector'].unique())}")
    grid = part.pivot_table(index=["layer", "head"], columns="step", values="score")  # [heads, steps]
    steps = list(grid.columns)
    fig = new_figure(max(4.0, 0.55 * len(steps) + 2.0), max(2.6, 0.22 * len(grid) + 1.2))
    ax = fig.axes[0]
    image = ax.imshow(grid.values, aspect="auto", cmap="Blues", vmin=0, vmax=max(1e-9, float(np.nanmax(grid.values))))
    ax.set_xticks(range(len(steps)), [f"{int(s):,}" for s in steps], rotation=60, fontsize=7)
    ax.set_yticks(range(len(grid)), [f"L{layer}H{head}" for layer, head in grid.index], fontsize=7)
    for step in phases or ():  # between the last checkpoint before the boundary and the first at/after it
        ax.axvline(sum(s < step for s in steps) - 0.5, color=ORANGE, linewidth=1.2)
    ax.set_xlabel("training step")
    ax.set_title(title or f"{detector.replace('_', '-')} score per head across training")
    fig.colorbar(image, ax=ax, label="score")
    return fig


@_styled
def plot_vs_pythia(
    df: pd.DataFrame,
    metric: str,
    task: str,
    *,
    pythia_metric: str = "acc",
    models: str | Sequence[str] = ("pythia-70m", "pythia-160m", "pythia-410m", "pythia-1.4b"),
    num_fewshot: int = 0,
    label: str = "this model",
    title: str | None = None,
) -> Figure:
    """Your eval curve (tokens seen on x, log scale) against Pythia's published per-checkpoint curves.

    Args:
        df: a sweep frame with `tokens` and `metric` (e.g. from `sweep(..., analysis="eval", task=task)`).
        metric: the frame's column to plot; task / pythia_metric / num_fewshot pick the published curves
            (`workbench.evals.baselines.load_learning_curves`).
        models: Pythia sizes to draw.
    """
    from ..evals.baselines import load_learning_curves
    from .sweep import PYTHIA_TOKENS_PER_STEP

    _check_columns(df, "tokens", metric)
    curves = load_learning_curves(models, task, metrics=pythia_metric, num_fewshot=num_fewshot)
    if curves.empty:
        raise ValueError(f"no published Pythia curve for task {task!r}, metric {pythia_metric!r}, {num_fewshot}-shot")
    fig = new_figure(6.4, 3.8)
    ax = fig.axes[0]
    models = [models] if isinstance(models, str) else list(models)
    for i, model in enumerate(m for m in models if m in set(curves["model"])):  # smallest first, as given
        part = curves[(curves["model"] == model) & (curves["step"] > 0)]  # tokens = 0 has no place on a log axis
        ax.plot(part["step"] * PYTHIA_TOKENS_PER_STEP, part["value"], color=GREY, alpha=0.35 + 0.6 * i / max(1, len(models) - 1),
                linewidth=1, label=model)  # fmt: skip
    ours = df[df["tokens"].notna() & (df["tokens"] > 0)].groupby("tokens", sort=True)[metric].mean()
    ax.plot(ours.index.astype(float), ours.values, color=BLUE, marker="o", markersize=4, linewidth=2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel(f"{task} {pythia_metric}")
    ax.set_title(title or f"{task} across training ({num_fewshot}-shot), against Pythia")
    ax.legend(fontsize=7)
    return fig
