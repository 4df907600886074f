"""Task classes: documents (plain dicts) -> requests -> per-document scores -> metrics, as lm-eval builds them.

- `MultipleChoiceTask`: one context, one continuation per choice (piqa, arc, hellaswag, boolq, mmlu, ...).
- `PartialScoringTask`: one context per option, one shared continuation (winogrande, "partial scoring").
- `LoglikelihoodTask`: (context, continuation) scored for greedy-ness and log-likelihood (lambada_openai).
- `GenerationTask`: greedy generation until a stop string, scored by exact match (triviaqa).

Prompts follow lm-eval's task YAMLs: the context is `description + shot_1 + ... + shot_n + query`, each shot
`query + target_delimiter + answer + fewshot_delimiter`, the continuation `target_delimiter + choice`. Shots come
from the task's few-shot pool; without one, they are drawn, seeded, from the evaluation documents with the
evaluated document removed, as lm-eval does when the few-shot split is the evaluation split.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import workbench.evals.metrics as M
from workbench.evals.tasks.readers import read_jsonl

class Task:
    """Base class. Subclasses define `requests` and `score`; documents are plain dicts.

    Args:
        name: task name in results.
        docs: the evaluation documents, or a zero-argument callable loading them (read lazily).
        fewshot_docs: a separate few-shot pool (or a callable); None draws shots from `docs` minus the evaluated doc.
        description: text before the first shot (MMLU's "The following are ...").
        target_delimiter: between query and answer (lm-eval default " ").
        fewshot_delimiter: after each shot (lm-eval default "\\n\\n").
        sampler: "default" (seeded random, lm-eval's ContextSampler) or "first_n" (lm-eval's FirstNSampler).
    """

    output_type = "multiple_choice"
    metric_names: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        docs: list[dict] | Callable[[], list[dict]],
        fewshot_docs: list[dict] | Callable[[], list[dict]] | None = None,
        description: str = "",
        target_delimiter: str = " ",
        fewshot_delimiter: str = "\n\n",
        sampler: str = "default",
    ) -> None:
        if sampler not in ("default", "first_n"):
            raise ValueError(f"sampler must be 'default' or 'first_n', got {sampler!r}")
        self.name = name
        self._docs = docs
        self._fewshot = fewshot_docs
        self.description = description
        self.target_delimiter = target_delimiter
        self.fewshot_delimiter = fewshot_delimiter
        self.sampler = sampler

    def docs(self) -> list[dict]:
        """The evaluation documents (loaded on first use)."""
        if callable(self._docs):
            self._docs = self._docs()
        return self._docs

    def fewshot_pool(self) -> tuple[list[dict], bool]:
        """(pool, same_split): the few-shot pool and whether it is the evaluation split itself."""
        if self._fewshot is None:
            return self.docs(), True
        if callable(self._fewshot):
            self._fewshot = self._fewshot()
        return self._fewshot, False

    # --- prompt pieces (overridden per task type)
    def query(self, doc: dict) -> str:
        raise NotImplementedError

    def answer(self, doc: dict) -> str:
        """The answer text shown after a shot's query."""
        raise NotImplementedError

    def shot_query(self, doc: dict) -> str:
        """The query shown in a shot (partial scoring shows the gold option's context)."""
        return self.query(doc)

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        """(context, continuation) pairs for `doc` after the few-shot `prefix`."""
        raise NotImplementedError

    def score(self, doc: dict, results: list[tuple[float, bool]], n_tokens: list[int]) -> dict[str, Any]:
        """Per-document record: metric values (keys of `metric_names`) plus prediction details."""
        raise NotImplementedError

    def aggregate(self, records: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float | None]]:
        """(metrics, stderrs) from the per-document records: means with their standard errors."""
        values, errs = {}, {}
        for m in self.metric_names:
            xs = [r[m] for r in records]
            values[m], errs[m] = M.mean(xs), M.mean_stderr(xs)
        return values, errs

    # --- few-shot
    def sample_shots(self, doc: dict, k: int, rnd: random.Random) -> list[dict]:
        """k few-shot documents for `doc`, drawn as lm-eval's samplers draw them (the evaluated doc excluded)."""
        if k == 0:
            return []
        pool, same = self.fewshot_pool()
        available = len(pool) - 1 if same else len(pool)
        if k > available:
            where = "the evaluation split minus the evaluated document" if same else "the few-shot split"
            raise ValueError(f"task {self.name!r}: num_fewshot={k} exceeds the {available} documents of {where}")
        if self.sampler == "first_n":
            chosen = [x for x in pool if x != doc] if same else pool
            return list(chosen[:k])
        if not same:
            return rnd.sample(pool, k)
        # lm-eval draws k + 1 and drops the evaluated document; duplicates of it force a redraw without them
        shots = [x for x in rnd.sample(pool, k + 1) if x != doc][:k]
        if len(shots) < k:
            shots = rnd.sample([x for x in pool if x != doc], k)
        return shots

    def fewshot_prefix(self, shots: list[dict]) -> str:
        """`description + (query + target_delimiter + answer + fewshot_delimiter) per shot`."""
        parts = [self.description]
        for s in shots:
            parts.append(self.shot_query(s) + self.target_delimiter + self.answer(s) + self.fewshot_delimiter)
        return "".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class MultipleChoiceTask(Task):
    """One context, a continuation per choice; acc and acc_norm (plus GPT-3's norms when `gpt3_norms`).

    Args:
        query: doc -> prompt text; choices: doc -> list of choice texts; gold: doc -> correct index.
        gpt3_norms: also score `acc_per_token` and `acc_uncond` (unconditional context "Answer:").
        Others as `Task`.
    """

    def __init__(
        self,
        name: str,
        docs,
        query: Callable[[dict], str],
        choices: Callable[[dict], list[str]],
        gold: Callable[[dict], int],
        gpt3_norms: bool = False,
        acc_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, docs, **kwargs)
        self._query, self._choices, self._gold = query, choices, gold
        self.gpt3_norms = gpt3_norms
        names = ["acc"] + (["acc_norm"] if acc_norm else [])
        self.metric_names = tuple(names + (["acc_per_token", "acc_uncond"] if gpt3_norms else []))

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike,
        query: str = "query",
        choices: str = "choices",
        gold: str = "gold",
        name: str | None = None,
        **kwargs: Any,
    ) -> MultipleChoiceTask:
        """A multiple-choice task over a JSONL file of `{query, choices, gold}` records (field names configurable).

        The prompt is the `query` field as is; continuations are `target_delimiter + choice`.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"multiple-choice data file {path} does not exist")
        return cls(
            name or path.stem,
            lambda: _checked_mc(read_jsonl(path, (query, choices, gold)), path, choices, gold),
            query=lambda d: d[query],
            choices=lambda d: list(d[choices]),
            gold=lambda d: int(d[gold]),
            **kwargs,
        )

    def query(self, doc: dict) -> str:
        return self._query(doc)

    def choices(self, doc: dict) -> list[str]:
        return self._choices(doc)

    def gold(self, doc: dict) -> int:
        return self._gold(doc)

    def answer(self, doc: dict) -> str:
        return self.choices(doc)[self.gold(doc)]

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        ctx = prefix + self.query(doc)
        reqs = [(ctx, self.target_delimiter + c) for c in self.choices(doc)]
        if self.gpt3_norms:
            reqs += [("Answer:", self.target_delimiter + c) for c in self.choices(doc)]
        return reqs

    def score(self, doc: dict, results: list[tuple[float, bool]], n_tokens: list[int]) -> dict[str, Any]:
        choices = self.choices(doc)
        k = len(choices)
        lls = [r[0] for r in results[:k]]
        preds = M.mc_predictions(
            lls,
            choices,
            n_tokens=n_tokens[:k] if self.gpt3_norms else None,
            lls_uncond=[r[0] for r in results[k:]] if self.gpt3_norms else None,
        )
        gold = self.gold(doc)
        rec = {m: float(preds[m] == gold) for m in self.metric_names}
        rec.update(gold=gold, pred=preds["acc"], pred_norm=preds["acc_norm"])
        return rec


class PartialScoringTask(Task):
    """Winogrande-style partial scoring: one context per option, the shared continuation scored after each.

    Args:
        contexts: doc -> list of contexts (the sentence up to the blank, filled with each option).
        continuation: doc -> the text after the blank; gold: doc -> correct index.
    """

    metric_names = ("acc",)

    def __init__(self, name: str, docs, contexts, continuation, gold, **kwargs: Any) -> None:
        super().__init__(name, docs, **kwargs)
        self._contexts, self._continuation, self._gold = contexts, continuation, gold

    def contexts(self, doc: dict) -> list[str]:
        return self._contexts(doc)

    def gold(self, doc: dict) -> int:
        return self._gold(doc)

    def shot_query(self, doc: dict) -> str:
        return self.contexts(doc)[self.gold(doc)]

    def answer(self, doc: dict) -> str:
        return self._continuation(doc)

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        cont = self.target_delimiter + self._continuation(doc)
        return [(prefix + c, cont) for c in self.contexts(doc)]

    def score(self, doc: dict, results: list[tuple[float, bool]], n_tokens: list[int]) -> dict[str, Any]:
        lls = [r[0] for r in results]
        pred = M.mc_predictions(lls, self.contexts(doc))["acc"]
        gold = self.gold(doc)
        return {"acc": float(pred == gold), "gold": gold, "pred": pred}


class LoglikelihoodTask(Task):
    """(context, continuation) pairs: `acc` = the continuation is the greedy one, `perplexity` = exp(-mean ll).

    The continuation is used as is (lm-eval adds no delimiter for loglikelihood tasks), so it carries its own
    leading space (lambada: " word").
    """

    output_type = "loglikelihood"
    metric_names = ("perplexity", "acc")

    def __init__(self, name: str, docs, context, continuation, **kwargs: Any) -> None:
        super().__init__(name, docs, **kwargs)
        self._context, self._continuation = context, continuation

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike,
        context: str = "context",
        continuation: str = "continuation",
        name: str | None = None,
        **kwargs: Any,
    ) -> LoglikelihoodTask:
        """A log-likelihood task over a JSONL file of `{context, continuation}` records (field names configurable)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"log-likelihood data file {path} does not exist")
        return cls(
            name or path.stem,
            lambda: read_jsonl(path, (context, continuation)),
            context=lambda d: d[context],
            continuation=lambda d: d[continuation],
            **kwargs,
        )

    def query(self, doc: dict) -> str:
        return self._context(doc)

    def answer(self, doc: dict) -> str:
        return self._continuation(doc)

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        return [(prefix + self.query(doc), self._continuation(doc))]

    def score(self, doc: dict, results: list[tuple[float, bool]], n_tokens: list[int]) -> dict[str, Any]:
        ll, greedy = results[0]
        return {"perplexity": ll, "acc": float(greedy)}

    def aggregate(self, records):
        lls = [r["perplexity"] for r in records]
        acc = [r["acc"] for r in records]
        return (
            {"perplexity": M.perplexity(lls), "acc": M.mean(acc)},
            {"perplexity": M.perplexity_stderr(lls), "acc": M.mean_stderr(acc)},
        )


