"""`evaluate`: tasks -> requests -> engine -> metrics -> `EvalResults`."""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import workbench.evals.metrics as M
from workbench.evals.caching import CachingEngine, RequestCache, model_fingerprint
from workbench.evals.distributed import wrap_engine
from workbench.evals.engine import RequestEngine
from workbench.evals.results import EvalResults
import workbench.evals.tasks.registry as registry
from workbench.evals.tasks import GenerationTask, Task, get_tasks, resolve_data_dir

log = logging.getLogger(__name__)


def load_model(name_or_path: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str | None = None):
    """`workbench.load` (the model gets `.tokenizer`); dtype "auto" = bfloat16 on CUDA, float32 elsewhere. With
    several processes on this machine (torchrun's `LOCAL_WORLD_SIZE` > 1) the weight files are memory-mapped, so
    the processes share one copy in the page cache instead of each reading its own."""
    from workbench.loading import load  # the model classes, only when a model is loaded by name

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype in (None, "auto"):
        dtype = torch.bfloat16 if str(dev).startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    elif isinstance(dtype, str):
        allowed = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {sorted(allowed)} or 'auto', got {dtype!r}")
        dtype = allowed[dtype]
    shared = os.environ.get("LOCAL_WORLD_SIZE", "1").strip() not in ("", "0", "1")
    return load(os.fspath(name_or_path), dtype=dtype, device=dev, mmap=True if shared else None)


