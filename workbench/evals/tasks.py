"""Benchmark tasks over local files, with lm-evaluation-harness's prompts, delimiters and few-shot formatting.

A task turns documents into requests:

- `MultipleChoiceTask`: one context, one continuation per choice (piqa, arc, hellaswag, boolq, mmlu, ...).
- `PartialScoringTask`: one context per option, one shared continuation (winogrande, "partial scoring").
- `LoglikelihoodTask`: (context, continuation) scored for greedy-ness and log-likelihood (lambada_openai).
- `GenerationTask`: greedy generation until a stop string, scored by exact match (triviaqa).

Prompts follow lm-eval's task YAMLs (lm_eval/tasks/<task>/*.yaml): the context is
`description + shot_1 + ... + shot_n + query`, each shot `query + target_delimiter + answer + fewshot_delimiter`,
the continuation `target_delimiter + choice`. Few-shot examples come from the task's few-shot split (MMLU's dev
split, first-n as lm-eval); tasks whose local data has a single split draw them, seeded, from that split with the
evaluated document removed, the way lm-eval does when the few-shot split is the evaluation split.

Data files are the formats of `../shared/data/SOURCES.md` under a `data_dir` (default: `$WORKBENCH_DATA_DIR`,
else `../shared/data/evals` beside the checkout). A task without local files reads the datasets-hub copy that
lm-eval uses (`hub_data`), converted to the same records.
"""

from __future__ import annotations

import bz2
import csv
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.evals import metrics as M
from workbench.evals.hub_data import FEWSHOT_SPLITS, hub_source, load_hub_records

DATA_HELP = (
    "The benchmark files are described in shared/data/SOURCES.md (llm-foundry's local_data JSONL, LAMBADA's "
    "lambada_test.jsonl, the HellaSwag text dump, the MMLU CSVs). Put them under a data directory laid out as "
    "<data_dir>/<task>/<file> and pass data_dir=... (CLI: --data-dir) or set WORKBENCH_DATA_DIR. Without local "
    "files, a task reads lm-eval's dataset from the Hugging Face datasets hub when it is reachable or cached."
)

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()


# ----------------------------------------------------------------------------------------------------------------
# data directory and file readers