class GenerationTask(Task):
    """Greedy generation until a stop string, scored by exact match against any reference (triviaqa)."""

    output_type = "generate_until"
    metric_names = ("exact_match",)

    def __init__(self, name: str, docs, query, references, until=("\n", ".", ","), max_gen_toks: int = 256, **kw):
        super().__init__(name, docs, **kw)
        self._query, self._refs = query, references
        self.until, self.max_gen_toks = list(until), max_gen_toks

    def query(self, doc: dict) -> str:
        return self._query(doc)

    def answer(self, doc: dict) -> str:
        return self._refs(doc)[0]

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, dict]]:
        return [(prefix + self.query(doc), {"until": self.until, "max_gen_toks": self.max_gen_toks})]

    def score(self, doc: dict, results, n_tokens):
        text = results[0].lstrip()  # lm-eval's remove_whitespace filter
        return {"exact_match": M.exact_match(text, self._refs(doc)), "generation": text}


def _checked_mc(records: list[dict], path: Path, choices: str, gold: str) -> list[dict]:
    for i, r in enumerate(records, 1):
        n = len(r[choices]) if isinstance(r[choices], list) else -1
        if n < 1 or not isinstance(r[gold], int) or not 0 <= r[gold] < n:
            raise ValueError(f"{path}: record {i}: {gold}={r[gold]!r} is not an index into {choices} (length {n})")
    return records

