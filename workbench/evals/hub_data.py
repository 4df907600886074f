"""Benchmark documents from the Hugging Face datasets hub, for tasks whose local files are absent.

Each task maps to the hub dataset lm-evaluation-harness reads, loaded with `datasets.load_dataset` (its cache
and `HF_HUB_OFFLINE` apply), and every hub record is converted to the record format of the local files
(`../shared/data/SOURCES.md`), so a task builds the very same prompts from either source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.hub import hub_reachable

Record = dict[str, Any]


def _lettered(question: str, choices: dict, answer_key: str) -> Record:
    """ARC / OpenBookQA: `choices = {text: [...], label: ["A", ...]}` and the gold label."""
    return {"query": question, "choices": list(choices["text"]), "gold": list(choices["label"]).index(answer_key)}


def _winogrande(r: Record) -> Record:
    # lm-eval's partial scoring: the blank filled by each option is the context, the rest is the continuation
    blank = r["sentence"].index("_")
    return {
        "context_options": [r["sentence"][:blank] + r[f"option{i}"] for i in (1, 2)],
        "continuation": r["sentence"][blank + 1 :].strip(),
        "gold": int(r["answer"]) - 1,
    }


# task -> (hub dataset, config, split of the evaluated documents, hub record -> local record)
HUB_DATASETS: dict[str, tuple[str, str | None, str, Callable[[Record], Record]]] = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test",
                 lambda r: _lettered("Question: " + r["question"], r["choices"], r["answerKey"])),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test",
                      lambda r: _lettered("Question: " + r["question"], r["choices"], r["answerKey"])),
    "openbookqa": ("allenai/openbookqa", "main", "test",
                   lambda r: _lettered(r["question_stem"], r["choices"], r["answerKey"])),
    "piqa": ("baber/piqa", None, "validation",
             lambda r: {"query": f"Question: {r['goal']}\n", "choices": [r["sol1"], r["sol2"]], "gold": int(r["label"])}),
    "boolq": ("aps/super_glue", "boolq", "validation",
              lambda r: {"query": f"Passage: {r['passage']}\nQuestion: {r['question']}?", "choices": ["no", "yes"],
                         "gold": int(r["label"])}),
    "sciq": ("allenai/sciq", None, "test",
             lambda r: {"query": f"{r['support'].lstrip()}\nQuestion: {r['question']}\nAnswer:",
                        "choices": [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]],
                        "gold": 3}),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation", _winogrande),
    "hellaswag": ("Rowan/hellaswag", None, "validation",
                  lambda r: {k: r[k] for k in ("activity_label", "ctx_a", "ctx_b", "endings")} | {"label": int(r["label"])}),
    "lambada_openai": ("EleutherAI/lambada_openai", "default", "test", lambda r: {"text": r["text"]}),
    "triviaqa": ("mandarjoshi/trivia_qa", "rc.nocontext", "validation",
                 lambda r: {"question": r["question"], "answers": list(r["answer"]["aliases"])}),
}  # fmt: skip
MMLU_HUB = "cais/mmlu"  # config = subject; splits "test" and "dev" (the five few-shot examples)
# lm-eval draws few-shot examples from the training split where a dataset has one (lambada has none: same split)
FEWSHOT_SPLITS = {task: "train" for task in HUB_DATASETS if task != "lambada_openai"}


def hub_source(task: str) -> tuple[str, str | None, str, Callable[[Record], Record]] | None:
    """Where `task` lives on the datasets hub, or None for a task without a hub source."""
    if task.startswith("mmlu_"):
        return MMLU_HUB, task.removeprefix("mmlu_"), "test", lambda r: {
            "question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])}  # fmt: skip
    return HUB_DATASETS.get(task)


def load_hub_records(task: str, split: str | None = None) -> list[Record]:
    """The documents of `task` (or of `split`, e.g. MMLU's "dev") from the datasets hub, as local records.

    Raises:
        KeyError: the task has no hub source.
        FileNotFoundError: the hub can't be reached and `datasets` has no cached copy (the message says so).
    """
    source = hub_source(task)
    if source is None:
        raise KeyError(f"task {task!r} has no datasets-hub source")
    path, config, default_split, convert = source
    split = split or default_split
    try:
        import datasets

        offline = datasets.config.HF_HUB_OFFLINE
        # an unreachable hub: answer from the datasets cache at once instead of waiting on retries
        datasets.config.HF_HUB_OFFLINE = offline or not hub_reachable()
        try:
            rows = datasets.load_dataset(path, config, split=split)
        finally:
            datasets.config.HF_HUB_OFFLINE = offline
    except Exception as err:  # ConnectionError, DatasetNotFoundError, missing cache ... all mean "not here"
        where = f"{path}" + (f" ({config})" if config else "") + f", split {split!r}"
        raise FileNotFoundError(
            f"task {task!r}: no local data file and the datasets hub copy {where} could not be loaded "
            f"({type(err).__name__}: {err})"
        ) from err
    return [convert(dict(r)) for r in rows]
