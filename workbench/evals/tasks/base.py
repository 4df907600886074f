"""Task classes: documents (plain dicts) -> requests -> per-document scores -> metrics, as lm-eval builds them.

- `MultipleChoiceTask`: one context, one continuation per choice (piqa, arc, hellaswag, boolq, mmlu, ...).
- `PartialScoringTask`: one context per option, one shared continuation (winogrande, "partial scoring").
- `LoglikelihoodTask`: (context, continuation) scored for greedy-ness and log-likelihood (lambada_openai).
- `GenerationTask`: generation until a stop string, answers extracted by lm-eval's filters and scored by exact
  match (triviaqa, GSM8K-style tasks).
- `RollingLoglikelihoodTask` (`perplexity.py`): whole texts, word/byte perplexity and bits per byte.

Results carry lm-eval's names: each metric has a filter (`metric_keys`: "none" unless a generation task's filter
pipeline says otherwise), `higher_is_better`, and a `target` per document as lm-eval's `doc_to_target`.

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
from workbench.evals.tasks.readers import line_numbers, read_jsonl

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
    lower_is_better: tuple[str, ...] = ()  # metrics where lower is better (perplexities)
    extra_metrics: tuple[str, ...] = ()  # metrics lm-eval does not compute: kept out of its results schema
    num_fewshot: int = 0  # shots when `evaluate` gets num_fewshot=None: lm-eval's default (set by TaskSpec.build)
    # lm-eval config keys of the task's data and templates (dataset_path, doc_to_text ...; set by TaskSpec.build)
    source_config: dict[str, Any] = {}

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
        self.alias, self.version = name, 1.0  # lm-eval's task_alias and metadata.version (set by TaskSpec.build)

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

    # --- lm-eval's results vocabulary
    def metric_keys(self) -> list[tuple[str, str, str]]:
        """`(key in metrics, lm-eval metric, filter)` per metric: "acc" -> ("acc", "acc", "none")."""
        return [(m, m, "none") for m in self.metric_names]

    @property
    def higher_is_better(self) -> dict[str, bool]:
        """lm-eval's `higher_is_better`: metric -> bool (lm-eval's metrics only)."""
        return {m: m not in self.lower_is_better for _, m, _ in self.metric_keys() if m not in self.extra_metrics}

    def target(self, doc: dict) -> Any:
        """lm-eval's `doc_to_target` for the sample logs (the gold index of a multiple-choice task)."""
        return self.answer(doc)

    def config(self) -> dict[str, Any]:
        """The task's settings in lm-eval's `configs` terms (what its YAML would say)."""
        return {"task": self.name, "task_alias": self.alias, "output_type": self.output_type,
                "description": self.description, "target_delimiter": self.target_delimiter,
                "fewshot_delimiter": self.fewshot_delimiter, "fewshot_config": {"sampler": self.sampler},
                "metric_list": [{"metric": m, "higher_is_better": h} for m, h in self.higher_is_better.items()],
                "metadata": {"version": self.version}, **self.source_config}

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
        for m, _, _ in self.metric_keys():
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
        self.extra_metrics = ("acc_per_token", "acc_uncond") if gpt3_norms else ()

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

    def target(self, doc: dict) -> int:
        return self.gold(doc)

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        ctx = prefix + self.query(doc)
        choices = self.choices(doc)
        if isinstance(choices, str) or not choices:
            raise ValueError(f"task {self.name!r}: the choices of the document {_short(doc)} are {choices!r}; they "
                             "must be a non-empty list of texts")
        reqs = [(ctx, self.target_delimiter + c) for c in choices]
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
    lower_is_better = ("perplexity",)
    bootstrap_iters = 100_000  # lm-eval's default; `evaluate(bootstrap_iters=...)` sets it per run

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
            lambda: _checked_texts(read_jsonl(path, (context, continuation)), path, (context, continuation)),
            context=lambda d: d[context],
            continuation=lambda d: d[continuation],
            **kwargs,
        )

    def query(self, doc: dict) -> str:
        return self._context(doc)

    def answer(self, doc: dict) -> str:
        return self._continuation(doc)

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, str]]:
        cont = self._continuation(doc)
        if not cont:
            raise ValueError(f"task {self.name!r}: empty continuation for the document {_short(doc)}; a "
                             "log-likelihood task needs text to score after the context")
        return [(prefix + self.query(doc), cont)]

    def score(self, doc: dict, results: list[tuple[float, bool]], n_tokens: list[int]) -> dict[str, Any]:
        ll, greedy = results[0]
        return {"perplexity": ll, "acc": float(greedy)}

    def aggregate(self, records):
        lls = [r["perplexity"] for r in records]
        acc = [r["acc"] for r in records]
        return (
            {"perplexity": M.perplexity(lls), "acc": M.mean(acc)},
            {"perplexity": M.perplexity_stderr(lls, self.bootstrap_iters), "acc": M.mean_stderr(acc)},
        )


