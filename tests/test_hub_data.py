"""Tasks fall back to the datasets hub when their local files are absent, and build the same prompts from it.

The hub is out of reach here, so `datasets.load_dataset` is replaced by a function that serves records in the
hub's schema, made from the local files (the inverse of each converter); the prompts built from them must equal
those built from the local files. Without the hub or a cached copy, the error names both places.
"""

from __future__ import annotations

import pytest

datasets = pytest.importorskip("datasets")

from workbench.evals.hub_data import FEWSHOT_SPLITS, HUB_DATASETS  # noqa: E402
from workbench.evals.tasks import get_tasks  # noqa: E402

LETTERS = "ABCDE"


def to_hub(task: str, rec: dict) -> dict:
    """A local record written back in the hub dataset's schema."""
    if task.startswith("arc_"):
        labels = list(LETTERS[: len(rec["choices"])])
        return {"question": rec["query"].removeprefix("Question: "), "answerKey": labels[rec["gold"]],
                "choices": {"text": rec["choices"], "label": labels}}  # fmt: skip
    if task == "piqa":
        return {"goal": rec["query"].removeprefix("Question: ").removesuffix("\n"), "sol1": rec["choices"][0],
                "sol2": rec["choices"][1], "label": rec["gold"]}  # fmt: skip
    if task == "boolq":
        passage, question = rec["query"].removeprefix("Passage: ").rsplit("\nQuestion: ", 1)
        return {"passage": passage, "question": question.removesuffix("?"), "label": rec["gold"]}
    if task == "hellaswag":
        return {**rec, "label": str(rec["label"])}  # the hub stores the label as a string
    return dict(rec)  # lambada {text}; MMLU {question, choices, answer} as on the hub


@pytest.mark.parametrize("task", ["arc_easy", "piqa", "boolq", "hellaswag", "lambada_openai", "mmlu_anatomy"])
def test_hub_copy_gives_the_same_prompts(task, shared_data, tmp_path, monkeypatch):
    local = get_tasks(task, shared_data / "evals")[0]
    local_docs = local.docs()[:40]
    calls = []

    shot_docs = local.fewshot_pool()[0] if task.startswith("mmlu") else local.docs()[40:60]  # "train" / "dev"

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        records = local_docs if split == "test" or split == HUB_DATASETS.get(task, ("",) * 3)[2] else shot_docs
        return [to_hub(task, r) for r in records]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no reachability probe
    hub = get_tasks(task, tmp_path)[0]  # an empty data directory: nothing local
    if task.startswith("mmlu"):
        assert calls == [("cais/mmlu", "anatomy", "test"), ("cais/mmlu", "anatomy", "dev")]
    else:  # the evaluated split, then lm-eval's few-shot split (lambada has none: shots from the same split)
        assert calls == [HUB_DATASETS[task][:3]] + ([HUB_DATASETS[task][:2] + (FEWSHOT_SPLITS[task],)]
                                                  if task in FEWSHOT_SPLITS else [])  # fmt: skip
    pool, same_split = hub.fewshot_pool()
    assert same_split == (task == "lambada_openai")
    if not same_split:
        assert len(pool) == len(shot_docs)
    prefix = hub.fewshot_prefix(pool[:2])
    assert prefix == local.fewshot_prefix((local_docs if same_split else shot_docs)[:2])
    for mine, theirs in zip(hub.docs(), local_docs):
        assert hub.requests(mine, prefix) == local.requests(theirs, prefix)


def test_winogrande_converter_follows_lm_eval_partial_scoring():
    convert = HUB_DATASETS["winogrande"][3]
    rec = {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
           "option1": "Sarah", "option2": "Maria", "answer": "2"}  # fmt: skip
    assert convert(rec) == {
        "context_options": ["Sarah was a much better surgeon than Maria so Sarah",
                            "Sarah was a much better surgeon than Maria so Maria"],
        "continuation": "always got the harder cases.",
        "gold": 1,
    }  # fmt: skip


def test_no_local_file_and_no_hub_copy_names_both(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    with pytest.raises(FileNotFoundError) as info:
        get_tasks("arc_easy", tmp_path)
    message = str(info.value)
    assert "looked for" in message and "arc_easy_llmfoundry.jsonl" in message
    assert "allenai/ai2_arc (ARC-Easy), split 'test'" in message
