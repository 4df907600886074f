"""Report tables: the run's results, and the run side by side with the published baselines.

Every function takes an ``EvalResults`` (``workbench.evals.results``) or any object with:

- ``table()`` -> DataFrame with columns task, metric, value, stderr;
- the model's identity, read from attributes ``model_name`` / ``num_params`` / ``num_fewshot`` when present,
  else from ``results.config`` keys of the same names (``model`` is accepted for the name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from workbench.evals.baselines import load_baselines

# Families shown by default: the ones the GPT-NeoX-20B paper compares against, and the Pythia suite.
COMPARE_FAMILIES = ("gpt3", "gpt3-api", "gpt-j", "gpt-neox", "fairseq", "pythia")


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


def run_fewshot(results: Any, task: str) -> int:
    """The run's shot count for `task` (a run may record one per task)."""
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


def baseline_frame(baselines: pd.DataFrame | str | Sequence[str] | None, families: Iterable[str] | None) -> pd.DataFrame:
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
    base = baseline_frame(baselines, families)
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
        shots = num_fewshot if num_fewshot is not None else run_fewshot(results, record.task)
        match = base[(base["task"] == record.task) & (base["metric"] == record.metric) & (base["num_fewshot"] == shots)]
        match = match.drop_duplicates("model", keep="first")
        row = {"task": record.task, "metric": record.metric, column: record.value, "stderr": record.stderr}
        row.update(dict(zip(match["model"], match["value"])))
        rows.append(row)
    out = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["task", "metric", column, "stderr"])
    present = [m for m in order if m in out.columns]
    return out.reindex(columns=["task", "metric", column, "stderr", *present])


def nearest_model(base: pd.DataFrame, family: str, params: int | None) -> list[str]:
    """[the model of `family` nearest in size (log scale) to `params`], or [] when unknown."""
    rows = base[base["family"] == family].drop_duplicates("model")
    if rows.empty or not params:
        return []
    distance = (rows["params"].astype(float).map(math.log) - math.log(params)).abs()
    return [rows.loc[distance.idxmin(), "model"]]


# --------------------------------------------------------------------------- what a report page shows

@dataclass
class Page:
    """The content of a report page, rendered by `to_markdown` and `to_html`."""

    title: str
    facts: list[tuple[str, str]]  # (name, value): model, parameters, shots, limit, seed ...
    table: pd.DataFrame  # the run's results
    comparison: pd.DataFrame  # `compare` over the models of `report_models` (unless `models=` is given)
    sources: list[str]  # where the shown baselines come from
    warnings: list[str]


def page(results: Any, baselines: pd.DataFrame | None = None, **compare_kwargs: Any) -> Page:
    """What a report page on `results` shows; `baselines` and `compare_kwargs` go to `compare`."""
    families = compare_kwargs.get("families", COMPARE_FAMILIES)
    if "models" not in compare_kwargs:
        compare_kwargs["models"] = report_models(results, baselines, families)
    comparison = compare(results, baselines, **compare_kwargs)
    shown = baseline_frame(baselines, families)
    shown = shown[shown["model"].isin(set(comparison.columns[4:]))]
    # Pythia cites one JSON per model and shot count; name the repository once.
    sources = (s.split(" evals/")[0] if s.startswith("EleutherAI/pythia@") else s for s in shown["source"])
    return Page(f"Evaluation report: {model_info(results)['model_name']}", _facts(results), results_table(results),
                comparison, list(dict.fromkeys(sources)), list(getattr(results, "warnings", []) or []))


def report_models(results: Any, baselines: pd.DataFrame | None = None,
                  families: Iterable[str] = COMPARE_FAMILIES) -> list[str] | None:
    """Baseline models for a report page, to keep its table readable: per family, the model nearest
    in size to the evaluated one, plus the GPT-NeoX-20B paper's reference points (GPT-J-6B,
    GPT-NeoX-20B, GPT-3 175B). None (all models) when the evaluated model's size is unknown.
    """
    params = model_info(results)["num_params"]
    if not params:
        return None
    base = baseline_frame(baselines, families)
    chosen: list[str] = []
    for family in dict.fromkeys(base["family"]):
        chosen += nearest_model(base, family, params)
    chosen += [m for m in ("GPT-J-6B", "GPT-NeoX-20B", "GPT-3 175B") if m in set(base["model"])]
    return list(dict.fromkeys(chosen))


def fmt(value: Any) -> str:
    """A table cell: 4 significant digits for floats, empty for None and NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _facts(results: Any) -> list[tuple[str, str]]:
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
