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
        `EvalResults` with metrics, standard errors (None where lm-eval reports "N/A"), `counts[task]["n_docs"]`,
        a config of model, num_params, num_fewshot (an int, or `{task: shots}` when they differ) and limit, and
        lm-eval's metadata (`info`: alias, version, n-shot, higher_is_better, filters, configs; `group_subtasks`),
        so that `to_dict()` writes lm-eval's results back. lm-eval's per-sample logs (`out["samples"]`, from
        `log_samples=True`) become the per-document records, one per document with every filter's responses.
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
        elif isinstance(values.get("sample_len"), int):
            res.counts[task] = {"n_docs": values["sample_len"]}
        keys = [(m if f == "none" else k, m, f) for k in values if "," in k
                for m, _, f in [k.partition(",")] if not m.endswith("_stderr")]
        res.info[task] = {"alias": values.get("alias", task), "version": out.get("versions", {}).get(task),
                          "n-shot": out.get("n-shot", {}).get(task),
                          "higher_is_better": out.get("higher_is_better", {}).get(task),
                          "n_original": out.get("n-samples", {}).get(task, {}).get("original"),
                          "metric_keys": [list(k) for k in keys], "group": task in out.get("groups", {})}
        if task in out.get("configs", {}):
            res.info[task]["config"] = out["configs"][task]
    res.group_subtasks = {g: list(m) for g, m in out.get("group_subtasks", {}).items() if m}
    for task, lines in out.get("samples", {}).items():
        res.samples[task] = _records(lines, res.info.get(task, {}).get("metric_keys", []))
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


def _records(lines: list[dict], metric_keys: list[list[str]]) -> list[dict]:
    """lm-eval's sample lines (one per document and filter) -> one workbench record per document."""
    by_doc: dict[Any, dict] = {}
    for line in lines:
        rec = by_doc.setdefault(line["doc_id"], {
            "doc_id": line["doc_id"], "doc": line["doc"], "target": line["target"],
            "arguments": [list(a) for a in line["arguments"]], "resps": line["resps"], "filtered_resps": {}})
        rec["filtered_resps"][line["filter"]] = line["filtered_resps"]
        for key, metric, filt in metric_keys:
            if filt == line["filter"] and metric in line:
                rec[key] = line[metric]
    return [by_doc[k] for k in sorted(by_doc)]