def default_data_dir() -> Path | None:
    """`$WORKBENCH_DATA_DIR` if set, else `../shared/data/evals` beside the checkout if it exists, else None."""
    env = os.environ.get("WORKBENCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).resolve().parents[3] / "shared" / "data" / "evals"
    return beside if beside.is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data directory to read from: `data_dir` when given, else `default_data_dir()`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _find_file(task: str, data_dir: Path | None, candidates: Sequence[str]) -> Path:
    if data_dir is None:
        raise FileNotFoundError(
            f"task {task!r}: no data directory (data_dir=None, WORKBENCH_DATA_DIR unset, no ../shared/data/evals "
            f"beside the checkout); looked for {list(candidates)}. {DATA_HELP}"
        )
    for rel in candidates:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise FileNotFoundError(
        f"task {task!r}: data file not found; looked for {[str(data_dir / c) for c in candidates]}. {DATA_HELP}"
    )


Loader = Callable[[], list[dict]]


def _documents(
    task: str, data_dir: Path | None, candidates: Sequence[str], read: Callable[[Path], list[dict]],
    split: str | None = None,
) -> tuple[Loader, Loader | None]:
    """Loaders of `task`'s documents and of its few-shot pool.

    The first local file of `candidates` is read lazily, and its single split also provides the shots (pool
    None). Without one, the datasets-hub copy (`hub_data`) is loaded now, so that a missing source fails before
    any evaluation starts, with lm-eval's few-shot split (`FEWSHOT_SPLITS`) as the pool.

    Raises:
        FileNotFoundError: neither source is there; names the local paths tried and the hub dataset.
    """
    try:
        path = _find_file(task, data_dir, candidates)
    except FileNotFoundError as local:
        if hub_source(task) is None:
            raise
        try:
            records = load_hub_records(task, split)
            shots = load_hub_records(task, FEWSHOT_SPLITS[task]) if task in FEWSHOT_SPLITS else None
        except FileNotFoundError as hub:
            raise FileNotFoundError(f"{local} {hub}") from None
        return (lambda: records), (None if shots is None else lambda: shots)
    return (lambda: read(path)), None


def _mc_reader(path: Path) -> list[dict]:
    return read_jsonl(path, ("query", "choices", "gold"))


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read a JSON-lines file; blank lines are skipped.

    Raises:
        ValueError: a line that is not a JSON object, naming the file and 1-based line number.
        KeyError: a record lacking one of `required`, naming file, line and the keys present.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise KeyError(f"{path}:{lineno}: record lacks {missing}; it has keys {sorted(rec)}")
            records.append(rec)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def read_mmlu_csv(path: Path) -> list[dict[str, Any]]:
    """MMLU CSV with header question,choice0..choice3,answer -> `{question, choices[4], answer}` records."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in need):
            raise ValueError(f"{path}: expected CSV header {','.join(need)}, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, 2):
            try:
                answer = int(row["answer"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: answer {row['answer']!r} is not an integer 0-3") from None
            out.append({"question": row["question"], "choices": [row[f"choice{i}"] for i in range(4)], "answer": answer})
    return out


def read_hellaswag_text(path: Path) -> list[dict[str, Any]]:
    """The HellaSwag text dump (6 lines per item: `label: ctx`, gold, 4 endings) -> lm-eval-like raw records.

    The dump joins ctx_a and ctx_b (`ctx = ctx_a + " " + ctx_b`, ctx_b not capitalised). lm-eval capitalises
    ctx_b, so it is recovered as the text after the last sentence end when that text starts in lower case
    (ActivityNet items: "... on a roof. he"); otherwise ctx_b is taken as empty.
    """
    with bz2.open(path, "rt", encoding="utf-8") if path.suffix == ".bz2" else open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6 (label: ctx, gold, 4 endings)")
    out = []
    for i in range(0, len(lines), 6):
        head = lines[i]
        if ": " not in head:
            raise ValueError(f"{path}:{i + 1}: expected 'activity_label: context', got {head[:60]!r}")
        label, ctx = head.split(": ", 1)
        try:
            gold = int(lines[i + 1])
        except ValueError:
            raise ValueError(f"{path}:{i + 2}: gold {lines[i + 1]!r} is not an integer 0-3") from None
        cut = max(ctx.rfind(". "), ctx.rfind("? "), ctx.rfind("! "))
        tail = ctx[cut + 2 :] if cut >= 0 else ""
        if tail[:1].islower():
            ctx_a, ctx_b = ctx[: cut + 1], tail
        else:
            ctx_a, ctx_b = ctx, ""
        out.append(
            {"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": lines[i + 2 : i + 6], "label": str(gold)}
        )
    return out


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text cleaning (lm_eval/tasks/hellaswag/utils.py: preprocess)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # WikiHow artefact
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


# ----------------------------------------------------------------------------------------------------------------
# tasks


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


# ----------------------------------------------------------------------------------------------------------------
# the built-in tasks


def _strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _piqa(d: Path | None) -> Task:
    docs, shots = _documents("piqa", d, ["piqa/piqa_llmfoundry.jsonl", "piqa/piqa.jsonl"], _mc_reader)
    # llm-foundry's query is "Question: {goal}\n"; lm-eval's prompt is "Question: {{goal}}\nAnswer:"
    return MultipleChoiceTask(
        "piqa",
        docs,
        fewshot_docs=shots,
        query=lambda x: "Question: " + _strip_prefix(x["query"], "Question: ").removesuffix("\n") + "\nAnswer:",
        choices=lambda x: x["choices"],
        gold=lambda x: int(x["gold"]),
    )


def _arc(name: str, d: Path | None) -> Task:
    docs, shots = _documents(name, d, [f"{name}/{name}_llmfoundry.jsonl", f"{name}/{name}.jsonl"], _mc_reader)
    return MultipleChoiceTask(
        name,
        docs,
        fewshot_docs=shots,
        query=lambda x: "Question: " + _strip_prefix(x["query"], "Question: ") + "\nAnswer:",
        choices=lambda x: x["choices"],
        gold=lambda x: int(x["gold"]),
        gpt3_norms=True,
    )


def _openbookqa(d: Path | None) -> Task:
    docs, shots = _documents("openbookqa", d, ["openbookqa/openbookqa_llmfoundry.jsonl", "openbookqa/openbookqa.jsonl"],
                      _mc_reader)
    # lm-eval: doc_to_text is question_stem alone
    return MultipleChoiceTask(
        "openbookqa",
        docs,
        fewshot_docs=shots,
        query=lambda x: _strip_prefix(x["query"], "Question: "),
        choices=lambda x: x["choices"],
        gold=lambda x: int(x["gold"]),
        gpt3_norms=True,
    )


def _sciq(d: Path | None) -> Task:
    docs, shots = _documents("sciq", d, ["sciq/sciq_llmfoundry.jsonl", "sciq/sciq.jsonl"], _mc_reader)
    return MultipleChoiceTask(
        "sciq",
        docs,
        fewshot_docs=shots,
        query=lambda x: x["query"] if x["query"].rstrip().endswith("Answer:") else x["query"].rstrip() + "\nAnswer:",
        choices=lambda x: x["choices"],
        gold=lambda x: int(x["gold"]),
    )


def _boolq(d: Path | None) -> Task:
    docs, shots = _documents("boolq", d, ["boolq/boolq_llmfoundry.jsonl", "boolq/boolq.jsonl"], _mc_reader)
    # llm-foundry: "Passage: {passage}\nQuestion: {question}?"; lm-eval: "{{passage}}\nQuestion: {{question}}?\nAnswer:"
    return MultipleChoiceTask(
        "boolq",
        docs,
        fewshot_docs=shots,
        query=lambda x: _strip_prefix(x["query"], "Passage: ") + "\nAnswer:",
        choices=lambda x: ["no", "yes"],
        gold=lambda x: int(x["gold"]),
        acc_norm=False,
    )


def _winogrande(d: Path | None) -> Task:
    docs, shots = _documents("winogrande", d, ["winogrande/winogrande_llmfoundry.jsonl", "winogrande/winogrande.jsonl"],
                      lambda p: read_jsonl(p, ("context_options", "continuation", "gold")))
    return PartialScoringTask(
        "winogrande",
        docs,
        fewshot_docs=shots,
        contexts=lambda x: list(x["context_options"]),
        continuation=lambda x: x["continuation"].strip(),
        gold=lambda x: int(x["gold"]),
    )


def _lambada(d: Path | None) -> Task:
    docs, shots = _documents("lambada_openai", d, ["lambada/lambada_test.jsonl", "lambada_openai/lambada_test.jsonl"],
                      lambda p: read_jsonl(p, ("text",)))
    # lm-eval: context = all words but the last joined by " ", continuation = " " + last word
    return LoglikelihoodTask(
        "lambada_openai",
        docs,
        fewshot_docs=shots,
        context=lambda x: " ".join(x["text"].split(" ")[:-1]),
        continuation=lambda x: " " + x["text"].split(" ")[-1],
    )


def _hellaswag(d: Path | None) -> Task:
    docs, shots = _documents("hellaswag", d, ["hellaswag/hellaswag_val_full.txt.bz2", "hellaswag/hellaswag_val.txt"],
                      read_hellaswag_text)
    return MultipleChoiceTask(
        "hellaswag",
        docs,
        fewshot_docs=shots,
        query=lambda x: hellaswag_preprocess(x["activity_label"] + ": " + x["ctx_a"] + " " + x["ctx_b"].capitalize()),
        choices=lambda x: [hellaswag_preprocess(e) for e in x["endings"]],
        gold=lambda x: int(x["label"]),
    )


def _mmlu(subject: str, d: Path | None) -> Task:
    test, _ = _documents(f"mmlu_{subject}", d, [f"mmlu/test/{subject}_test.csv"], read_mmlu_csv)
    dev, _ = _documents(f"mmlu_{subject}", d, [f"mmlu/dev/{subject}_dev.csv"], read_mmlu_csv, split="dev")
    letters = ["A", "B", "C", "D"]
    return MultipleChoiceTask(
        f"mmlu_{subject}",
        test,
        fewshot_docs=dev,
        description=f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
        sampler="first_n",
        query=lambda x: x["question"].strip()
        + "".join(f"\n{letter}. {c}" for letter, c in zip(letters, x["choices"]))
        + "\nAnswer:",
        choices=lambda x: letters,
        gold=lambda x: int(x["answer"]),
        acc_norm=False,
    )


def _triviaqa(d: Path | None) -> Task:
    docs, shots = _documents("triviaqa", d, ["triviaqa/triviaqa.jsonl", "triviaqa/triviaqa_llmfoundry.jsonl"],
                      lambda p: read_jsonl(p, ("question",)))

    def refs(x: dict) -> list[str]:
        a = x.get("answers", x.get("aliases", x.get("answer")))
        return [a] if isinstance(a, str) else list(a)

    return GenerationTask(
        "triviaqa",
        docs,
        fewshot_docs=shots,
        query=lambda x: f"Question: {x['question']}?\nAnswer:",
        references=refs,
    )


BUILTIN: dict[str, Callable[[Path | None], Task]] = {
    "lambada_openai": _lambada,
    "piqa": _piqa,
    "arc_easy": lambda d: _arc("arc_easy", d),
    "arc_challenge": lambda d: _arc("arc_challenge", d),
    "winogrande": _winogrande,
    "hellaswag": _hellaswag,
    "boolq": _boolq,
    "openbookqa": _openbookqa,
    "sciq": _sciq,
    "triviaqa": _triviaqa,
    **{f"mmlu_{s}": (lambda s: lambda d: _mmlu(s, d))(s) for s in MMLU_SUBJECTS},
}
GROUPS: dict[str, list[str]] = {"mmlu": [f"mmlu_{s}" for s in MMLU_SUBJECTS]}


def known_tasks() -> list[str]:
    """Every built-in task and group name."""
    return sorted(GROUPS) + sorted(BUILTIN)


def get_tasks(tasks: str | Task | Sequence[str | Task], data_dir: str | os.PathLike | None = None) -> list[Task]:
    """Resolve task names (comma-separated string, list, or Task objects; groups such as "mmlu" expand).

    Raises:
        KeyError: an unknown name; the message lists the known ones.
        FileNotFoundError: a task's data file is missing (says where it looked and how to get the data).
    """
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    d = resolve_data_dir(data_dir)
    out: list[Task] = []
    for t in tasks:
        if isinstance(t, Task):
            out.append(t)
            continue
        if not isinstance(t, str):
            raise TypeError(f"tasks must be names or Task objects, got {type(t).__name__}")
        for name in [n.strip() for n in t.split(",") if n.strip()]:
            if name in GROUPS:
                out += [BUILTIN[n](d) for n in GROUPS[name]]
            elif name in BUILTIN:
                out.append(BUILTIN[name](d))
            else:
                groups = ", ".join(sorted(GROUPS))
                singles = ", ".join(n for n in sorted(BUILTIN) if not n.startswith("mmlu_"))
                raise KeyError(
                    f"unknown task {name!r}; known tasks: {singles}; groups: {groups}; "
                    f"and mmlu_<subject> for the 57 MMLU subjects (e.g. mmlu_anatomy)"
                )
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task(s) {dup} given more than once")
    return out
