"""`evaluate`: tasks -> requests -> engine -> metrics -> `EvalResults`."""

from __future__ import annotations

import logging
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
from workbench.evals.tasks import GROUPS, GenerationTask, Task, get_tasks, resolve_data_dir

log = logging.getLogger(__name__)


def load_model(name_or_path: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str | None = None):
    """`workbench.load` (the model gets `.tokenizer`); dtype "auto" = bfloat16 on CUDA, float32 elsewhere."""
    from workbench.loading import load  # the model classes, only when a model is loaded by name

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype in (None, "auto"):
        dtype = torch.bfloat16 if str(dev).startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    elif isinstance(dtype, str):
        allowed = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {sorted(allowed)} or 'auto', got {dtype!r}")
        dtype = allowed[dtype]
    return load(os.fspath(name_or_path), dtype=dtype, device=dev)


def evaluate(
    model: Any,
    tasks: str | Task | Sequence[str | Task],
    num_fewshot: int = 0,
    limit: int | None = None,
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
) -> EvalResults:
    """Evaluate a causal LM on benchmark tasks.

    Args:
        model: a model (`model(input_ids)` -> `.logits`, with `.tokenizer` or `tokenizer=`), or a name/path for
            `workbench.load` ("demo", a directory, a hub id).
        tasks: names ("piqa", "arc_easy", "mmlu" or "mmlu_anatomy", comma-separated allowed) or `Task` objects.
        num_fewshot: shots per prompt; must not exceed the few-shot pool.
        limit: evaluate the first `limit` documents of each task (as lm-eval's --limit).
        batch_size: "auto" or sequences per batch.
        seed: few-shot sampling seed (lm-eval's fewshot_random_seed default, 1234).
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

    Returns:
        `EvalResults` with metrics, standard errors, per-sample log-likelihoods, counts, warnings and the config.

    Raises:
        KeyError: unknown task (lists the known ones). FileNotFoundError: missing data file.
        ValueError: malformed data, num_fewshot larger than the few-shot pool, bad arguments.
    """
    if not isinstance(num_fewshot, int) or isinstance(num_fewshot, bool) or num_fewshot < 0:
        raise ValueError(f"num_fewshot must be an int >= 0, got {num_fewshot!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    task_names = [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    task_list = get_tasks(task_names, data_dir)
    if not task_list:
        raise ValueError("no tasks given")
    model_name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    if model_name is not None:
        model = load_model(model, device=device)
    elif device is not None:
        model = model.to(device)
    engine = RequestEngine(model, tokenizer, batch_size=batch_size, max_length=max_length, progress=progress,
                           on_batch=on_batch)
    if isinstance(cache, (str, os.PathLike)):
        cache = RequestCache(cache)
    if cache is not None:
        engine = CachingEngine(engine, cache)
    engine = wrap_engine(engine)  # under torchrun, each process computes its share of every request list

    res = EvalResults()
    t0 = time.time()
    for task in task_list:
        _evaluate_task(engine, task, num_fewshot, limit, seed, res)
    _add_groups(res, task_names)
    res.config = {
        "model": model_name or type(model).__name__,
        "model_fingerprint": engine.model_id if cache is not None else model_fingerprint(model, engine.max_length),
        "num_params": sum(p.numel() for p in model.parameters()),
        "tasks": [t.name for t in task_list],
        "num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size, "seed": seed,
        "data_dir": str(resolve_data_dir(data_dir)),
        "device": str(engine.device),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "max_length": engine.max_length,
        "target_delimiter": {t.name: t.target_delimiter for t in task_list},
        "fewshot_delimiter": {t.name: t.fewshot_delimiter for t in task_list},
        "cache": str(cache.path) if cache is not None else None,
        "engine_stats": dict(engine.stats),
        "wall_time_s": round(time.time() - t0, 3),
    }
    res.versions = versions()
    return res


def _evaluate_task(engine: Any, task: Task, num_fewshot: int, limit: int | None, seed: int, res: EvalResults) -> None:
    """Run one task's requests through `engine` and add its metrics, records, counts and warnings to `res`."""
    docs = task.docs()[:limit] if limit else task.docs()
    rnd = random.Random(seed)
    per_doc = [task.requests(doc, task.fewshot_prefix(task.sample_shots(doc, num_fewshot, rnd))) for doc in docs]
    flat = [req for reqs in per_doc for req in reqs]
    before = dict(engine.stats)
    generation = isinstance(task, GenerationTask)
    if generation:
        outs, ntok = engine.generate_until(flat, desc=task.name), [0] * len(flat)
    else:
        pairs = engine.encode_pairs(flat)
        ntok = [len(p[1]) for p in pairs]
        outs = engine.loglikelihood_tokens(pairs, desc=task.name)
    records, pos = [], 0
    for doc_id, (doc, reqs) in enumerate(zip(docs, per_doc)):
        r = outs[pos : pos + len(reqs)]
        rec = {"doc_id": doc_id, **task.score(doc, r, ntok[pos : pos + len(reqs)])}
        if not generation:
            rec["loglikelihoods"] = [x[0] for x in r]
            rec["is_greedy"] = [x[1] for x in r]
        records.append(rec)
        pos += len(reqs)
    values, errs = task.aggregate(records)
    res.metrics[task.name], res.stderr[task.name], res.samples[task.name] = values, errs, records
    delta = {k: engine.stats[k] - before[k] for k in ("truncated", "cached", "computed")}
    res.counts[task.name] = {"n_docs": len(docs), "n_requests": len(flat), "n_truncated": delta["truncated"],
                             "n_cached": delta["cached"], "n_computed": delta["computed"]}
    if delta["truncated"]:
        msg = (f"{task.name}: {delta['truncated']} of {len(flat)} requests exceed the {engine.max_length}-token "
               "window and were left-truncated (as lm-eval does)")
        log.warning(msg)
        res.warnings.append(msg)


def _add_groups(res: EvalResults, requested: Sequence[Any]) -> None:
    """Group rows (e.g. "mmlu") for groups requested by name: accuracy over all their documents (lm-eval's
    weight_by_size), standard error over the pooled documents."""
    names = {n.strip() for r in requested if isinstance(r, str) for n in r.split(",")}
    for group, members in GROUPS.items():
        if group not in names:
            continue
        accs = [rec["acc"] for m in members if m in res.samples for rec in res.samples[m]]
        if accs:
            res.metrics[group] = {"acc": M.mean(accs)}
            res.stderr[group] = {"acc": M.mean_stderr(accs)}
            res.counts[group] = {"n_docs": len(accs), "n_subtasks": sum(m in res.samples for m in members)}


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
