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

import lm_eval.models  # noqa: F401  (lm-eval fills its model registry only while it is empty: fill it first)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from workbench.evals.caching import CachingEngine, RequestCache
from workbench.evals.engine import RequestEngine
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
        max_batch_size: Any = None,  # lm-eval passes it; the engine sizes batches itself
        **kwargs: Any,
    ) -> None:
        super().__init__()
        import torch

        from workbench.evals.runner import load_model

        if kwargs:
            raise TypeError(f"WorkbenchLM got unknown model_args {sorted(kwargs)}; allowed: pretrained, batch_size, "
                            "device, dtype, max_length, tokenizer, cache")
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

    @property
    def tokenizer_name(self) -> str:
        return "gpt-neox-20b"

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args[:2]) for r in requests]
        self.model_engine.progress = not disable_tqdm
        out = self.engine.loglikelihood(args)
        for a, res in zip(args, out):
            self.cache_hook.add_partial("loglikelihood", a, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        self.model_engine.progress = not disable_tqdm
        out = self.engine.loglikelihood_rolling(texts)
        for t, res in zip(texts, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (t,), res)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        reqs = []
        for r in requests:
            ctx, kw = r.args[0], dict(r.args[1] or {})
            if kw.get("do_sample"):
                raise ValueError("WorkbenchLM generates greedily only; got do_sample=True")
            until = kw.get("until") or []
            reqs.append((ctx, {"until": [until] if isinstance(until, str) else list(until),
                               "max_gen_toks": int(kw.get("max_gen_toks", 256))}))
        self.model_engine.progress = not disable_tqdm
        out = self.engine.generate_until(reqs)
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, res)
        return out


# ----------------------------------------------------------------------------------------------------------------
# task specs -> lm-eval YAML

LM_EVAL_METRICS = ("acc", "acc_norm", "perplexity", "exact_match")  # of our metrics, those lm-eval computes too


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
    for name in registry.expand(tasks):
        spec = registry.TASKS[name]
        if spec.lm_eval is None:
            exportable = ", ".join(n for n, s in sorted(registry.TASKS.items()) if s.lm_eval is not None)
            raise KeyError(f"cannot export {name!r} to lm-eval YAML (no template); exportable: {exportable}")
        _write(out / f"{PREFIX}{name}.yaml", task_yaml(spec, spec.build(d), spec.local_file(d), out))
        names.append(PREFIX + name)
    return names


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
    lines = [f"task: {name}", "dataset_path: json", f"dataset_kwargs: {{data_files: {{{files}}}}}",
             f"output_type: {task.output_type}", "test_split: test",
             # one split: shots come from it, lm-eval removing the evaluated document
             f"fewshot_split: {'test' if same_split else 'dev'}"]
    if task.sampler == "first_n":
        lines.append("fewshot_config: {sampler: first_n}")
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
    return lines + _metrics(*[m for m in task.metric_names if m in LM_EVAL_METRICS]) + ["metadata:", "  version: 1.0"]


def _generation(task: Any) -> list[str]:
    # lm-eval's generation settings and filters for greedy exact-match tasks (triviaqa.yaml)
    return [f"generation_kwargs: {{until: {json.dumps(task.until)}, max_gen_toks: {task.max_gen_toks}, do_sample: false}}",
            "filter_list:", "  - name: remove_whitespace", "    filter:", "      - function: remove_whitespace",
            "      - function: take_first"]


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jsonl(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def _metrics(*names: str) -> list[str]:
    out = ["metric_list:"]
    for m in names:
        agg = "perplexity" if m == "perplexity" else "mean"
        hib = "false" if m == "perplexity" else "true"
        out += [f"  - metric: {m}", f"    aggregation: {agg}", f"    higher_is_better: {hib}"]
        if m == "exact_match":
            out += ["    ignore_case: true", "    ignore_punctuation: true"]
    return out
