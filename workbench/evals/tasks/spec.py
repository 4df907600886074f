"""`TaskSpec`: everything the workbench knows about one benchmark task, declared once in its family's module.

A family module (`piqa.py`, `mmlu.py`, ...) defines `SPECS`, a list of `TaskSpec`; the registry finds every such
module in this package, so adding a task family is adding one file. From a spec come the task object
(`spec.build(data_dir)`), its datasets-hub fallback and its lm-eval YAML (`workbench.evals.harness`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.evals.tasks.base import Task
from workbench.evals.tasks.data_dir import find_file
from workbench.evals.tasks.hub import HubSource, load_records
from workbench.evals.tasks.readers import Reader, Record

Loader = Callable[[], list[Record]]


@dataclass(frozen=True)
class LmEvalTemplate:
    """The task's prompt in lm-eval's YAML terms: Jinja over the local records (lm_eval/tasks/<task>/*.yaml).

    Attributes:
        doc_to_text, doc_to_target: templates (or field names).
        doc_to_choice: a field name, or the list of choice texts.
        process_docs: "module:function" lm-eval applies to the records first (HellaSwag's preprocessing).
    """

    doc_to_text: str
    doc_to_target: str
    doc_to_choice: str | list[str] | None = None
    process_docs: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task: its data, its prompt and its lm-eval counterpart.

    Attributes:
        name: the task's name ("piqa", "mmlu_anatomy").
        task: the `Task` class that builds requests and scores them.
        prompt: keyword arguments of `task`: the prompt functions (doc -> text), delimiters, options.
        files: local data files (relative to the data directory), the first found is read.
        reader: a local data file -> records.
        hub: the datasets-hub copy read when no local file is there; None: local files only.
        fewshot_files: a separate local few-shot split (MMLU's dev); empty: shots come from the evaluated split
            (a hub-loaded task then uses `hub.fewshot_split`).
        lm_eval: the lm-eval template; None: the task is not exported to lm-eval.
        group: a group name that evaluates this task among others ("mmlu"), or a path of nested groups, outermost
            first (("mmlu", "mmlu_stem")): lm-eval's group hierarchy.
        alias: the display name in results tables (lm-eval's `task_alias`: "anatomy"); default `name`.
        version: the lm-eval task version these prompts and metrics reproduce (its YAML's `metadata.version`).
        loader: documents that come from elsewhere than the data directory (an installed corpus), read lazily;
            `files` is then unused.
        num_fewshot: lm-eval's default shots for this task (its YAML's `num_fewshot`: gsm8k 5), used when
            `evaluate` is given none.
    """

    name: str
    task: type[Task]
    prompt: Mapping[str, Any]
    files: tuple[str, ...]
    reader: Reader
    hub: HubSource | None = None
    fewshot_files: tuple[str, ...] = ()
    lm_eval: LmEvalTemplate | None = None
    group: str | tuple[str, ...] | None = None
    alias: str | None = None
    version: float = 1.0
    loader: Loader | None = None
    num_fewshot: int = 0

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups this task belongs to, outermost first (empty without a group)."""
        return () if self.group is None else (self.group,) if isinstance(self.group, str) else tuple(self.group)

    def build(self, data_dir: Path | None) -> Task:
        """The task over the files in `data_dir` (read lazily), else over the hub copy (loaded now).

        Raises:
            FileNotFoundError: neither source is there; names the local paths tried and the hub dataset.
        """
        docs, local = (self.loader, True) if self.loader else self._documents(data_dir, self.files, None)
        if self.fewshot_files:
            shots, _ = self._documents(data_dir, self.fewshot_files, self.hub.fewshot_split if self.hub else None)
        elif local or self.hub is None or self.hub.fewshot_split is None:
            shots = None  # drawn from the evaluated documents
        else:
            shots = self._hub(self.hub.fewshot_split)
        task = self.task(self.name, docs, fewshot_docs=shots, **self.prompt)
        task.alias, task.version, task.num_fewshot = self.alias or self.name, self.version, self.num_fewshot
        task.source_config = self.lm_eval_config(data_dir if local else None, bool(shots is not None))
        return task

    __call__ = build  # `BUILTIN[name](data_dir)`, as the registry's factories were called

    def lm_eval_config(self, data_dir: Path | None, separate_shots: bool) -> dict[str, Any]:
        """lm-eval's config keys for this task's data and templates, as its `configs` block shows them.

        Args:
            data_dir: where the local files are (None: the hub copy is read).
            separate_shots: shots come from a split of their own (a few-shot file, or the hub's few-shot split).

        Returns:
            `dataset_path`, `dataset_name`, `dataset_kwargs` (local files), `test_split`, `fewshot_split`,
            `num_fewshot`, and lm-eval's templates (`doc_to_text`, `doc_to_target`, `doc_to_choice`,
            `process_docs`) where the task has them.
        """
        out: dict[str, Any] = {"num_fewshot": self.num_fewshot}
        local = self.local_file(data_dir) if data_dir is not None and self.loader is None else None
        if local is not None:
            files = {"test": str(local)}
            if self.fewshot_files:
                try:
                    files["train"] = str(find_file(self.name, data_dir, self.fewshot_files))
                except FileNotFoundError:
                    pass
            # lm-eval reads JSON lines itself ("json"); other formats are read by the workbench's own reader
            reader = getattr(self.reader, "__name__", "reader")
            out.update(dataset_path="json" if local.suffix == ".jsonl" else f"workbench:{reader}", dataset_name=None,
                       dataset_kwargs={"data_files": files}, test_split="test",
                       fewshot_split="train" if "train" in files else "test")
        elif self.hub is not None and self.loader is None:
            out.update(dataset_path=self.hub.path, dataset_name=self.hub.config, test_split=self.hub.split,
                       fewshot_split=self.hub.fewshot_split if separate_shots else self.hub.split)
        if self.lm_eval is not None:
            out.update(doc_to_text=self.lm_eval.doc_to_text, doc_to_target=self.lm_eval.doc_to_target)
            if self.lm_eval.doc_to_choice is not None:
                out["doc_to_choice"] = self.lm_eval.doc_to_choice
            if self.lm_eval.process_docs:
                out["process_docs"] = self.lm_eval.process_docs
        return out

    def local_file(self, data_dir: Path | None) -> Path | None:
        """The local file the evaluated documents are read from, or None (hub copy)."""
        try:
            return find_file(self.name, data_dir, self.files)
        except FileNotFoundError:
            return None

    def _documents(self, data_dir: Path | None, files: tuple[str, ...], split: str | None) -> tuple[Loader, bool]:
        """(loader, is local): the first local file of `files`, read lazily; without one, the hub's `split`."""
        try:
            path = find_file(self.name, data_dir, files)
        except FileNotFoundError as local:
            if self.hub is None:
                raise
            try:
                return self._hub(split), False
            except FileNotFoundError as hub:
                raise FileNotFoundError(f"{local} {hub}") from None
        return (lambda: self.reader(path)), True

    def _hub(self, split: str | None) -> Loader:
        # loaded now, so that a missing source fails before any evaluation starts
        records = load_records(self.hub, split, self.name)
        return lambda: records
