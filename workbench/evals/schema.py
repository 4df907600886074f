"""lm-evaluation-harness's results schema for `EvalResults`: the JSON that `lm_eval --output_path` writes, so that
lm-eval's tooling (`lm_eval.utils.make_table`, its result loaders, leaderboards) reads the workbench's results.

    {"results": {"piqa": {"alias": "piqa", "acc,none": 0.61, "acc_stderr,none": 0.011, ...}, "mmlu": {...}},
     "groups": {"mmlu": {...}}, "group_subtasks": {"mmlu": ["mmlu_stem", ...], "mmlu_stem": [...]},
     "configs": {...}, "versions": {"piqa": 1.0, "mmlu": 2}, "n-shot": {...}, "higher_is_better": {...},
     "n-samples": {"piqa": {"original": 1838, "effective": 200}}, "config": {...}, "date": ...,
     "workbench": {engine stats, counts, warnings, software versions, model fingerprint, and "extra_results":
                   the metrics lm-eval does not compute (ARC's GPT-3 normalisations)}}

Metrics are keyed `"<metric>,<filter>"` with `"<metric>_stderr,<filter>"` beside them ("N/A" where there is none).
`samples_jsonl` writes the per-document records as lm-eval's `--log_samples` does (one JSONL per task).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.evals.results import EvalResults


def _keys(res: EvalResults, task: str) -> list[tuple[str, str, str]]:
    keys = res.info.get(task, {}).get("metric_keys")
    if keys:
        return [tuple(k) for k in keys]
    return [(k, *k.split(",", 1)) if "," in k else (k, k, "none") for k in res.metrics[task]]


def to_lm_eval(res: EvalResults) -> dict[str, Any]:
    """The lm-eval results dict of `res` (without samples; see `samples_jsonl`).

    Returns:
        lm-eval's top-level keys (`results`, `groups` when any, `group_subtasks`, `configs`, `versions`,
        `n-shot`, `higher_is_better`, `n-samples`, `config`, `date`), plus `workbench`.
    """
    results, groups, extra = {}, {}, {}
    for task, values in res.metrics.items():
        info = res.info.get(task, {})
        skip = set(info.get("extra_metrics", ()))
        if skip:  # the workbench's own metrics (GPT-3's normalisations) go to its block, not lm-eval's rows
            extra[task] = {"metrics": {k: v for k, v in values.items() if k in skip},
                           "stderr": {k: v for k, v in res.stderr.get(task, {}).items() if k in skip}}
        n = res.counts.get(task, {}).get("n_docs")
        row: dict[str, Any] = {"name": task, "alias": info.get("alias", task), "sample_len": n}
        for key, metric, filt in _keys(res, task):
            if key not in values or metric in skip:
                continue
            err = res.stderr.get(task, {}).get(key)
            row[f"{metric},{filt}"] = values[key]
            row[f"{metric}_stderr,{filt}"] = "N/A" if err is None else err
        if info.get("group"):
            row["sample_count"] = {k: n for k in row if "," in k and "_stderr," not in k}
        results[task] = row
        if info.get("group"):
            groups[task] = row
    tasks = [t for t in res.metrics if not res.info.get(t, {}).get("group")]
    out: dict[str, Any] = {"results": results}
    if groups:
        out["groups"] = groups
    cfg = res.config
    out.update({
        "group_subtasks": dict(res.group_subtasks),
        "configs": {t: res.info[t]["config"] for t in sorted(tasks) if "config" in res.info.get(t, {})},
        "versions": {t: res.info[t]["version"] for t in sorted(res.metrics) if "version" in res.info.get(t, {})},
        "n-shot": {t: res.info[t]["n-shot"] for t in sorted(res.metrics)
                   if res.info.get(t, {}).get("n-shot") is not None},
        "higher_is_better": {t: res.info[t]["higher_is_better"] for t in sorted(res.metrics)
                             if res.info.get(t, {}).get("higher_is_better") is not None},
        "n-samples": {t: {"original": res.info.get(t, {}).get("n_original", res.counts.get(t, {}).get("n_docs")),
                          "effective": res.counts.get(t, {}).get("n_docs")} for t in tasks},
        "config": {"model": cfg.get("model"), "model_args": cfg.get("model_args"), "model_num_parameters":
                   cfg.get("num_params"), "model_dtype": cfg.get("dtype"), "batch_size": cfg.get("batch_size"),
                   "device": cfg.get("device"), "limit": cfg.get("limit"), "bootstrap_iters": cfg.get("bootstrap_iters"),
                   "random_seed": cfg.get("seed"), "numpy_seed": cfg.get("seed"), "torch_seed": cfg.get("seed"),
                   "fewshot_seed": cfg.get("seed")},
        "date": cfg.get("date", time.time()),
        "lm_eval_version": res.versions.get("lm-eval"),
        "transformers_version": res.versions.get("transformers"),
        "workbench": {"config": cfg, "versions": res.versions, "counts": res.counts, "warnings": res.warnings,
                      "info": res.info, "extra_results": extra},
    })
    return out


def from_lm_eval_dict(data: dict[str, Any]) -> dict[str, Any]:
    """The `EvalResults` fields of a results dict in lm-eval's schema (written by `to_lm_eval`, or by lm-eval).

    Returns:
        Keyword arguments of `EvalResults`: metrics, stderr, config, versions, counts, warnings, info,
        group_subtasks (samples are not in a results file).
    """
    wb = data.get("workbench", {})
    info = dict(wb.get("info", {}))
    metrics, stderr = {}, {}
    for task, row in data["results"].items():
        keys = info.get(task, {}).get("metric_keys")
        by_lm = {f"{m},{f}": k for k, m, f in keys} if keys else {}
        metrics[task], stderr[task] = {}, {}
        for mf, value in row.items():
            metric, _, filt = mf.partition(",")
            if not filt or metric.endswith("_stderr") or isinstance(value, (str, bool)) or value is None:
                continue
            key = by_lm.get(mf, metric if filt == "none" else mf)
            err = row.get(f"{metric}_stderr,{filt}")
            metrics[task][key] = value
            stderr[task][key] = None if err in (None, "N/A") else err
    for task, block in wb.get("extra_results", {}).items():
        metrics.setdefault(task, {}).update(block["metrics"])
        stderr.setdefault(task, {}).update(block["stderr"])
    counts = wb.get("counts") or {t: {"n_docs": n["effective"]} for t, n in data.get("n-samples", {}).items()}
    return {"metrics": metrics, "stderr": stderr, "config": wb.get("config", data.get("config", {})),
            "versions": wb.get("versions", {}), "counts": counts, "warnings": list(wb.get("warnings", [])),
            "info": info, "group_subtasks": {g: m for g, m in data.get("group_subtasks", {}).items() if m}}


def hash_string(text: str) -> str:
    """lm-eval's `hash_string`: sha256 hex digest."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sample_records(res: EvalResults, task: str) -> list[dict[str, Any]]:
    """One task's per-document records in lm-eval's `--log_samples` layout: one line per document and filter,
    with `doc_id`, `doc`, `target`, `arguments` ({"gen_args_i": {"arg_j": ...}}), `resps`, `filtered_resps`,
    `filter`, `metrics` (their names), `doc_hash`, `prompt_hash`, `target_hash` and each metric's value.

    Raises:
        KeyError: `task` has no per-document records (not evaluated, or read back from a results file).
    """
    if not res.samples.get(task):
        raise KeyError(f"no per-document records for task {task!r}; tasks with records: "
                       f"{[t for t, s in res.samples.items() if s]}")
    keys = _keys(res, task)
    out = []
    for filt in dict.fromkeys(f for _, _, f in keys):
        metric_keys = [(k, m) for k, m, f in keys if f == filt]
        for rec in res.samples[task]:
            args = rec["arguments"]
            target = rec["target"]
            line = {
                "doc_id": rec["doc_id"], "doc": rec["doc"], "target": str(target),
                "arguments": {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(arg)} for i, arg in enumerate(args)},
                "resps": rec["resps"], "filtered_resps": rec["filtered_resps"][filt], "filter": filt,
                "metrics": [m for _, m in metric_keys],
                "doc_hash": hash_string(json.dumps(rec["doc"], indent=2, default=str, ensure_ascii=False)),
                "prompt_hash": hash_string(args[0][0]), "target_hash": hash_string(str(target)),
            }
            line.update({m: rec[k] for k, m in metric_keys})
            out.append(line)
    return out


def sanitize_list(value: Any) -> Any:
    """lm-eval's `sanitize_list`: every leaf of nested lists / tuples as a string (`[[-10.1, False]]` ->
    `[["-10.1", "False"]]`), as its `--log_samples` writes `resps` and `filtered_resps`."""
    if isinstance(value, list):
        return [sanitize_list(v) for v in value]
    if isinstance(value, tuple):
        return tuple(sanitize_list(v) for v in value)
    return str(value)


def as_written(line: dict[str, Any]) -> dict[str, Any]:
    """A `sample_records` line as lm-eval writes it to `samples_<task>_<date>.jsonl` (its
    `save_results_samples`): `resps`, `filtered_resps` sanitised to strings, `target` a string; the doc, the
    arguments and the metric values keep their types."""
    return {**line, "resps": sanitize_list(line["resps"]), "filtered_resps": sanitize_list(line["filtered_resps"]),
            "target": str(line["target"])}


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model's results (`sanitize_model_name`)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)
