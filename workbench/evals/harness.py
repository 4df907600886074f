"""lm-evaluation-harness both ways.

- `WorkbenchLM`: an lm-eval `LM` registered as "workbench" (on import of this module), so lm-eval's whole task
  zoo runs on workbench models with `RequestEngine` underneath::

      import workbench.evals.harness  # registers "workbench"
      lm_eval.simple_evaluate(model="workbench", model_args="pretrained=demo", tasks=["piqa"])

- `export_lm_eval_tasks`: our tasks written as lm-eval task YAML, generated from their specs (`TaskSpec.lm_eval`,
  lm-eval's own prompt templates), for cross-checking `workbench.evals.evaluate` against lm-eval
  (`TaskManager(include_path=out_dir)`). The YAMLs read local JSON-lines files where they are; other data
  (HellaSwag's text dump, MMLU's CSVs, hub copies, a separate few-shot split) is first written as JSON lines
  into `out_dir`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import lm_eval.models  # noqa: F401  (lm-eval fills its model registry only while it is empty: fill it first)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from workbench.evals.caching import CachingEngine, RequestCache
from workbench.evals.engine import RequestEngine
from workbench.evals.generation_kwargs import normalize as normalize_generation
import workbench.evals.tasks.registry as registry
from workbench.evals.tasks import Task, TaskSpec, resolve_data_dir

PREFIX = "wb_"  # exported task names, so they never clash with lm-eval's own tasks of the same name


@register_model("workbench")
class WorkbenchLM(LM):
    """lm-eval model backed by a workbench model and `RequestEngine`.

    Args (all strings from `model_args` are accepted):
        pretrained: name or path for `workbench.load` ("demo", a directory, a hub id), or a model object.
        batch_size: "auto" or an int.
        device: "cpu", "cuda", ... (default: cuda when available).
        dtype: "auto", "float32", "bfloat16", "float16".
        max_length: context window override.
        tokenizer: tokenizer object overriding `model.tokenizer`.
        cache: path of a resumable request cache (JSONL).
        max_gen_toks: generated tokens when a request does not say (lm-eval's default 256).
        seed: the sampling seed of requests whose generation arguments give none; default torch's seed at
            generation time (`torch.initial_seed()`), which lm-eval sets from its `torch_random_seed` (`--seed`):
            so, as with lm-eval's hf backend (which samples from torch's global generator), the run's seed decides
            the samples, and the same seed repeats them.
    """

    def __init__(
        self,
        pretrained: Any = "demo",
        batch_size: int | str | None = "auto",
        device: str | None = None,
        dtype: str | None = "auto",
        max_length: int | str | None = None,
        tokenizer: Any = None,
        cache: str | None = None,
        max_gen_toks: int | str = 256,
        max_batch_size: Any = None,  # lm-eval passes it; the engine sizes batches itself
        seed: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from workbench.evals.runner import load_model

        if kwargs:
            raise TypeError(f"WorkbenchLM got unknown model_args {sorted(kwargs)}; allowed: pretrained, batch_size, "
                            "device, dtype, max_length, tokenizer, cache, max_gen_toks, seed")
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # lm-eval's CLI default is cuda
        if isinstance(pretrained, torch.nn.Module):
            model = pretrained.to(device) if device else pretrained
        else:
            model = load_model(pretrained, dtype=dtype, device=device)
        bs = batch_size if batch_size in (None, "auto") else int(batch_size)
        self.model_engine = RequestEngine(model, tokenizer, batch_size=bs or "auto",
                                          max_length=int(max_length) if max_length else None)
        self.engine = CachingEngine(self.model_engine, RequestCache(cache)) if cache else self.model_engine
        self._device = self.engine.device
        self.max_gen_toks = int(max_gen_toks)
        self.seed = None if seed in (None, "") else int(seed)
        self.progress = True  # False: no progress bars whatever lm-eval asks (`workbench eval --quiet`)

    @property
    def tokenizer_name(self) -> str:
        return "gpt-neox-20b"

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args[:2]) for r in requests]
        self.model_engine.progress = self.progress and not disable_tqdm
        out = self.engine.loglikelihood(args)
        for a, res in zip(args, out):
            self.cache_hook.add_partial("loglikelihood", a, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        self.model_engine.progress = self.progress and not disable_tqdm
        out = self.engine.loglikelihood_rolling(texts)
        for t, res in zip(texts, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (t,), res)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # lm-eval's generation arguments (do_sample, temperature, top_p, top_k, until, max_gen_toks ...), checked
        reqs = [(r.args[0], normalize_generation(r.args[1], self.max_gen_toks)) for r in requests]
        seed = self.seed if self.seed is not None else torch.initial_seed()
        for _, kw in reqs:
            if kw.get("do_sample"):
                kw.setdefault("seed", seed)  # lm-eval passes its seeds to no model: its torch seed is the run's
        self.model_engine.progress = self.progress and not disable_tqdm
        out = self.engine.generate_until(reqs)
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, res)
        return out


# ----------------------------------------------------------------------------------------------------------------
# task specs -> lm-eval YAML

LM_EVAL_METRICS = ("acc", "acc_norm", "perplexity", "exact_match", "word_perplexity", "byte_perplexity",
                   "bits_per_byte")  # of our metrics, those lm-eval computes too


def export_lm_eval_tasks(
    tasks: list[str], out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> list[str]:
    """Write lm-eval task YAMLs for our tasks into `out_dir`.

    Args:
        tasks: task or group names (any registered task with an lm-eval template: `known_tasks()`).
        out_dir: folder for the YAMLs (and converted records); pass it to
            `lm_eval.tasks.TaskManager(include_path=out_dir)`.
        data_dir: the benchmark data (default as `evaluate`; without local files, the hub copy).

    Returns:
        The lm-eval task names written ("wb_" + our name), in order.

    Raises:
        KeyError: an unknown task, or one without an lm-eval template.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = resolve_data_dir(data_dir)
    names = []
    for group, members in registry.group_tree(tasks).items():  # lm-eval group YAMLs ("mmlu" and its categories)
        _write(out / f"_{PREFIX}{group}.yaml", group_yaml(group, members))
    for name in registry.expand(tasks):
        spec = registry.TASKS[name]
        if spec.lm_eval is None:
            exportable = ", ".join(n for n, s in sorted(registry.TASKS.items()) if s.lm_eval is not None)
            raise KeyError(f"cannot export {name!r} to lm-eval YAML (no template); exportable: {exportable}")
        _write(out / f"{PREFIX}{name}.yaml", task_yaml(spec, spec.build(d), spec.local_file(d), out))
        names.append(PREFIX + name)
    return names


