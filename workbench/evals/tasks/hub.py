"""Benchmark documents from the Hugging Face datasets hub, for tasks whose local files are absent.

A task's `HubSource` names the dataset lm-evaluation-harness reads; it is loaded with `datasets.load_dataset`
(its cache and `HF_HUB_OFFLINE` apply) and every record is converted to the record format of the local files
(`../shared/data/SOURCES.md`), so a task builds the very same prompts from either source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.evals.tasks.readers import Record
from workbench.hub import hub_reachable


@dataclass(frozen=True)
class HubSource:
    """Where a task's documents live on the datasets hub.

    Attributes:
        path, config: the dataset and its configuration (`datasets.load_dataset(path, config)`).
        split: the split of the evaluated documents.
        convert: a hub record -> a record of the local files' format.
        fewshot_split: lm-eval's few-shot split ("train"; MMLU's "dev"); None draws shots from `split`.
    """

    path: str
    config: str | None
    split: str
    convert: Callable[[Record], Record]
    fewshot_split: str | None = None

    def where(self, split: str) -> str:
        """E.g. "allenai/ai2_arc (ARC-Easy), split 'test'"."""
        return self.path + (f" ({self.config})" if self.config else "") + f", split {split!r}"


def load_records(source: HubSource, split: str | None = None, task: str = "") -> list[Record]:
    """The documents of `split` (default `source.split`) from the datasets hub, as local records.

    Raises:
        FileNotFoundError: the hub can't be reached and `datasets` has no cached copy (the message says so).
    """
    split = split or source.split
    try:
        import datasets

        offline = datasets.config.HF_HUB_OFFLINE
        # an unreachable hub: answer from the datasets cache at once instead of waiting on retries
        datasets.config.HF_HUB_OFFLINE = offline or not hub_reachable()
        try:
            rows = datasets.load_dataset(source.path, source.config, split=split)
        finally:
            datasets.config.HF_HUB_OFFLINE = offline
    except Exception as err:  # ConnectionError, DatasetNotFoundError, missing cache ... all mean "not here"
        raise FileNotFoundError(
            f"task {task!r}: no local data file and the datasets hub copy {source.where(split)} could not be loaded "
            f"({type(err).__name__}: {err})"
        ) from err
    return [source.convert(dict(r)) for r in rows]


def lettered(question: str, choices: dict, answer_key: str) -> Record:
    """The AI2 datasets' schema (ARC, OpenBookQA): `choices = {text: [...], label: ["A", ...]}` and the gold label."""
    return {"query": question, "choices": list(choices["text"]), "gold": list(choices["label"]).index(answer_key)}
