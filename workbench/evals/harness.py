"""lm-evaluation-harness both ways.

- `WorkbenchLM`: an lm-eval `LM` registered as "workbench" (on import of this module), so lm-eval's whole task
  zoo runs on workbench models with `RequestEngine` underneath::

      import workbench.evals.harness  # registers "workbench"
      lm_eval.simple_evaluate(model="workbench", model_args="pretrained=demo", tasks=["piqa"])

- `export_lm_eval_tasks`: our local tasks written as lm-eval task YAML over the same files, for cross-checking
  `workbench.evals.evaluate` against lm-eval (`TaskManager(include_path=out_dir)`). The YAMLs read the shared
  JSONL files directly with lm-eval's own prompt templates; HellaSwag (a text dump) and MMLU (CSV) are first
  converted to JSONL records in `out_dir`, and HellaSwag goes through lm-eval's own `process_docs`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its model registry only while it is empty: fill it first)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from workbench.evals.engine import RequestCache, RequestEngine
from workbench.evals.tasks import GROUPS, MMLU_SUBJECTS, _find_file, read_hellaswag_text, read_mmlu_csv, resolve_data_dir

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
        self.engine = RequestEngine(
            model,
            tokenizer,
            batch_size=bs or "auto",
            max_length=int(max_length) if max_length else None,
            cache=RequestCache(cache) if cache else None,
        )
        self._device = self.engine.device

    @property
    def tokenizer_name(self) -> str:
        return "gpt-neox-20b"

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args[:2]) for r in requests]
        self.engine.progress = not disable_tqdm
        out = self.engine.loglikelihood(args)
        for a, res in zip(args, out):
            self.cache_hook.add_partial("loglikelihood", a, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        self.engine.progress = not disable_tqdm
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
        self.engine.progress = not disable_tqdm
        out = self.engine.generate_until(reqs)
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, res)
        return out


# ----------------------------------------------------------------------------------------------------------------
# local tasks -> lm-eval YAML


def _yaml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _common(name: str, data: dict[str, Path], output_type: str = "multiple_choice", fewshot: str = "test") -> list[str]:
    files = ", ".join(f"{k}: {_yaml_str(str(v))}" for k, v in data.items())
    return [
        f"task: {PREFIX}{name}",
        "dataset_path: json",
        f"dataset_kwargs: {{data_files: {{{files}}}}}",
        f"output_type: {output_type}",
        "test_split: test",
        # the local data has one split: shots come from it, lm-eval removing the evaluated document
        f"fewshot_split: {fewshot}",
    ]


def _metrics(*names: str) -> list[str]:
    out = ["metric_list:"]
    for m in names:
        agg = "perplexity" if m == "perplexity" else "mean"
        hib = "false" if m == "perplexity" else "true"
        out += [f"  - metric: {m}", f"    aggregation: {agg}", f"    higher_is_better: {hib}"]
    return out


def export_lm_eval_tasks(
    tasks: list[str], out_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> list[str]:
    """Write lm-eval task YAMLs for our local tasks into `out_dir`.

    Args:
        tasks: names among piqa, arc_easy, arc_challenge, boolq, winogrande, lambada_openai, hellaswag, mmlu,
            mmlu_<subject>.
        out_dir: folder for the YAMLs (and converted HellaSwag/MMLU records); pass it to
            `lm_eval.tasks.TaskManager(include_path=out_dir)`.
        data_dir: the benchmark data (default as `evaluate`).

    Returns:
        The lm-eval task names written ("wb_" + our name), in order.

    Raises:
        KeyError: a task this exporter does not know.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = resolve_data_dir(data_dir)
    names: list[str] = []
    expanded = [n for t in tasks for n in (GROUPS.get(t) or [t])]
    for name in expanded:
        lines: list[str]
        if name == "piqa":
            f = _find_file(name, d, ["piqa/piqa_llmfoundry.jsonl"])
            # llm-foundry's query is "Question: {goal}\n"; lm-eval's template is "Question: {{goal}}\nAnswer:"
            lines = _common(name, {"test": f}) + [
                'doc_to_text: "{{query}}Answer:"', "doc_to_choice: choices", "doc_to_target: gold"
            ] + _metrics("acc", "acc_norm")
        elif name in ("arc_easy", "arc_challenge"):
            f = _find_file(name, d, [f"{name}/{name}_llmfoundry.jsonl"])
            lines = _common(name, {"test": f}) + [
                'doc_to_text: "{{query}}\\nAnswer:"', "doc_to_choice: choices", "doc_to_target: gold"
            ] + _metrics("acc", "acc_norm")
        elif name == "boolq":
            f = _find_file(name, d, ["boolq/boolq_llmfoundry.jsonl"])
            lines = _common(name, {"test": f}) + [
                'doc_to_text: "{{query[9:]}}\\nAnswer:"', 'doc_to_choice: ["no", "yes"]', "doc_to_target: gold"
            ] + _metrics("acc")
        elif name == "winogrande":
            f = _find_file(name, d, ["winogrande/winogrande_llmfoundry.jsonl"])
            # as lm-eval's winogrande: doc_to_text gives the gold index (an int: "multiple inputs"), the choices are
            # the contexts, the target the stripped text after the blank
            lines = _common(name, {"test": f}) + [
                'doc_to_text: "{{gold}}"', "doc_to_choice: context_options",
                'doc_to_target: "{{continuation.strip()}}"',
            ] + _metrics("acc")
        elif name == "lambada_openai":
            f = _find_file(name, d, ["lambada/lambada_test.jsonl"])
            # lm-eval's lambada_openai.yaml templates verbatim
            lines = _common(name, {"test": f}, output_type="loglikelihood") + [
                "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"",
                "doc_to_target: \"{{' '+text.split(' ')[-1]}}\"",
            ] + _metrics("perplexity", "acc")
        elif name == "hellaswag":
            f = _find_file(name, d, ["hellaswag/hellaswag_val_full.txt.bz2"])
            conv = out / "wb_hellaswag.jsonl"
            _jsonl(conv, read_hellaswag_text(f))
            (out / "wb_hellaswag_utils.py").write_text(
                "from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401  (lm-eval's own preprocessing)\n"
            )
            lines = _common(name, {"test": conv}) + [
                "process_docs: !function wb_hellaswag_utils.process_docs",
                'doc_to_text: "{{query}}"', "doc_to_choice: choices", 'doc_to_target: "{{label}}"',
            ] + _metrics("acc", "acc_norm")
        elif name.startswith("mmlu_") and name[5:] in MMLU_SUBJECTS:
            subject = name[5:]
            test = _find_file(name, d, [f"mmlu/test/{subject}_test.csv"])
            dev = _find_file(name, d, [f"mmlu/dev/{subject}_dev.csv"])
            conv_test, conv_dev = out / f"wb_{name}_test.jsonl", out / f"wb_{name}_dev.jsonl"
            _jsonl(conv_test, read_mmlu_csv(test))
            _jsonl(conv_dev, read_mmlu_csv(dev))
            desc = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            # lm-eval's mmlu/default/_default_template_yaml
            lines = _common(name, {"test": conv_test, "dev": conv_dev}, fewshot="dev") + [
                "fewshot_config: {sampler: first_n}",
                f"description: {_yaml_str(desc)}",
                'doc_to_text: "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\nC. {{choices[2]}}'
                '\\nD. {{choices[3]}}\\nAnswer:"',
                'doc_to_choice: ["A", "B", "C", "D"]', "doc_to_target: answer",
            ] + _metrics("acc")
        else:
            raise KeyError(
                f"cannot export {name!r} to lm-eval YAML; exportable: piqa, arc_easy, arc_challenge, boolq, winogrande, "
                "lambada_openai, hellaswag, mmlu, mmlu_<subject>"
            )
        lines += ["metadata:", "  version: 1.0"]
        _write(out / f"{PREFIX}{name}.yaml", lines)
        names.append(PREFIX + name)
    return names