def group_yaml(group: str, members: list[str]) -> list[str]:
    """An lm-eval group YAML: its members (prefixed), alias, size-weighted aggregation of acc, version."""
    meta = registry.GROUP_META.get(group, {})
    lines = [f"group: {PREFIX}{group}", f"group_alias: {_yaml_str(meta.get('alias', group))}", "task:"]
    lines += [f"  - {PREFIX}{m}" for m in members]
    return lines + ["aggregate_metric_list:", "  - metric: acc", "    weight_by_size: True", "metadata:",
                    f"  version: {meta.get('version', 1.0)}"]


def task_yaml(spec: TaskSpec, task: Task, local: Path | None, out: Path) -> list[str]:
    """The lm-eval YAML lines of `task` (built from `spec`), its data read from `local` or written into `out`."""
    t = spec.lm_eval
    name = PREFIX + spec.name
    # lm-eval reads JSON lines itself; other formats, hub records and separate few-shot pools are converted
    data = {"test": local if local is not None and local.suffix == ".jsonl" else _jsonl(out / f"{name}_test.jsonl",
                                                                                         task.docs())}
    pool, same_split = task.fewshot_pool()
    if not same_split:
        data["dev"] = _jsonl(out / f"{name}_dev.jsonl", pool)
    files = ", ".join(f"{k}: {_yaml_str(str(v))}" for k, v in data.items())
    lines = [f"task: {name}", f"task_alias: {_yaml_str(task.alias)}", "dataset_path: json",
             f"dataset_kwargs: {{data_files: {{{files}}}}}",
             f"output_type: {task.output_type}", "test_split: test",
             # one split: shots come from it, lm-eval removing the evaluated document
             f"fewshot_split: {'test' if same_split else 'dev'}"]
    if task.sampler == "first_n":
        lines.append("fewshot_config: {sampler: first_n}")
    if spec.num_fewshot:
        lines.append(f"num_fewshot: {spec.num_fewshot}")
    for key, value, default in [("description", task.description, ""), ("target_delimiter", task.target_delimiter, " "),
                                ("fewshot_delimiter", task.fewshot_delimiter, "\n\n")]:
        if value != default:
            lines.append(f"{key}: {_yaml_str(value)}")
    if t.process_docs:
        module, function = t.process_docs.split(":")
        (out / f"{name}_utils.py").write_text(f"from {module} import {function} as process_docs  # noqa: F401\n")
        lines.append(f"process_docs: !function {name}_utils.process_docs")
    lines.append(f"doc_to_text: {_yaml_str(t.doc_to_text)}")
    if t.doc_to_choice is not None:
        lines.append(f"doc_to_choice: {json.dumps(t.doc_to_choice)}")  # a JSON string or list is YAML too
    lines.append(f"doc_to_target: {_yaml_str(t.doc_to_target)}")
    if task.output_type == "generate_until":
        lines += _generation(task)
    return lines + _metrics(task) + ["metadata:", f"  version: {task.version}"]


def _generation(task: Any) -> list[str]:
    # lm-eval's generation settings and filter pipelines (triviaqa.yaml, gsm8k.yaml)
    kw = {k: v for k, v in task.request_kwargs().items() if k != "seed"}
    lines = [f"generation_kwargs: {json.dumps(kw)}", "filter_list:"]
    for name, pipeline in task.filters.items():
        lines += [f"  - name: {_yaml_str(name)}", "    filter:"]
        for step, args in pipeline:
            lines.append(f"      - {json.dumps({'function': step, **args})}")
    return lines


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jsonl(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def _metrics(task: Any) -> list[str]:
    out = ["metric_list:"]
    for m, hib in task.higher_is_better.items():
        if m not in LM_EVAL_METRICS:
            continue
        agg = {"perplexity": "perplexity", "word_perplexity": "weighted_perplexity",
               "byte_perplexity": "weighted_perplexity", "bits_per_byte": "bits_per_byte"}.get(m, "mean")
        out += [f"  - metric: {m}", f"    aggregation: {agg}", f"    higher_is_better: {str(hib).lower()}"]
        if m == "exact_match":
            out += [f"    {k}: {json.dumps(v if not isinstance(v, tuple) else list(v))}"
                    for k, v in task.match_options.items()]
    return out
