"""workbench.evals agrees with lm-evaluation-harness on the same model and the same local data.

lm-eval side: its hf backend (transformers' GPT-NeoX) over task YAMLs written by `export_lm_eval_tasks` that point at
the files of ../shared/data with lm-eval's own prompt templates. Workbench side: `workbench.evals.evaluate` on the
workbench model loaded from the same directory. Compared per document: the request strings (prompts, few-shot
examples, delimiters), log-likelihoods (within 1e-4), is-greedy flags, acc and acc_norm (identical).

Model: the embedded demo model when `workbench/demo/config.json` exists, else a tiny random GPT-NeoX (2 layers,
hidden 64) with the real GPT-NeoX-20B tokenizer.
"""

from __future__ import annotations

import os
import logging
import random
from pathlib import Path

import pytest

from tests.helpers import lm_eval_tasks

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

LIMIT = int(os.environ.get("WORKBENCH_AGREEMENT_LIMIT", "200"))  # >= 200 for the acceptance run
ZERO_SHOT = ["piqa", "arc_easy", "winogrande", "lambada_openai", "hellaswag"]
# Few-shot: lm-eval's lambada_openai has no few-shot split. Our local files have one split each, so shots come from
# it with the evaluated document removed (lm-eval's rule when the few-shot split is the evaluation split).
# The 5-shot *prompts* of every task are checked against lm-eval's own request builder (cheap, no model); the 5-shot
# *numbers* on winogrande only, to keep the CPU time of this file bounded (lm-eval's hf backend runs the output
# head and a log-softmax over the 50k vocabulary at every position of every ~700-token 5-shot prompt).
FIVE_SHOT_PROMPTS = ["piqa", "arc_easy", "winogrande", "hellaswag", "mmlu_anatomy"]
FIVE_SHOT_NUMBERS = ["winogrande"]


@pytest.fixture(scope="module")
def data_dir(shared_data) -> Path:
    d = shared_data / "evals"
    if not d.is_dir():
        pytest.skip(f"benchmark data {d} is absent")
    return d


@pytest.fixture(scope="module")
def yaml_dir(tmp_path_factory, data_dir) -> Path:
    from workbench.evals.harness import export_lm_eval_tasks

    out = tmp_path_factory.mktemp("lm_eval_tasks")
    export_lm_eval_tasks(sorted(set(ZERO_SHOT) | set(FIVE_SHOT_PROMPTS)), out, data_dir)
    return out


def _lm_eval(model: str, model_args: str, tasks: list[str], yaml_dir: Path, shots: int, limit: int) -> dict:
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=["wb_" + t for t in tasks], num_fewshot=shots, limit=limit,
        task_manager=TaskManager(include_path=str(yaml_dir), include_defaults=False), log_samples=True, device="cpu", batch_size=8,
        bootstrap_iters=0,
    )


def _our_requests(task, docs, shots: int, seed: int = 1234) -> list[list[tuple[str, str]]]:
    rnd = random.Random(seed)
    return [task.requests(d, task.fewshot_prefix(task.sample_shots(d, shots, rnd))) for d in docs]


def _compare(ours, theirs: dict, tasks: list[str], shots: int, data_dir: Path) -> None:
    from workbench.evals.tasks import get_tasks

    for name, task in zip(tasks, get_tasks(tasks, data_dir)):
        samples = sorted(theirs["samples"]["wb_" + name], key=lambda s: int(s["doc_id"]))
        records = ours.samples[name]
        assert len(samples) == len(records) == LIMIT, name
        # identical prompts: contexts, continuations, few-shot examples and delimiters
        reqs = _our_requests(task, task.docs()[:LIMIT], shots)
        # (ours may add requests after lm-eval's: GPT-3's unconditional "Answer:" ones for ARC)
        for s, r in zip(samples, reqs):
            n = len(s["arguments"])
            assert [tuple(a[:2]) for a in s["arguments"]] == r[:n], f"{name} doc {s['doc_id']}: requests differ"
        for s, rec in zip(samples, records):
            lls = [float(x[0]) for x in s["filtered_resps"]]
            greedy = [bool(x[1]) for x in s["filtered_resps"]]
            n = len(lls)
            # 1e-4, or float32's accumulated rounding on a long continuation (a 178-token PIQA answer sums to
            # -690.56: 1e-4 there is a relative 1.4e-7, below what two float32 kernel orders can promise)
            assert rec["loglikelihoods"][:n] == pytest.approx(lls, abs=1e-4, rel=5e-7), f"{name} doc {s['doc_id']}"
            assert rec["is_greedy"][:n] == greedy, f"{name} doc {s['doc_id']}"
            for metric in ("acc", "acc_norm"):
                if metric in s:
                    assert rec[metric] == float(s[metric]), f"{name} doc {s['doc_id']} {metric}"
        res = theirs["results"]["wb_" + name]
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in res:
                assert ours.metrics[name][metric] == pytest.approx(res[f"{metric},none"], abs=1e-12), (name, metric)
        if name == "lambada_openai":
            assert ours.metrics[name]["perplexity"] == pytest.approx(res["perplexity,none"], rel=1e-4)


