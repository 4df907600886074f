"""Deprecated home of the datasets-hub fallback, kept so that old imports keep working.

Generic hub loading is `workbench.evals.tasks.hub`; each task's hub source and converter is part of its spec in
its family module (`workbench.evals.tasks.<family>`). The tables below are views of those specs.
"""

from __future__ import annotations

from collections.abc import Callable

from workbench.evals.tasks.hub import HubSource, load_records
from workbench.evals.tasks.readers import Record
from workbench.evals.tasks.registry import TASKS

# task -> (hub dataset, config, split of the evaluated documents, hub record -> local record)
HUB_DATASETS: dict[str, tuple[str, str | None, str, Callable[[Record], Record]]] = {
    name: (s.hub.path, s.hub.config, s.hub.split, s.hub.convert) for name, s in TASKS.items() if s.hub is not None
}
# lm-eval's few-shot split of each hub task (tasks without one draw shots from the evaluated split)
FEWSHOT_SPLITS: dict[str, str] = {
    name: s.hub.fewshot_split for name, s in TASKS.items() if s.hub is not None and s.hub.fewshot_split is not None
}
MMLU_HUB = "cais/mmlu"


def hub_source(task: str) -> tuple[str, str | None, str, Callable[[Record], Record]] | None:
    """Where `task` lives on the datasets hub, or None for a task without a hub source."""
    return HUB_DATASETS.get(task)


def load_hub_records(task: str, split: str | None = None) -> list[Record]:
    """The documents of `task` (or of `split`, e.g. MMLU's "dev") from the datasets hub, as local records.

    Raises:
        KeyError: the task has no hub source.
        FileNotFoundError: the hub can't be reached and `datasets` has no cached copy.
    """
    spec = TASKS.get(task)
    if spec is None or spec.hub is None:
        raise KeyError(f"task {task!r} has no datasets-hub source")
    return load_records(spec.hub, split, task)


__all__ = ["FEWSHOT_SPLITS", "HUB_DATASETS", "MMLU_HUB", "HubSource", "Record", "hub_source", "load_hub_records"]
