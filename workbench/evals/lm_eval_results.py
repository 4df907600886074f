"""lm-evaluation-harness output as `EvalResults`, for the workbench's tables, baseline comparisons and reports.

    out = lm_eval.simple_evaluate(model=WorkbenchLM(pretrained=model), tasks=["arc_easy"], limit=40)
    results = from_lm_eval(out, model, name="demo")
    results.compare()

lm-eval keys a metric as `"<metric>,<filter>"` (`"acc,none"`, `"exact_match,strict-match"`) with its standard
error under `"<metric>_stderr,<filter>"`. The default filter `none` is dropped (`"acc"`); others stay in the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workbench.evals import EvalResults


def from_lm_eval(out: Mapping[str, Any], model: Any = None, name: str | None = None) -> EvalResults:
    """Convert the dict `lm_eval.simple_evaluate` returns (or the results JSON lm-eval writes) to `EvalResults`.

    Args:
        out: lm-eval's output: `results`, and where present `n-shot`, `n-samples`, `config`, `lm_eval_version`.
        model: the evaluated model (a torch module), for its parameter count; default lm-eval's
            `config["model_num_parameters"]` where its backend records one.
        name: the model's name in tables and reports; default lm-eval's `config["model"]`.

    Returns:
        `EvalResults` with metrics, standard errors (None where lm-eval reports "N/A"), `counts[task]["n_docs"]`
        and a config of model, num_params, num_fewshot (an int, or `{task: shots}` when they differ) and limit.
        Per-sample records are not converted (`samples` stays empty): lm-eval's have another layout.
    """
    config = out.get("config", {})
    res = EvalResults()
    for task, values in out["results"].items():
        res.metrics[task], res.stderr[task] = {}, {}
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not _is_number(value):
                continue  # "alias", "sample_len", standard errors
            label = metric if filt == "none" else key
            err = values.get(f"{metric}_stderr,{filt}")
            res.metrics[task][label] = float(value)
            res.stderr[task][label] = float(err) if _is_number(err) else None
        if task in out.get("n-samples", {}):
            res.counts[task] = {"n_docs": out["n-samples"][task]["effective"]}
    shots = {t: k for t, k in out.get("n-shot", {}).items() if t in res.metrics}
    num_params = config.get("model_num_parameters") if model is None else sum(p.numel() for p in model.parameters())
    res.config = {
        "model": name or config.get("model", "model"),
        "num_params": num_params,
        "num_fewshot": next(iter(shots.values())) if len(set(shots.values())) == 1 else shots or None,
        "limit": config.get("limit"),
        "tasks": list(res.metrics),
    }
    res.versions = {dist: out[key] for dist, key in [("lm-eval", "lm_eval_version"),
                                                     ("transformers", "transformers_version")] if key in out}
    return res


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