class GenerationTask(Task):
    """Generation until a stop string, each filter pipeline's answer scored by exact match against any reference.

    Args:
        query: doc -> prompt; references: doc -> the accepted answers (a list, or one string).
        until, max_gen_toks: lm-eval's stop strings and token limit (None: not in the requests, the engine's
            default 256 applies, as lm-eval's); `generation_kwargs` adds do_sample,
            temperature, top_p, top_k, seed (sampling only with do_sample=True, as lm-eval's hf backend).
        filters: `{name: pipeline}` (`workbench.evals.filters`; default lm-eval's triviaqa "remove_whitespace").
        ignore_case, ignore_punctuation, regexes_to_ignore, ignore_numbers: lm-eval's exact_match options.
        answer: doc -> the text shown after a shot's query (default the first reference).
    """

    output_type = "generate_until"
    metric_names = ("exact_match",)

    def __init__(self, name: str, docs, query, references, until=("\n", ".", ","), max_gen_toks: int | None = None,
                 generation_kwargs: dict | None = None, filters: dict | None = None, ignore_case: bool = True,
                 ignore_punctuation: bool = True, regexes_to_ignore: tuple[str, ...] = (),
                 ignore_numbers: bool = False, answer: Callable[[dict], str] | None = None, **kw):
        from workbench.evals.filters import TRIVIAQA_FILTERS, check_pipeline

        super().__init__(name, docs, **kw)
        self._query, self._refs, self._answer = query, references, answer
        self.until, self.max_gen_toks = list(until), max_gen_toks
        self.generation_kwargs = dict(generation_kwargs or {})
        self.filters = dict(filters if filters is not None else TRIVIAQA_FILTERS)
        for fname, pipeline in self.filters.items():
            check_pipeline(fname, pipeline)
        self.match_options = dict(ignore_case=ignore_case, ignore_punctuation=ignore_punctuation,
                                  regexes_to_ignore=tuple(regexes_to_ignore), ignore_numbers=ignore_numbers)
        self.seed: int | None = None  # set per run by `evaluate(seed=...)` for sampled generation

    def metric_keys(self) -> list[tuple[str, str, str]]:
        # one filter: the metric keeps its plain name in `EvalResults.metrics`; several: "metric,filter"
        single = len(self.filters) == 1
        return [(m if single else f"{m},{f}", m, f) for f in self.filters for m in self.metric_names]

    def query(self, doc: dict) -> str:
        return self._query(doc)

    def references(self, doc: dict) -> list[str]:
        refs = self._refs(doc)
        return [refs] if isinstance(refs, str) else list(refs)

    def answer(self, doc: dict) -> str:
        return self._answer(doc) if self._answer is not None else self.references(doc)[0]

    def target(self, doc: dict) -> Any:
        return self._refs(doc)

    def config(self) -> dict[str, Any]:
        """`Task.config` plus lm-eval's `generation_kwargs` (as the YAML gives them: no run seed) and
        `filter_list` (`[{"name": ..., "filter": [{"function": ..., **args}, ...]}]`)."""
        kw = {"until": list(self.until), **self.generation_kwargs}
        if self.max_gen_toks is not None:
            kw["max_gen_toks"] = self.max_gen_toks
        filters = [{"name": name, "filter": [{"function": step, **args} for step, args in pipeline]}
                   for name, pipeline in self.filters.items()]
        # the exact-match options as lm-eval's YAMLs write them (ignore_numbers only where set: none sets it)
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.match_options.items()
                   if not (k == "ignore_numbers" and not v)}
        metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": h,
                    **(options if m == "exact_match" else {})} for m, h in self.higher_is_better.items()]
        return {**super().config(), "generation_kwargs": kw, "filter_list": filters, "metric_list": metrics}

    def request_kwargs(self) -> dict[str, Any]:
        """The generation arguments of every request (lm-eval's `generation_kwargs`)."""
        kw = {"until": self.until, **self.generation_kwargs}
        if self.max_gen_toks is not None:
            kw["max_gen_toks"] = self.max_gen_toks
        if kw.get("do_sample") and "seed" not in kw and self.seed is not None:
            kw["seed"] = self.seed
        return kw

    def requests(self, doc: dict, prefix: str) -> list[tuple[str, dict]]:
        return [(prefix + self.query(doc), self.request_kwargs())]

    def score(self, doc: dict, results, n_tokens):
        from workbench.evals.filters import apply_pipeline

        refs = self.references(doc)
        rec: dict[str, Any] = {"generation": results[0], "filtered": {}}
        for key, metric, fname in self.metric_keys():
            answer = apply_pipeline(self.filters[fname], list(results))
            rec["filtered"][fname] = answer
            rec[key] = M.exact_match(answer if isinstance(answer, str) else answer[0], refs, **self.match_options)
        return rec


def _short(doc: dict, n: int = 80) -> str:
    text = repr(doc)
    return text if len(text) <= n else text[: n - 3] + "..."


def _checked_texts(records: list[dict], path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The records, each of `fields` a non-empty string; errors name the file, line and field."""
    for lineno, r in zip(line_numbers(path), records):
        for f in fields:
            if not isinstance(r[f], str) or not r[f]:
                raise ValueError(f"{path}:{lineno}: field {f!r} must be a non-empty string, got {r[f]!r}")
    return records


def _checked_mc(records: list[dict], path: Path, choices: str, gold: str) -> list[dict]:
    """The records of a multiple-choice JSONL file, each checked: `choices` a non-empty list of strings, `gold` an
    index into it. Errors name the file, the line and the field."""
    for lineno, r in zip(line_numbers(path), records):
        where = f"{path}:{lineno}"
        c = r[choices]
        if isinstance(c, str):
            raise ValueError(f"{where}: field {choices!r} is a string ({_short({choices: c}, 60)}); it must be a "
                             "list of choice texts")
        if not isinstance(c, list) or not c:
            raise ValueError(f"{where}: field {choices!r} must be a non-empty list of choice texts, got {c!r}")
        bad = [x for x in c if not isinstance(x, str) or not x]
        if bad:
            raise ValueError(f"{where}: field {choices!r} has empty or non-string choices {bad!r}")
        g = r[gold]
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < len(c):
            raise ValueError(f"{where}: field {gold!r}={g!r} is not an index into {choices!r} (0..{len(c) - 1})")
    return records