def test_fewshot_prompts_equal_lm_eval_requests(data_dir, yaml_dir):
    """Every request string (few-shot sampling with seed 1234, delimiters, descriptions) equals lm-eval's."""
    from workbench.evals.tasks import get_tasks

    theirs = lm_eval_tasks(yaml_dir, ["wb_" + t for t in FIVE_SHOT_PROMPTS])
    for name, task in zip(FIVE_SHOT_PROMPTS, get_tasks(FIVE_SHOT_PROMPTS, data_dir)):
        lm_task = theirs["wb_" + name]
        lm_task.set_config(key="num_fewshot", value=5)  # as simple_evaluate does
        lm_task.set_fewshot_seed(seed=1234)
        lm_task.build_all_requests(limit=LIMIT)
        by_doc: dict[int, list] = {}
        for inst in sorted(lm_task.instances, key=lambda i: (i.doc_id, i.idx)):
            by_doc.setdefault(inst.doc_id, []).append(tuple(inst.arguments[:2]))
        ours = _our_requests(task, task.docs()[:LIMIT], 5)
        assert len(by_doc) == len(ours) == min(LIMIT, len(task.docs()))
        for doc_id, reqs in by_doc.items():
            assert ours[doc_id][: len(reqs)] == reqs, f"{name} doc {doc_id}"


@pytest.mark.slow
@pytest.mark.parametrize("shots,tasks", [(0, ZERO_SHOT), (5, FIVE_SHOT_NUMBERS)], ids=["0shot", "5shot"])
def test_agrees_with_lm_eval_hf_backend(model_dir, data_dir, yaml_dir, shots, tasks):
    import workbench
    from workbench.evals import evaluate

    theirs = _lm_eval("hf", f"pretrained={model_dir},dtype=float32", tasks, yaml_dir, shots, LIMIT)
    model = workbench.load(str(model_dir), dtype="float32")
    ours = evaluate(model, tasks, num_fewshot=shots, limit=LIMIT, data_dir=data_dir, progress=False)
    _compare(ours, theirs, tasks, shots, data_dir)


@pytest.mark.slow
def test_workbench_backend_in_lm_eval_equals_hf_backend(model_dir, yaml_dir):
    import workbench.evals.harness  # noqa: F401  (registers "workbench")

    tasks, limit = ["arc_easy", "mmlu_anatomy", "lambada_openai"], 20
    hf = _lm_eval("hf", f"pretrained={model_dir},dtype=float32", tasks, yaml_dir, 1, limit)
    wb = _lm_eval("workbench", f"pretrained={model_dir},dtype=float32", tasks, yaml_dir, 1, limit)
    for t in tasks:
        a = sorted(hf["samples"]["wb_" + t], key=lambda s: int(s["doc_id"]))
        b = sorted(wb["samples"]["wb_" + t], key=lambda s: int(s["doc_id"]))
        assert [s["arguments"] for s in a] == [s["arguments"] for s in b]
        for x, y in zip(a, b):
            assert [float(r[0]) for r in x["filtered_resps"]] == pytest.approx(
                [float(r[0]) for r in y["filtered_resps"]], abs=1e-4
            )
            assert [bool(r[1]) for r in x["filtered_resps"]] == [bool(r[1]) for r in y["filtered_resps"]]
        for key, value in hf["results"]["wb_" + t].items():
            if key.startswith(("acc,", "acc_norm,")):
                assert wb["results"]["wb_" + t][key] == value, (t, key)
