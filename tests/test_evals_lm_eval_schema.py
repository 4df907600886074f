"""The results file of `workbench.evals.evaluate` is lm-eval's: the same run through lm-eval's `hf` backend (the
demo model, the same local files, lm-eval's own task configs) gives the same results dict (values, standard
errors, n-samples, n-shot, higher_is_better, versions, group_subtasks) and the same table from lm-eval's own
`make_table`, for every built-in task with local data, a perplexity task, the MMLU group with its categories and a
GSM8K generation task with lm-eval's own gsm8k.yaml filters.

lm-eval's side runs the YAMLs `export_lm_eval_tasks` writes (tasks named "wb_<name>"; the prefix is removed
before comparing) and, for GSM8K, lm-eval's gsm8k.yaml itself pointed at a local JSONL file.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

from tests.test_evals_agreement import data_dir  # noqa: E402, F401  (the benchmark-data fixture)

LIMIT = 2
BOOTSTRAP = 200  # both sides; lm-eval's resampling is reproduced draw for draw
LOCAL_TASKS = ["piqa", "arc_easy", "arc_challenge", "winogrande", "lambada_openai", "hellaswag", "boolq",
               "kjv_heldout", "mmlu"]


def _unprefix(obj):
    """lm-eval's output with the exported tasks' "wb_" prefix removed from every name."""
    if isinstance(obj, dict):
        return {_unprefix(k): _unprefix(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unprefix(v) for v in obj]
    return obj.removeprefix("wb_") if isinstance(obj, str) else obj


def _run_lm_eval(model_dir: Path, include: Path, tasks: list[str], shots: int | None, limit: int) -> dict:
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks, num_fewshot=shots, limit=limit,
        task_manager=TaskManager(include_path=str(include), include_defaults=False), device="cpu", batch_size=8,
        bootstrap_iters=BOOTSTRAP, log_samples=True,
    )
    return json.loads(json.dumps(out, default=str))  # as lm-eval writes it to disk


def flat(x) -> list[float]:
    """Every number (bools as 0/1) in a nested list or tuple, in order."""
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in flat(item)]
    return [float(x)]


def _compare_samples(res, theirs: dict, task: str) -> None:
    """Our sample log lines against lm-eval's: prompts, targets, responses (float32 rounding), metric values."""
    from workbench.evals.schema import sample_records

    mine = {(s["doc_id"], s["filter"]): s for s in sample_records(res, task)}
    lines = theirs["samples"]["wb_" + task]
    assert len(mine) == len(lines) > 0
    for s in lines:
        m = mine[(s["doc_id"], s["filter"])]
        assert [list(a.values()) for a in m["arguments"].values()] == [list(a) for a in s["arguments"]], task
        assert m["target"] == str(s["target"]) and m["metrics"] == s["metrics"], task
        assert flat(m["filtered_resps"]) == pytest.approx(flat(s["filtered_resps"]), rel=1e-5, abs=1e-4), task
        for metric in s["metrics"]:
            assert flat(m[metric]) == pytest.approx(flat(s[metric]), rel=1e-5, abs=1e-4), (task, metric)


def _close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a == pytest.approx(b, rel=2e-5, abs=1e-9)
    return a == b


def _compare(ours: dict, theirs: dict) -> None:
    theirs = _unprefix({k: v for k, v in theirs.items() if k != "samples"})
    assert set(ours["results"]) == set(theirs["results"])
    for task, row in theirs["results"].items():
        mine = ours["results"][task]
        assert set(mine) == set(row), task
        for key, value in row.items():
            assert _close(mine[key], value), (task, key, mine[key], value)
    assert set(ours.get("groups", {})) == set(theirs.get("groups", {}))
    for key in ("n-samples", "n-shot", "higher_is_better", "versions", "group_subtasks"):
        assert ours[key] == theirs[key], key
    # lm-eval's own table maker reads our file and prints lm-eval's table (numbers to float32 rounding)
    from lm_eval.utils import make_table

    for column in ["results"] + (["groups"] if "groups" in theirs else []):
        a, b = _cells(make_table(ours, column)), _cells(make_table(theirs, column))
        assert len(a) == len(b) and len(a) > 2
        for ra, rb in zip(a, b):
            assert len(ra) == len(rb)
            for x, y in zip(ra, rb):
                assert x == y or _close(_number(x), _number(y)), (column, ra, rb)


