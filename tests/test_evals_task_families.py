"""Task families: one module each under workbench/evals/tasks/, found by the registry without a list to edit;
each family's lm-eval template builds exactly our requests; a new family is one file.

The hub is out of reach here: `datasets.load_dataset` serves a few made-up records in each hub dataset's
schema, so every family (also those without local files: openbookqa, sciq, triviaqa) is built, exported to
lm-eval YAML and read back by lm-eval's own request builder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import random
from pathlib import Path

import pytest

import workbench.evals.tasks as tasks_package
from tests.helpers import lm_eval_tasks
from workbench.evals.tasks import registry

datasets = pytest.importorskip("datasets")
lm_eval = pytest.importorskip("lm_eval")

GENERIC = {"__init__", "base", "data_dir", "hub", "readers", "registry", "spec"}
FAMILIES = {"piqa", "arc", "openbookqa", "sciq", "boolq", "winogrande", "lambada", "hellaswag", "mmlu", "triviaqa",
            "gsm8k", "perplexity"}
WORDS = "the a cat dog sat ran on under mat red blue big small house tree river stone why how what".split()


def _text(rnd: random.Random, n: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def _lettered(rnd: random.Random) -> dict:
    labels = list("ABCD")[: rnd.choice([3, 4])]
    return {"answerKey": rnd.choice(labels), "choices": {"text": [_text(rnd, 2) for _ in labels], "label": labels}}


def _hub_row(path: str, rnd: random.Random) -> dict:
    """A made-up record in the schema of the hub dataset `path` (what the family's converter reads)."""
    if path == "allenai/ai2_arc":
        return {"question": _text(rnd, 6), **_lettered(rnd)}
    if path == "allenai/openbookqa":
        return {"question_stem": _text(rnd, 6), **_lettered(rnd)}
    if path == "baber/piqa":
        return {"goal": _text(rnd, 5), "sol1": _text(rnd, 4), "sol2": _text(rnd, 4), "label": rnd.randint(0, 1)}
    if path == "aps/super_glue":
        return {"passage": _text(rnd, 12), "question": _text(rnd, 5), "label": rnd.randint(0, 1)}
    if path == "allenai/sciq":
        return {"support": " " + _text(rnd, 10), "question": _text(rnd, 5), "correct_answer": _text(rnd, 1),
                **{f"distractor{i}": _text(rnd, 1) for i in (1, 2, 3)}}
    if path == "allenai/winogrande":
        return {"sentence": _text(rnd, 4) + " _ " + _text(rnd, 4) + ".", "option1": "Ann", "option2": "Bob",
                "answer": str(rnd.randint(1, 2))}
    if path == "Rowan/hellaswag":
        return {"activity_label": "Doing things", "ctx_a": _text(rnd, 6) + " [title] " + _text(rnd, 3) + ".",
                "ctx_b": _text(rnd, 2), "endings": [_text(rnd, 3) for _ in range(4)], "label": str(rnd.randint(0, 3))}
    if path == "EleutherAI/lambada_openai":
        return {"text": _text(rnd, 15)}
    if path == "cais/mmlu":
        return {"question": _text(rnd, 7) + "?", "choices": [_text(rnd, 2) for _ in range(4)], "answer": rnd.randint(0, 3)}
    if path == "openai/gsm8k":
        return {"question": _text(rnd, 8) + "?", "answer": _text(rnd, 5) + f"\n#### {rnd.randint(1, 99)}"}
    if path == "mandarjoshi/trivia_qa":
        return {"question": _text(rnd, 6), "answer": {"aliases": [_text(rnd, 1), _text(rnd, 2)]}}
    raise KeyError(f"no made-up records for hub dataset {path!r}: add its schema to _hub_row")


@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` serving made-up records (8 per split); lm-eval's own JSON loading passes through."""
    real = datasets.load_dataset

    def load_dataset(path, name=None, split=None, **kwargs):
        if path == "json":
            return real(path, name, split=split, **kwargs)
        rnd = random.Random(f"{path}/{name}/{split}")
        return [_hub_row(path, rnd) for _ in range(8)]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no reachability probe


def family_specs() -> list:
    """One spec per family module (the first; MMLU's first subject), found through the registry; perplexity
    tasks (whole texts, from an installed corpus, no shots) are compared with lm-eval in
    tests/test_evals_lm_eval_schema.py instead."""
    specs = [importlib.import_module(m).SPECS[0] for m in registry.family_modules()]
    return [s for s in specs if s.task.output_type != "loglikelihood_rolling"]


def test_every_family_module_is_registered():
    files = {p.stem for p in Path(tasks_package.__file__).parent.glob("*.py")} - GENERIC
    found = {m.rsplit(".", 1)[1] for m in registry.family_modules()}
    assert found == files  # every module that is not generic machinery declares a family, and is found
    assert FAMILIES <= found
    specs = [s for m in registry.family_modules() for s in importlib.import_module(m).SPECS]
    assert {s.name for s in specs} == set(registry.TASKS)  # every registered task comes from a family module
    assert all(registry.TASKS[s.name] is s and s.lm_eval is not None for s in specs)
    mmlu = [s.name for s in specs if s.groups[:1] == ("mmlu",)]
    assert set(registry.GROUPS) == {"mmlu", "mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"}
    assert registry.GROUPS["mmlu"] == mmlu and len(mmlu) == 57
    assert sorted(t for g in registry.subgroups("mmlu") for t in registry.GROUPS[g]) == sorted(mmlu)


def _ours(task, shots: int) -> list[list[tuple]]:
    rnd = random.Random(1234)
    return [task.requests(d, task.fewshot_prefix(task.sample_shots(d, shots, rnd))) for d in task.docs()]


def _theirs(lm_task, shots: int) -> dict[int, list[tuple]]:
    lm_task.set_config(key="num_fewshot", value=shots)  # as simple_evaluate does
    lm_task.set_fewshot_seed(seed=1234)
    lm_task.build_all_requests()
    by_doc: dict[int, list] = {}
    for inst in sorted(lm_task.instances, key=lambda i: (i.doc_id, i.idx)):
        ctx, rest = inst.arguments[:2]
        by_doc.setdefault(inst.doc_id, []).append((ctx, rest["until"] if isinstance(rest, dict) else rest))
    return by_doc


@pytest.mark.parametrize("shots", [0, 2])
def test_each_familys_lm_eval_template_builds_our_requests(fake_hub, tmp_path, shots):
    from workbench.evals.harness import export_lm_eval_tasks

    specs = family_specs()
    names = [s.name for s in specs]
    empty = tmp_path / "no_local_data"
    empty.mkdir()
    exported = export_lm_eval_tasks(names, tmp_path / "yaml", data_dir=empty)
    assert exported == ["wb_" + n for n in names]
    theirs = lm_eval_tasks(tmp_path / "yaml", exported)
    for spec in specs:
        task = spec.build(empty)
        ours = [[(c, x["until"] if isinstance(x, dict) else x) for c, x in reqs] for reqs in _ours(task, shots)]
        by_doc = _theirs(theirs["wb_" + spec.name], shots)
        assert len(by_doc) == len(ours) == 8, spec.name
        for doc_id, reqs in by_doc.items():
            # (ours may add requests after lm-eval's: GPT-3's unconditional "Answer:" ones)
            assert ours[doc_id][: len(reqs)] == reqs, f"{spec.name} doc {doc_id}"


NEW_FAMILY = '''
"""Yes/no riddles: a made-up task family, declared in one file."""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.readers import jsonl_reader
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec

SPECS = [
    TaskSpec(
        "riddles", MultipleChoiceTask,
        dict(query=lambda d: "Riddle: " + d["riddle"] + "\\nAnswer:", choices=lambda d: ["no", "yes"],
             gold=lambda d: int(d["yes"])),
        files=("riddles/riddles.jsonl",), reader=jsonl_reader("riddle", "yes"),
        lm_eval=LmEvalTemplate(doc_to_text="Riddle: {{riddle}}\\nAnswer:", doc_to_choice=["no", "yes"],
                               doc_to_target="{{yes|int}}"),
    )
]
'''


def test_a_new_family_is_one_file(tmp_path, monkeypatch, model_dir):
    import workbench

    from workbench.evals import evaluate
    from workbench.evals.harness import export_lm_eval_tasks

    (tmp_path / "riddles.py").write_text(NEW_FAMILY)
    spec = importlib.util.spec_from_file_location("riddles", tmp_path / "riddles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    (data / "riddles").mkdir(parents=True)
    rows = [{"riddle": f"is {n} even?", "yes": n % 2 == 0} for n in range(6)]
    (data / "riddles" / "riddles.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))  # undone after the test
    registry.register(*module.SPECS)  # what the registry does with each module of the tasks package

    assert "riddles" in registry.known_tasks()
    res = evaluate(workbench.load(str(model_dir)), "riddles", num_fewshot=1, data_dir=data, progress=False)
    assert res.counts["riddles"]["n_docs"] == 6 and 0 <= res["riddles"]["acc"] <= 1
    (name,) = export_lm_eval_tasks(["riddles"], tmp_path / "yaml", data)
    lm_task = lm_eval_tasks(tmp_path / "yaml", [name])[name]
    task = registry.get_tasks("riddles", data)[0]
    assert [[(c, x) for c, x in reqs] for reqs in _ours(task, 1)] == list(_theirs(lm_task, 1).values())
