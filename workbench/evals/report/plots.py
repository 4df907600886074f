"""Report plots: score against model size, per-task bars, Pythia learning curves.

Plots are pyplot-free matplotlib figures from `workbench.figures.new_figure` (no global figure state, nothing to
close, render headless, show themselves in a notebook); save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable

import pandas as pd

from workbench.evals.baselines import load_baselines, load_learning_curves
from workbench.evals.report.tables import baseline_frame, model_info, nearest_model, results_table, run_fewshot

SCALING_CURVES = ("gpt3", "pythia", "pythia-deduped")  # drawn as lines over parameter count
SCALING_POINTS = ("gpt3-api", "gpt-j", "gpt-neox", "fairseq")  # drawn as labelled points
FAMILY_LABELS = {"gpt3": "GPT-3 (paper)", "gpt3-api": "GPT-3 API", "gpt-j": "GPT-J", "gpt-neox": "GPT-NeoX",
                 "fairseq": "FairSeq", "pythia": "Pythia", "pythia-deduped": "Pythia (deduped)"}
PLOT_KINDS = ("scaling", "tasks", "learning_curve")
# Metrics where lower is better (plotted on a log axis).
LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


def _axes(ax):
    if ax is None:
        from workbench.figures import new_figure  # matplotlib only when plotting: tables work without it

        fig = new_figure()
        return fig, fig.axes[0]
    return ax.figure, ax


def _pick_task(table: pd.DataFrame, task: str | None, candidates: Iterable[str]) -> str:
    tasks = list(dict.fromkeys(table["task"]))
    if task is not None:
        if task not in tasks:
            raise KeyError(f"task {task!r} is not in the results; evaluated tasks: {tasks}")
        return task
    candidates = set(candidates)
    for name in tasks:
        if name in candidates:
            return name
    if not tasks:
        raise ValueError("the results hold no task")
    return tasks[0]


def _pick_metric(table: pd.DataFrame, task: str, metric: str | None) -> str:
    metrics = list(table.loc[table["task"] == task, "metric"])
    if metric is not None:
        if metric not in metrics:
            raise KeyError(f"metric {metric!r} not in the results for {task!r}; available: {metrics}")
        return metric
    for preferred in ("acc", "acc_norm", "exact_match", "perplexity"):
        if preferred in metrics:
            return preferred
    return metrics[0]


def _value(table: pd.DataFrame, task: str, metric: str) -> tuple[float, float]:
    row = table[(table["task"] == task) & (table["metric"] == metric)].iloc[0]
    stderr = row["stderr"]
    return float(row["value"]), (float(stderr) if stderr is not None and not pd.isna(stderr) else math.nan)


def _family_rows(base: pd.DataFrame, family: str, task: str, metric: str) -> tuple[pd.DataFrame, str]:
    """A family's rows for a task in ``metric``; if it never reports that metric (the GPT-3 paper's
    accuracies are length-normalised), its nearest accuracy-like metric, named in the legend."""
    rows = base[(base["family"] == family) & (base["task"] == task)]
    same = rows[rows["metric"] == metric]
    if len(same) or rows.empty:
        return same, metric
    if metric.startswith("acc"):
        for alternative in ("acc_per_token", "acc_uncond", "acc", "acc_norm"):
            alt = rows[rows["metric"] == alternative]
            if len(alt):
                return alt, alternative
    return same, metric


def _draw_families(ax, base: pd.DataFrame, task: str, metric: str, curves: Iterable[str], points: Iterable[str]):
    """The baseline families on `ax`: `curves` as lines over parameter count, `points` as labelled points."""
    colors = itertools.cycle(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
                              "tab:olive", "tab:cyan", "tab:gray"])
    for family, curve in [(f, True) for f in curves] + [(f, False) for f in points]:
        rows, used = _family_rows(base, family, task, metric)
        if rows.empty:
            continue
        label = FAMILY_LABELS.get(family, family) + ("" if used == metric else f" ({used})")
        rows = rows.drop_duplicates("model")
        if curve:
            rows = rows.sort_values("params")
            ax.plot(rows["params"], rows["value"], marker="o", markersize=4, color=next(colors), label=label)
            continue
        ax.scatter(rows["params"], rows["value"], marker="s", s=22, color=next(colors), label=label, zorder=3)
        for model, x, y in zip(rows["model"], rows["params"], rows["value"]):
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)


def plot_scaling(
    results: Any,
    task: str | None = None,
    metric: str | None = None,
    *,
    baselines: pd.DataFrame | None = None,
    curves: Iterable[str] = SCALING_CURVES,
    points: Iterable[str] = SCALING_POINTS,
    num_fewshot: int | None = None,
    ax=None,
):
    """Score against parameter count (log axis): GPT-3 and Pythia curves, other models as points, the
    evaluated model as a star (a dashed line when its parameter count is unknown).

    Args:
        results: an ``EvalResults``.
        task: a task of the results (default: the first with published baselines).
        metric: a metric of that task (default: acc, else acc_norm, exact_match, perplexity).
        baselines: a DataFrame from ``load_baselines`` (default: the whole project table).
        curves: families drawn as lines; points: families drawn as labelled points.
        num_fewshot: baselines' shot count (default: the run's).
        ax: draw into these matplotlib Axes instead of a new Figure.

    Returns:
        The matplotlib Figure. x label "parameters", y label the metric.
    """
    table = results_table(results)
    base = baseline_frame(baselines, None)
    task = _pick_task(table, task, base["task"])
    metric = _pick_metric(table, task, metric)
    shots = num_fewshot if num_fewshot is not None else run_fewshot(results, task)
    base = base[base["num_fewshot"] == shots]
    fig, ax = _axes(ax)
    _draw_families(ax, base, task, metric, curves, points)
    info = model_info(results)
    value, stderr = _value(table, task, metric)
    if info["num_params"]:
        ax.plot([info["num_params"]], [value], marker="*", markersize=14, color="crimson", linestyle="none",
                label=info["model_name"], zorder=4)
        if not math.isnan(stderr):
            ax.errorbar([info["num_params"]], [value], yerr=[stderr], fmt="none", color="crimson", zorder=4)
    else:
        ax.axhline(value, color="crimson", linestyle="--", label=f"{info['model_name']} (size unknown)")
    ax.set_xscale("log")
    if metric in LOWER_IS_BETTER:
        ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}, {shots}-shot")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_tasks(
    results: Any,
    metric: str = "acc",
    *,
    baselines: pd.DataFrame | None = None,
    models: Iterable[str] | None = None,
    num_fewshot: int | None = None,
    ax=None,
):
    """Bars per task for the evaluated model (with stderr) and baseline models on the same metric.

    Args:
        results: an ``EvalResults``.
        metric: the metric to show; tasks without it are left out.
        baselines: a DataFrame from ``load_baselines`` (default: the project table).
        models: baseline models beside it (default: the Pythia model nearest in size).
        num_fewshot: baselines' shot count (default: the run's, per task).
        ax: draw into these Axes.

    Returns:
        The matplotlib Figure. x label "task", y label the metric.
    """
    table = results_table(results)
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise KeyError(f"no task reports {metric!r}; metrics present: {sorted(table['metric'].unique())}")
    base = baseline_frame(baselines, None)
    info = model_info(results)
    models = list(models) if models is not None else nearest_model(base, "pythia", info["num_params"])
    unknown = sorted(set(models) - set(base["model"]))
    if unknown:
        raise ValueError(f"unknown baseline models {unknown}; known: {sorted(base['model'].unique())}")
    tasks = list(dict.fromkeys(rows["task"]))
    fig, ax = _axes(ax)
    width = 0.8 / (1 + len(models))
    xs = range(len(tasks))
    ax.bar([x for x in xs], rows["value"], width, yerr=rows["stderr"].fillna(0).to_numpy(), capsize=2,
           label=info["model_name"], color="crimson")
    for i, model in enumerate(models, start=1):
        values = []
        for task in tasks:
            shots = num_fewshot if num_fewshot is not None else run_fewshot(results, task)
            hit = base[(base["model"] == model) & (base["task"] == task) & (base["metric"] == metric)
                       & (base["num_fewshot"] == shots)]
            values.append(float(hit["value"].iloc[0]) if len(hit) else math.nan)
        ax.bar([x + i * width for x in xs], values, width, label=model)
    ax.set_xticks([x + width * len(models) / 2 for x in xs], tasks, rotation=30, ha="right")
    ax.set_xlabel("task")
    ax.set_ylabel(metric)
    ax.set_title(f"{info['model_name']}: {metric} per task")
    ax.legend(fontsize=8)
    return fig


def plot_learning_curve(
    results: Any,
    task: str | None = None,
    metric: str | None = None,
    *,
    models: Iterable[str] | None = None,
    num_fewshot: int | None = None,
    ax=None,
):
    """Pythia learning curves (score against training step) with the evaluated model's score as a line.

    Args:
        results: an ``EvalResults``.
        task: a task of the results that has Pythia curves (default: the first one).
        metric: default acc (else acc_norm, perplexity).
        models: Pythia models (default: the eight standard sizes).
        num_fewshot: 0 or 5 (default: the run's).
        ax: draw into these Axes.

    Returns:
        The matplotlib Figure. x label "training step" (symmetric log axis, step 0 included),
        y label the metric.
    """
    table = results_table(results)
    curves = load_learning_curves()
    task = _pick_task(table, task, curves["task"])
    if task not in set(curves["task"]):
        raise KeyError(f"no Pythia learning curve for {task!r}; available: {sorted(curves['task'].unique())}")
    metric = _pick_metric(table, task, metric)
    shots = num_fewshot if num_fewshot is not None else run_fewshot(results, task)
    if models is None:
        models = curves.loc[curves["family"] == "pythia"].sort_values("params")["model"].drop_duplicates().tolist()
    data = load_learning_curves(models=list(models), tasks=task, metrics=metric, num_fewshot=shots)
    if data.empty:
        raise KeyError(f"no Pythia curve for {task}/{metric} at {shots} shots (curves exist for 0 and 5 shots)")
    fig, ax = _axes(ax)
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    ordered = data.drop_duplicates("model").sort_values("params")["model"].tolist()
    for i, model in enumerate(ordered):
        rows = data[data["model"] == model].sort_values("step")
        ax.plot(rows["step"], rows["value"], marker=".", markersize=3, linewidth=1.2,
                color=cmap(i / max(1, len(ordered) - 1)), label=model)
    info = model_info(results)
    value, _ = _value(table, task, metric)
    ax.axhline(value, color="crimson", linestyle="--", linewidth=1.5, label=info["model_name"])
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    if metric in LOWER_IS_BETTER:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"Pythia learning curves: {task}, {shots}-shot")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot(results: Any, kind: str = "scaling", **kwargs: Any):
    """One of the report plots by name.

    Args:
        results: an ``EvalResults``.
        kind: "scaling" (:func:`plot_scaling`), "tasks" (:func:`plot_tasks`) or "learning_curve"
            (:func:`plot_learning_curve`).
        **kwargs: passed to that function.

    Returns:
        The matplotlib Figure.
    """
    functions = {"scaling": plot_scaling, "tasks": plot_tasks, "learning_curve": plot_learning_curve}
    if kind not in functions:
        raise ValueError(f"unknown plot kind {kind!r}; known: {list(PLOT_KINDS)}")
    return functions[kind](results, **kwargs)


def report_figures(results: Any, table: pd.DataFrame, max_scaling: int) -> list[tuple[str, Any]]:
    """(caption, Figure) for the page: scaling plots for tasks with published curves, bars, a learning curve."""
    figures = []
    base = load_baselines()
    curve_tasks = set(base.loc[base["family"].isin(SCALING_CURVES), "task"])
    for task in [t for t in dict.fromkeys(table["task"]) if t in curve_tasks][:max_scaling]:
        figures.append((f"{task} against model size", plot_scaling(results, task=task, baselines=base)))
    metrics = table["metric"].value_counts()
    if len(metrics):
        figures.append(("per-task scores", plot_tasks(results, metric=str(metrics.index[0]), baselines=base)))
    curves = set(load_learning_curves()["task"])
    for task in dict.fromkeys(table["task"]):
        if task in curves:
            try:
                figures.append((f"Pythia learning curves on {task}", plot_learning_curve(results, task=task)))
            except KeyError:  # no curve at this shot count or metric
                continue
            break
    return figures


