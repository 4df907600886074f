"""Reports on an evaluation: side-by-side tables with published results, plots, HTML and Markdown pages.

Every function takes an ``EvalResults`` (``workbench.evals.results``) or any object with:

- ``table()`` -> DataFrame with columns task, metric, value, stderr;
- the model's identity, read from attributes ``model_name`` / ``num_params`` / ``num_fewshot`` when present,
  else from ``results.config`` keys of the same names (``model`` is accepted for the name).

Plots are matplotlib ``Figure`` objects built without pyplot (no global figure state, nothing to close,
render headless); display them in a notebook or save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from workbench.evals.baselines import load_baselines, load_learning_curves

# Families shown by default: the ones the GPT-NeoX-20B paper compares against, and the Pythia suite.
COMPARE_FAMILIES = ("gpt3", "gpt3-api", "gpt-j", "gpt-neox", "fairseq", "pythia")
SCALING_CURVES = ("gpt3", "pythia", "pythia-deduped")  # drawn as lines over parameter count
SCALING_POINTS = ("gpt3-api", "gpt-j", "gpt-neox", "fairseq")  # drawn as labelled points
FAMILY_LABELS = {"gpt3": "GPT-3 (paper)", "gpt3-api": "GPT-3 API", "gpt-j": "GPT-J", "gpt-neox": "GPT-NeoX",
                 "fairseq": "FairSeq", "pythia": "Pythia", "pythia-deduped": "Pythia (deduped)"}
PLOT_KINDS = ("scaling", "tasks", "learning_curve")
# Metrics where lower is better (plotted on a log axis).
LOWER_IS_BETTER = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


# --------------------------------------------------------------------------- results access

def model_info(results: Any) -> dict[str, Any]:
    """The evaluated model's name, parameter count and shot count.

    Args:
        results: an ``EvalResults`` (or compatible object).

    Returns:
        ``{"model_name": str, "num_params": int | None, "num_fewshot": int | dict | None}``.
    """
    config = getattr(results, "config", None) or {}
    name = getattr(results, "model_name", None) or config.get("model_name") or config.get("model") or "model"
    params = getattr(results, "num_params", None) or config.get("num_params")
    shots = getattr(results, "num_fewshot", None)
    if shots is None:
        shots = config.get("num_fewshot")
    return {"model_name": str(name), "num_params": None if params is None else int(params), "num_fewshot": shots}


def _fewshot(results: Any, task: str) -> int:
    shots = model_info(results)["num_fewshot"]
    if isinstance(shots, dict):  # per-task shot counts
        shots = shots.get(task, 0)
    return int(shots or 0)


def results_table(results: Any) -> pd.DataFrame:
    """``results.table()``, checked to have the columns task, metric, value, stderr."""
    if not hasattr(results, "table"):
        raise TypeError(f"expected an EvalResults (with a .table() method), got {type(results).__name__}")
    table = results.table()
    missing = {"task", "metric", "value", "stderr"} - set(table.columns)
    if missing:
        raise ValueError(f"results.table() lacks the columns {sorted(missing)}")
    return table


def _baselines(baselines: pd.DataFrame | str | Sequence[str] | None, families: Iterable[str] | None) -> pd.DataFrame:
    """A baseline DataFrame from ``baselines=``: None (the project table), a DataFrame, or family name(s)."""
    if baselines is None:
        return load_baselines(families=families)
    if isinstance(baselines, pd.DataFrame):
        missing = {"model", "family", "params", "task", "metric", "num_fewshot", "value"} - set(baselines.columns)
        if missing:
            raise ValueError(f"baselines DataFrame lacks the columns {sorted(missing)} (see load_baselines)")
        return baselines
    if isinstance(baselines, str) or all(isinstance(b, str) for b in baselines):
        return load_baselines(families=baselines)
    raise TypeError("baselines must be None, a DataFrame from load_baselines, or family name(s)")


# --------------------------------------------------------------------------- comparison table

def compare(
    results: Any,
    baselines: pd.DataFrame | str | Sequence[str] | None = None,
    *,
    families: Iterable[str] | None = COMPARE_FAMILIES,
    models: Iterable[str] | None = None,
    num_fewshot: int | None = None,
) -> pd.DataFrame:
    """The evaluated model side by side with published results on the same task, metric and shot count.

    Args:
        results: an ``EvalResults``.
        baselines: None (the project table restricted to ``families``), a DataFrame from
            ``load_baselines`` (used as is), or family name(s).
        families: families used when ``baselines`` is None (default: GPT-3, the API models, GPT-J,
            GPT-NeoX-20B, FairSeq, Pythia); None for all.
        models: show only these baseline models (of any family).
        num_fewshot: shot count of the baselines to show; default the run's own (per task).

    Returns:
        DataFrame with one row per (task, metric) of the results: columns task, metric, the model's
        value (column named after the model), stderr, then one column per baseline model (ascending
        parameter count) holding its published value (NaN where it has none). Where two sources give
        the same figure, the first in the table wins (the GPT-NeoX-20B paper before the GPT-J README).
    """
    table = results_table(results)
    if models is not None:
        models = [models] if isinstance(models, str) else list(models)
        families = None  # named models are looked up in every family
    base = _baselines(baselines, families)
    if models is not None:
        unknown = sorted(set(models) - set(base["model"]))
        if unknown:
            raise ValueError(f"unknown baseline models {unknown}; known: {sorted(base['model'].unique())}")
        base = base[base["model"].isin(models)]
    name = model_info(results)["model_name"]
    column = name if name not in set(base["model"]) else f"{name} (this run)"
    order = base.sort_values("params", kind="stable")["model"].drop_duplicates().tolist()

    rows = []
    for record in table.itertuples(index=False):
        shots = num_fewshot if num_fewshot is not None else _fewshot(results, record.task)
        match = base[(base["task"] == record.task) & (base["metric"] == record.metric) & (base["num_fewshot"] == shots)]
        match = match.drop_duplicates("model", keep="first")
        row = {"task": record.task, "metric": record.metric, column: record.value, "stderr": record.stderr}
        row.update(dict(zip(match["model"], match["value"])))
        rows.append(row)
    out = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["task", "metric", column, "stderr"])
    present = [m for m in order if m in out.columns]
    return out.reindex(columns=["task", "metric", column, "stderr", *present])


# --------------------------------------------------------------------------- plots

def _figure(width: float = 7.0, height: float = 4.5):
    # A pyplot-free Figure with an Agg canvas: no global state, renders without a display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _axes(ax):
    if ax is None:
        fig = _figure()
        return fig, fig.add_subplot()
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
    base = _baselines(baselines, None)
    task = _pick_task(table, task, base["task"])
    metric = _pick_metric(table, task, metric)
    shots = num_fewshot if num_fewshot is not None else _fewshot(results, task)
    base = base[base["num_fewshot"] == shots]
    fig, ax = _axes(ax)
    colors = itertools.cycle(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
                              "tab:olive", "tab:cyan", "tab:gray"])

    for family in curves:
        rows, used = _family_rows(base, family, task, metric)
        if rows.empty:
            continue
        rows = rows.drop_duplicates("model").sort_values("params")
        label = FAMILY_LABELS.get(family, family) + ("" if used == metric else f" ({used})")
        ax.plot(rows["params"], rows["value"], marker="o", markersize=4, color=next(colors), label=label)
    for family in points:
        rows, used = _family_rows(base, family, task, metric)
        if rows.empty:
            continue
        rows = rows.drop_duplicates("model")
        label = FAMILY_LABELS.get(family, family) + ("" if used == metric else f" ({used})")
        ax.scatter(rows["params"], rows["value"], marker="s", s=22, color=next(colors), label=label, zorder=3)
        for model, x, y in zip(rows["model"], rows["params"], rows["value"]):
            ax.annotate(model, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)

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


def _nearest(base: pd.DataFrame, family: str, params: int | None) -> list[str]:
    rows = base[base["family"] == family].drop_duplicates("model")
    if rows.empty or not params:
        return []
    distance = (rows["params"].astype(float).map(math.log) - math.log(params)).abs()
    return [rows.loc[distance.idxmin(), "model"]]


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
    base = _baselines(baselines, None)
    info = model_info(results)
    models = list(models) if models is not None else _nearest(base, "pythia", info["num_params"])
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
            shots = num_fewshot if num_fewshot is not None else _fewshot(results, task)
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
    shots = num_fewshot if num_fewshot is not None else _fewshot(results, task)
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


# --------------------------------------------------------------------------- pages

def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def _header_facts(results: Any) -> list[tuple[str, str]]:
    info = model_info(results)
    facts = [("model", info["model_name"])]
    if info["num_params"]:
        facts.append(("parameters", f"{info['num_params']:,}"))
    facts.append(("few-shot examples", str(info["num_fewshot"] if info["num_fewshot"] is not None else 0)))
    config = getattr(results, "config", None) or {}
    for key in ("limit", "seed", "device", "dtype", "batch_size"):
        if config.get(key) is not None:
            facts.append((key, str(config[key])))
    return facts


def report_models(results: Any, baselines: pd.DataFrame | None = None,
                  families: Iterable[str] = COMPARE_FAMILIES) -> list[str] | None:
    """Baseline models for a report page, to keep its table readable: per family, the model nearest
    in size to the evaluated one, plus the GPT-NeoX-20B paper's reference points (GPT-J-6B,
    GPT-NeoX-20B, GPT-3 175B). None (all models) when the evaluated model's size is unknown.
    """
    params = model_info(results)["num_params"]
    if not params:
        return None
    base = _baselines(baselines, families)
    chosen: list[str] = []
    for family in dict.fromkeys(base["family"]):
        chosen += _nearest(base, family, params)
    chosen += [m for m in ("GPT-J-6B", "GPT-NeoX-20B", "GPT-3 175B") if m in set(base["model"])]
    return list(dict.fromkeys(chosen))


def _sources(comparison: pd.DataFrame, base: pd.DataFrame) -> list[str]:
    shown = set(comparison.columns[4:])
    rows = base[base["model"].isin(shown)]
    # Pythia cites one JSON per model and shot count; name the repository once.
    names = (s.split(" evals/")[0] if s.startswith("EleutherAI/pythia@") else s for s in rows["source"])
    return list(dict.fromkeys(names))


def _report_comparison(results: Any, baselines: pd.DataFrame | None, kwargs: dict) -> pd.DataFrame:
    if "models" not in kwargs:
        kwargs = dict(kwargs, models=report_models(results, baselines, kwargs.get("families", COMPARE_FAMILIES)))
    return compare(results, baselines, **kwargs)


def to_markdown(results: Any, baselines: pd.DataFrame | None = None, **compare_kwargs: Any) -> str:
    """A Markdown report: the model's facts, its results table, the comparison with published results.

    Args:
        results: an ``EvalResults``.
        baselines, **compare_kwargs: passed to :func:`compare`; without ``models=``, the models of
            :func:`report_models` (nearest in size per family, and GPT-J-6B, GPT-NeoX-20B, GPT-3 175B).

    Returns:
        The Markdown text.
    """
    table = results_table(results)
    comparison = _report_comparison(results, baselines, compare_kwargs)
    info = model_info(results)
    parts = [f"# Evaluation report: {info['model_name']}", ""]
    parts += [f"- **{key}**: {value}" for key, value in _header_facts(results)]
    parts += ["", "## Results", "", _markdown_table(table), ""]
    parts += ["## Compared with published results", "", _markdown_table(comparison), ""]
    sources = _sources(comparison, _baselines(baselines, compare_kwargs.get("families", COMPARE_FAMILIES)))
    if sources:
        parts += ["Sources: " + "; ".join(sources) + ".", ""]
    warnings = list(getattr(results, "warnings", []) or [])
    if warnings:
        parts += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    return "\n".join(parts)


def figure_to_data_uri(fig, dpi: int = 110) -> str:
    """A Figure as a ``data:image/png;base64,...`` URI (for self-contained HTML)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.facts td { text-align: left; } .warn { color: #a40; } .note { color: #666; font-size: 0.85em; }
"""


def _report_figures(results: Any, table: pd.DataFrame, max_scaling: int) -> list[tuple[str, Any]]:
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


def to_html(results: Any, path: str | os.PathLike | None = None, baselines: pd.DataFrame | None = None, *,
            plots: bool = True, max_scaling_plots: int = 6, **compare_kwargs: Any) -> str:
    """One self-contained HTML page: facts, results, comparison, plots as embedded PNG; no network access.

    Args:
        results: an ``EvalResults``.
        path: where to write the page (written atomically); None to only return it.
        baselines, **compare_kwargs: passed to :func:`compare` (default models: :func:`report_models`).
        plots: include the plots.
        max_scaling_plots: at most this many score-against-size plots (one per task).

    Returns:
        The HTML text.
    """
    table = results_table(results)
    comparison = _report_comparison(results, baselines, compare_kwargs)
    info = model_info(results)
    esc = html.escape
    title = f"Evaluation report: {info['model_name']}"
    body = [f"<h1>{esc(title)}</h1>", '<table class="facts">']
    body += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _header_facts(results)]
    body += ["</table>", "<h2>Results</h2>", table.to_html(index=False, na_rep="", float_format=_fmt, escape=True)]
    body += ["<h2>Compared with published results</h2>",
             comparison.to_html(index=False, na_rep="", float_format=_fmt, escape=True)]
    sources = _sources(comparison, _baselines(baselines, compare_kwargs.get("families", COMPARE_FAMILIES)))
    if sources:
        body.append('<p class="note">Sources: ' + esc("; ".join(sources)) + ".</p>")
    if plots:
        body.append("<h2>Plots</h2>")
        for caption, fig in _report_figures(results, table, max_scaling_plots):
            body.append(f'<figure><img alt="{esc(caption)}" src="{figure_to_data_uri(fig)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
    warnings = list(getattr(results, "warnings", []) or [])
    if warnings:
        items = "".join(f'<li class="warn">{esc(str(w))}</li>' for w in warnings)
        body.append(f"<h2>Warnings</h2><ul>{items}</ul>")
    head = f'<head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style></head>'
    page = f'<!DOCTYPE html>\n<html lang="en">{head}\n<body>\n' + "\n".join(body) + "\n</body></html>\n"
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    return page