def _cells(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()]


def _number(cell: str):
    try:
        return float(cell)
    except ValueError:
        return cell


@pytest.mark.slow
def test_results_file_equals_lm_eval_hf_backend(tmp_path, model_dir, data_dir):
    """Every built-in task with local data, a perplexity task and the MMLU group (four categories) at 0 shots."""
    import workbench
    from workbench.evals import EvalResults, evaluate
    from workbench.evals.harness import export_lm_eval_tasks

    export_lm_eval_tasks(LOCAL_TASKS, tmp_path / "yaml", data_dir)
    theirs = _run_lm_eval(model_dir, tmp_path / "yaml", ["wb_" + t for t in LOCAL_TASKS], 0, LIMIT)
    model = workbench.load(str(model_dir), dtype="float32")
    res = evaluate(model, LOCAL_TASKS, limit=LIMIT, data_dir=data_dir, progress=False, bootstrap_iters=BOOTSTRAP)
    paths = res.write(tmp_path / "out")
    ours = json.loads(paths["results"].read_text())
    _compare(ours, theirs)
    for task in ("piqa", "winogrande", "lambada_openai", "kjv_heldout", "mmlu_anatomy"):
        _compare_samples(res, theirs, task)
    assert ours["groups"]["mmlu"]["alias"] == "mmlu" and ours["group_subtasks"]["mmlu"] == [
        "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"]
    # the workbench's own block, and the file reads back
    assert ours["workbench"]["config"]["engine_stats"]["computed"] > 0
    back = EvalResults.from_json(paths["results"])
    assert back.metrics == res.metrics and back.stderr == res.stderr and back.group_subtasks == res.group_subtasks


def gsm8k_records(n: int, seed: int) -> list[dict]:
    """GSM8K-shaped records (openai/gsm8k's `{question, answer}` with a worked answer ending "#### n")."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rnd.randint(2, 40), rnd.randint(2, 40)
        out.append({"question": f"Ann has {a} apples and buys {b} more. How many apples does she have?",
                    "answer": f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
    return out


@pytest.fixture(scope="module")
def gsm8k_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gsm8k")
    (d / "gsm8k").mkdir()
    for split, n, seed in [("test", 8, 0), ("train", 8, 1)]:
        (d / "gsm8k" / f"gsm8k_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm8k_records(n, seed)))
    return d


def lm_eval_gsm8k_yaml(out: Path, data: Path) -> None:
    """lm-eval's own gsm8k.yaml, its dataset replaced by the local files (everything else as shipped)."""
    import lm_eval.tasks

    src = (Path(lm_eval.tasks.__file__).parent / "gsm8k" / "gsm8k.yaml").read_text()
    files = f'{{data_files: {{train: "{data}/gsm8k/gsm8k_train.jsonl", test: "{data}/gsm8k/gsm8k_test.jsonl"}}}}'
    src = re.sub(r"^dataset_path: .*$", "dataset_path: json", src, flags=re.M)
    src = re.sub(r"^dataset_name: .*$", f"dataset_kwargs: {files}", src, flags=re.M)
    src = re.sub(r"^task: gsm8k$", "task: wb_gsm8k\ntask_alias: gsm8k", src, flags=re.M)
    src = re.sub(r"^tag:\n  - math_word_problems\n", "", src, flags=re.M)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gsm8k.yaml").write_text(src)