def evaluate(
    model: Any,
    tasks: str | Task | Sequence[str | Task],
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = "auto",
    seed: int = 1234,
    data_dir: str | os.PathLike | None = None,
    device: str | None = None,
    *,
    tokenizer: Any = None,
    cache: str | os.PathLike | RequestCache | None = None,
    max_length: int | None = None,
    progress: bool = True,
    on_batch: Callable[[dict], None] | None = None,
    bootstrap_iters: int = 100_000,
    include_path: str | os.PathLike | None = None,
) -> EvalResults:
    """Evaluate a causal LM on benchmark tasks.

    Args:
        model: a model (`model(input_ids)` -> `.logits`, with `.tokenizer` or `tokenizer=`), or a name/path for
            `workbench.load` ("demo", a directory, a hub id).
        tasks: names ("piqa", "arc_easy", "mmlu", "mmlu_stem" or "mmlu_anatomy", comma-separated allowed), `Task`
            objects, `.jsonl` paths (`MultipleChoiceTask.from_jsonl`), or, as `workbench eval` does, any other
            lm-eval task name or task `.yaml` path: those run through lm-eval's task manager on the same engine
            settings (`lm_eval_tasks.evaluate_lm_eval_tasks`) and are merged into the one result.
        num_fewshot: shots per prompt; must not exceed the few-shot pool. None: each task's lm-eval default
            (`TaskSpec.num_fewshot`: 5 for gsm8k, as lm-eval's gsm8k.yaml; 0 for the others), reported as n-shot.
        limit: evaluate the first `limit` documents of each task, or (a float in (0, 1)) that fraction of them,
            rounded up (as lm-eval's --limit).
        batch_size: "auto" or sequences per batch.
        seed: seeds few-shot sampling (lm-eval's fewshot_random_seed default, 1234), sampled generation, and
            Python's, numpy's and torch's generators.
        data_dir: benchmark data directory (default `$WORKBENCH_DATA_DIR`, else `../shared/data/evals`).
        device: where to run; a model is moved there.
        tokenizer: overrides `model.tokenizer`.
        cache: a `RequestCache` or a JSONL path: finished requests are stored there (checked, tied to the model's
            fingerprint; see `RequestCache`) and reused by a rerun. A resumed run is bit-identical to an
            uninterrupted one: the engine still forms the batches of the whole run (the same prefix forest, rows
            and padding) and only skips the batches whose requests are all cached.
        max_length: context window override, an int >= 1 (default the model's `max_position_embeddings`).
        progress: tqdm bars.
        on_batch: called after every batch with the engine's counters.
        bootstrap_iters: resamples for the bootstrapped standard errors (perplexity), lm-eval's default 100000;
            0 reports no standard errors at all (lm-eval's "N/A").
        include_path: a folder of lm-eval task YAMLs whose names `tasks` may use (lm-eval's --include_path).

    Returns:
        `EvalResults`: metrics, standard errors, per-document records (with lm-eval's sample-log fields), counts,
        warnings, the config, and lm-eval's metadata (`info`, `group_subtasks`); `to_json` writes lm-eval's results
        schema.

    Raises:
        KeyError: unknown task (lists the known ones; without lm-eval installed, every name that is not built in).
        FileNotFoundError: missing data file.
        ValueError: malformed data, num_fewshot larger than the few-shot pool, bad arguments.
    """
    if num_fewshot is not None and (not isinstance(num_fewshot, int) or isinstance(num_fewshot, bool)
                                    or num_fewshot < 0):
        raise ValueError(f"num_fewshot must be None or an int >= 0, got {num_fewshot!r}")
    check_limit(limit)
    if not isinstance(bootstrap_iters, int) or isinstance(bootstrap_iters, bool) or bootstrap_iters < 0:
        raise ValueError(f"bootstrap_iters must be an int >= 0, got {bootstrap_iters!r}")
    task_names, lm_eval_names = split_task_names(tasks)
    task_list = get_tasks(task_names, data_dir)
    if not task_list and not lm_eval_names:
        raise ValueError("no tasks given")
    manager = None
    if lm_eval_names:  # checked before any request runs
        from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks, resolve_lm_eval_tasks

        manager, _ = resolve_lm_eval_tasks(lm_eval_names, include_path)
    model_name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if model_name is not None:
        model = load_model(model, device=device)
    elif device is not None:
        model = model.to(device)
    # as the CLI names it: a loaded model by the name it was loaded under ("demo"), else its class
    model_name = model_name or getattr(model, "name_or_path", None) or type(model).__name__

    def lm_eval_run(name: str) -> EvalResults:
        out = evaluate_lm_eval_tasks(
            model, lm_eval_names, include_path=include_path, num_fewshot=num_fewshot, limit=limit,
            batch_size=batch_size, seed=seed, progress=progress, bootstrap_iters=bootstrap_iters,
            cache=cache.path if isinstance(cache, RequestCache) else cache, task_manager=manager)
        out.config["model"] = name
        return out

    if not task_list:  # lm-eval tasks only
        return lm_eval_run(model_name)
    seed_everything(seed)
    engine = RequestEngine(model, tokenizer, batch_size=batch_size, max_length=max_length, progress=progress,
                           on_batch=on_batch)
    if isinstance(cache, (str, os.PathLike)):
        cache = RequestCache(cache)
    if cache is not None:
        engine = CachingEngine(engine, cache)
    engine = wrap_engine(engine)  # under torchrun, each process computes its share of every request list

    res = EvalResults()
    t0 = time.time()
    shots = {t.name: t.num_fewshot if num_fewshot is None else num_fewshot for t in task_list}
    # each batch of the engine picks its thread count (workbench.threads: its size, the machine's load)
    for task in task_list:
        _evaluate_task(engine, task, shots[task.name], limit, seed, bootstrap_iters, res)
    add_groups(res, [n for n in task_names if isinstance(n, str)], bootstrap_iters)
    res.config = {
        "model": model_name,
        "model_fingerprint": engine.model_id if cache is not None else model_fingerprint(model, engine.max_length),
        "num_params": sum(p.numel() for p in model.parameters()),
        "tasks": [t.name for t in task_list],
        # one count, or (the tasks' own defaults differing) one per task
        "num_fewshot": num_fewshot if num_fewshot is not None else
        next(iter(shots.values())) if len(set(shots.values())) == 1 else shots,
        "limit": limit, "batch_size": batch_size, "seed": seed,
        "bootstrap_iters": bootstrap_iters,
        "data_dir": str(resolve_data_dir(data_dir)),
        "device": str(engine.device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "max_length": engine.max_length,
        "target_delimiter": {t.name: t.target_delimiter for t in task_list},
        "fewshot_delimiter": {t.name: t.fewshot_delimiter for t in task_list},
        "cache": str(cache.path) if cache is not None else None,
        "engine_stats": dict(engine.stats),
        "date": t0,
        "wall_time_s": round(time.time() - t0, 3),
    }
    if lm_eval_names:
        merge(res, lm_eval_run(model_name))
        res.config["wall_time_s"] = round(time.time() - t0, 3)
    res.versions = versions()
    return res


def split_task_names(tasks: str | Task | Sequence[str | Task]) -> tuple[list[str | Task], list[str]]:
    """`tasks` split into those the workbench runs itself (built-in names and groups, `Task` objects, `.jsonl`
    paths, read as `MultipleChoiceTask.from_jsonl`) and those for lm-eval's task manager (any other name, a task
    `.yaml` path), comma-separated names split, order kept.

    Raises:
        KeyError: names that are not built in while lm-eval is not installed (lists the built-in tasks).
    """
    from workbench.evals.tasks import MultipleChoiceTask

    native: list[str | Task] = []
    others: list[str] = []
    for t in [tasks] if isinstance(tasks, (str, Task)) else list(tasks):
        if not isinstance(t, str):
            native.append(t)  # a Task (anything else: get_tasks names the type)
            continue
        for name in (n.strip() for n in t.split(",") if n.strip()):
            if name in registry.TASKS or name in registry.GROUPS:
                native.append(name)
            elif name.endswith(".jsonl"):
                native.append(MultipleChoiceTask.from_jsonl(name))
            else:
                others.append(name)
    if others:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise KeyError(f"unknown task(s) {others}; built-in tasks: {', '.join(registry.known_tasks())}; other "
                           "names and task .yaml paths are lm-eval tasks, which need lm-eval (pip install "
                           "'neox-workbench[eval]')") from None
    return native, others


def merge(res: EvalResults, other: EvalResults) -> None:
    """Add `other`'s tasks (an lm-eval run of the same model) to `res`: metrics, standard errors, samples, counts,
    metadata, groups and warnings; engine counters summed; its run details go to `res.config["lm_eval_run"]`.

    Raises:
        ValueError: a task in both.
    """
    both = sorted(set(res.metrics) & set(other.metrics))
    if both:
        raise ValueError(f"task(s) {both} are both built-in results and lm-eval results; give each task once")
    for name in ("metrics", "stderr", "samples", "counts", "info", "group_subtasks"):
        getattr(res, name).update(getattr(other, name))
    res.warnings += other.warnings
    res.config["tasks"] = [*res.config.get("tasks", []), *other.config.get("tasks", [])]
    ours, theirs = res.config.get("engine_stats", {}), other.config.get("engine_stats", {})
    res.config["engine_stats"] = {k: ours.get(k, 0) + theirs.get(k, 0) for k in {**ours, **theirs}}
    res.config["lm_eval_run"] = {k: v for k, v in other.config.items() if k not in ("model", "tasks")}
    shots = {t: i.get("n-shot") for t, i in res.info.items() if not i.get("group")}
    res.config["num_fewshot"] = next(iter(shots.values())) if len(set(shots.values())) == 1 else shots


def check_limit(limit: Any) -> None:
    """Raise ValueError unless `limit` is None, an int >= 1, a whole float, or a fraction in (0, 1) (lm-eval's
    --limit)."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0 or (
            isinstance(limit, float) and limit > 1 and not limit.is_integer()):
        raise ValueError(f"limit must be None, an int >= 1 or a fraction in (0, 1), got {limit!r}")


def limited(n: int, limit: int | float | None) -> int:
    """How many of `n` documents `limit` selects: lm-eval's rule (a fraction < 1 is rounded up)."""
    if limit is None:
        return n
    return min(n, math.ceil(n * limit) if limit < 1 else int(limit))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (lm-eval's --seed does the same three)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _evaluate_task(engine: Any, task: Task, num_fewshot: int, limit: int | float | None, seed: int,
                   bootstrap_iters: int, res: EvalResults) -> None:
    """Run one task's requests through `engine` and add its metrics, records, counts, warnings and lm-eval
    metadata to `res`."""
    all_docs = task.docs()
    docs = all_docs[: limited(len(all_docs), limit)]
    rnd = random.Random(seed)
    if isinstance(task, GenerationTask):
        task.seed = seed
    if hasattr(task, "bootstrap_iters"):
        task.bootstrap_iters = bootstrap_iters
    per_doc = [task.requests(doc, task.fewshot_prefix(task.sample_shots(doc, num_fewshot, rnd))) for doc in docs]
    flat = [req for reqs in per_doc for req in reqs]
    before = dict(engine.stats)
    kind = task.output_type
    if kind == "generate_until":
        outs, ntok = engine.generate_until(flat, desc=task.name), [0] * len(flat)
    elif kind == "loglikelihood_rolling":
        outs, ntok = engine.loglikelihood_rolling([r[0] for r in flat], desc=task.name), [0] * len(flat)
    else:
        pairs = engine.encode_pairs(flat)
        ntok = [len(p[1]) for p in pairs]
        outs = engine.loglikelihood_tokens(pairs, desc=task.name)
    records, pos = [], 0
    for doc_id, (doc, reqs) in enumerate(zip(docs, per_doc)):
        r = outs[pos : pos + len(reqs)]
        rec = {"doc_id": doc_id, **task.score(doc, r, ntok[pos : pos + len(reqs)])}
        if kind in ("multiple_choice", "loglikelihood"):
            rec["loglikelihoods"] = [x[0] for x in r]
            rec["is_greedy"] = [x[1] for x in r]
        rec.update(sample_fields(task, doc, reqs, r, rec.pop("filtered", None)))
        records.append(rec)
        pos += len(reqs)
    values, errs = task.aggregate(records)
    if bootstrap_iters == 0:
        errs = {m: None for m in errs}  # lm-eval reports no standard error at all then
    res.metrics[task.name], res.stderr[task.name], res.samples[task.name] = values, errs, records
    res.info[task.name] = {"alias": task.alias, "version": task.version, "n-shot": num_fewshot,
                           "higher_is_better": task.higher_is_better, "n_original": len(all_docs),
                           "metric_keys": [list(k) for k in task.metric_keys()],
                           "extra_metrics": list(task.extra_metrics),
                           "config": {**task.config(), "num_fewshot": num_fewshot}}
    delta = {k: engine.stats[k] - before[k] for k in ("truncated", "cached", "computed")}
    res.counts[task.name] = {"n_docs": len(docs), "n_requests": len(flat), "n_truncated": delta["truncated"],
                             "n_cached": delta["cached"], "n_computed": delta["computed"]}
    if delta["truncated"]:
        msg = (f"{task.name}: {delta['truncated']} of {len(flat)} requests exceed the {engine.max_length}-token "
               "window and were left-truncated (as lm-eval does)")
        log.warning(msg)
        res.warnings.append(msg)


def sample_fields(task: Task, doc: dict, reqs: list[tuple], outs: list[Any], filtered: dict | None = None
                  ) -> dict[str, Any]:
    """lm-eval's per-sample log fields for one document (`--log_samples`): the doc, its target, the request
    arguments (prompt texts), the raw responses and, per filter, the filtered ones (`filtered`: a generation
    task's answer per filter, from its `score`).

    Returns:
        `{"doc", "target", "arguments", "resps", "filtered_resps": {filter: [...]}}`.
    """
    if task.output_type == "generate_until":
        filtered = {f: [a] for f, a in (filtered or {}).items()}
        resps = [[o] for o in outs]
    elif task.output_type == "loglikelihood_rolling":
        filtered, resps = {"none": list(outs)}, [[o] for o in outs]
    else:
        pairs = [[float(o[0]), bool(o[1])] for o in outs]
        n = len(task.choices(doc)) if hasattr(task, "choices") else len(outs)
        filtered, resps = {"none": pairs[:n]}, [[p] for p in pairs[:n]]  # GPT-3's extra "Answer:" requests dropped
        reqs = reqs[:n]
    return {"doc": doc, "target": task.target(doc), "arguments": [list(r) for r in reqs], "resps": resps,
            "filtered_resps": filtered}


def add_groups(res: EvalResults, requested: Sequence[str], bootstrap_iters: int = 100_000) -> None:
    """Rows for the groups requested by name (and their subgroups: "mmlu" -> its four categories), as lm-eval
    aggregates them: each metric's size-weighted mean over the group's tasks, its standard error pooled from theirs
    (`pooled_sample_stderr`; None where a task has none). Also fills `res.group_subtasks` and the groups' `info`."""
    tree = registry.group_tree(requested)
    res.group_subtasks.update(tree)
    for group in _bottom_up(tree):
        members = [t for t in registry.GROUPS[group] if t in res.metrics]
        if not members:
            continue
        meta = registry.GROUP_META.get(group, {})
        metrics, errs = {}, {}
        sizes = [res.counts[t]["n_docs"] for t in members]
        for m in res.metrics[members[0]]:
            if not all(m in res.metrics[t] for t in members):
                continue
            metrics[m] = sum(res.metrics[t][m] * n for t, n in zip(members, sizes)) / sum(sizes)
            ses = [res.stderr[t].get(m) for t in members]
            missing = bootstrap_iters == 0 or any(se is None for se in ses)
            errs[m] = None if missing else M.pooled_sample_stderr(ses, sizes)
        res.metrics[group], res.stderr[group] = metrics, errs
        res.counts[group] = {"n_docs": sum(sizes), "n_subtasks": len(members)}
        # lm-eval 0.4.13 fills n-shot and higher_is_better of a group from its direct children when they are
        # tasks only (its propagation runs top-down, before the subgroups have theirs): "mmlu_stem" yes, "mmlu" no
        leaf_level = not registry.subgroups(group)
        shots = {res.info[t]["n-shot"] for t in members}
        hib = {m: res.info[members[0]]["higher_is_better"][m] for m in metrics} if leaf_level else None
        # lm-eval reports a group's version as a string
        res.info[group] = {"alias": meta.get("alias", group), "version": str(meta.get("version", "N/A")),
                           "n-shot": shots.pop() if leaf_level and len(shots) == 1 else None,
                           "higher_is_better": hib,
                           "metric_keys": [k for k in res.info[members[0]]["metric_keys"] if k[0] in metrics],
                           "group": True}


def _bottom_up(tree: dict[str, list[str]]) -> list[str]:
    """The groups of `tree` with every subgroup before the group holding it (lm-eval's aggregation order)."""
    out: list[str] = []

    def visit(g: str) -> None:
        for m in tree.get(g, []):
            if m in tree:
                visit(m)
        if g not in out:
            out.append(g)

    for g in tree:
        visit(g)
    return out


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("neox-workbench", "transformers", "lm-eval", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def default_cache_path(output_dir: str | os.PathLike) -> Path:
    """Where the CLI keeps its request cache: `<output>/requests_cache.jsonl`."""
    return Path(output_dir) / "requests_cache.jsonl"