@pytest.mark.slow
def test_gsm8k_filters_equal_lm_eval(tmp_path, model_dir, gsm8k_dir):
    """GSM8K with lm-eval's gsm8k.yaml (strict-match and flexible-extract filters, 2 shots): the same
    generations, filtered answers, per-filter exact match and results file."""
    import workbench
    from workbench.evals import evaluate
    from workbench.evals.schema import sample_records

    lm_eval_gsm8k_yaml(tmp_path / "yaml", gsm8k_dir)
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["wb_gsm8k"], num_fewshot=2, limit=4,
        task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False), device="cpu",
        batch_size=4, bootstrap_iters=BOOTSTRAP, log_samples=True,
    )
    samples = theirs.pop("samples")["wb_gsm8k"]
    model = workbench.load(str(model_dir), dtype="float32")
    res = evaluate(model, "gsm8k", num_fewshot=2, limit=4, data_dir=gsm8k_dir, progress=False,
                   bootstrap_iters=BOOTSTRAP)
    ours = res.to_dict()
    assert set(ours["results"]["gsm8k"]) >= {"exact_match,strict-match", "exact_match,flexible-extract"}
    _compare(ours, json.loads(json.dumps(theirs, default=str)))
    mine = {(s["doc_id"], s["filter"]): s for s in sample_records(res, "gsm8k")}
    assert len(mine) == len(samples) == 8
    for s in samples:
        m = mine[(s["doc_id"], s["filter"])]
        assert [list(a) for a in s["arguments"]] == [[v for v in m["arguments"]["gen_args_0"].values()]]
        assert m["resps"] == s["resps"] and m["filtered_resps"] == s["filtered_resps"]
        assert m["exact_match"] == s["exact_match"] and m["target"] == s["target"]
        assert m["doc_hash"] == s["doc_hash"] and m["prompt_hash"] == s["prompt_hash"]


@pytest.mark.slow
def test_triviaqa_raw_layout_equals_lm_eval(tmp_path, model_dir):
    """TriviaQA records in lm-eval's raw layout (`answer: {aliases, value}`), scored by lm-eval's own triviaqa
    yaml (remove_whitespace filter, exact match ignoring case and punctuation) and by the workbench: the same file.
    Half the documents accept the model's own greedy answer (in other case, with punctuation), so both sides
    score matches and misses."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    import workbench
    from workbench.evals import evaluate

    questions = ["Who said let there be light", "What did the LORD make on the first day", "Who was the son of Abraham",
                 "Where did Moses lead the people", "What is the name of the garden", "Who built the ark"]
    data = tmp_path / "data" / "triviaqa"
    data.mkdir(parents=True)

    def write(aliases: list[list[str]]) -> None:
        rows = [{"question": q, "answer": {"aliases": a, "value": a[0]}} for q, a in zip(questions, aliases)]
        (data / "triviaqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    model = workbench.load(str(model_dir), dtype="float32")
    write([["nothing like it"]] * len(questions))
    first = evaluate(model, "triviaqa", data_dir=data.parent, progress=False, bootstrap_iters=BOOTSTRAP)
    gens = [rec["generation"].strip() for rec in first.samples["triviaqa"]]
    write([[g.upper() + "!", "nothing"] if i % 2 == 0 else ["nothing"] for i, g in enumerate(gens)])
    res = evaluate(model, "triviaqa", data_dir=data.parent, progress=False, bootstrap_iters=BOOTSTRAP)
    assert 0 < res["triviaqa"]["exact_match"] < 1

    src = (Path(lm_eval.tasks.__file__).parent / "triviaqa" / "default.yaml").read_text()
    src = re.sub(r"^dataset_path: .*$", "dataset_path: json", src, flags=re.M)
    src = re.sub(r"^dataset_name: .*$", f'dataset_kwargs: {{data_files: {{validation: "{data}/triviaqa.jsonl"}}}}',
                 src, flags=re.M)
    src = re.sub(r"^training_split: .*\n", "", src, flags=re.M)
    src = re.sub(r"^task: triviaqa$", "task: wb_triviaqa\ntask_alias: triviaqa", src, flags=re.M)
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "triviaqa.yaml").write_text(src)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["wb_triviaqa"], num_fewshot=0,
        task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False), device="cpu",
        batch_size=4, bootstrap_iters=BOOTSTRAP,
    )
    _compare(res.to_dict(), json.loads(json.dumps(theirs, default=str)))
