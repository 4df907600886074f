"""TriviaQA (no context), as lm-eval's triviaqa.yaml: "Question: {question}?\nAnswer:", greedy generation until
"\n", "." or ",", scored by exact match (case and punctuation ignored) against any alias."""

from pathlib import Path

from workbench.evals.tasks.base import GenerationTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import jsonl_reader, line_numbers
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def references(doc: dict) -> list[str]:
    """The accepted answers: `answers` or `aliases` (a list or a string), or `answer` as a string, a list, or
    lm-eval's raw TriviaQA layout `{"aliases": [...], "value": ...}` (its doc_to_target is `answer.aliases`).

    Raises:
        ValueError: none of those fields, or one of another shape (never scored silently as 0).
    """
    for key in ("answers", "aliases", "answer"):
        if key in doc:
            a = doc[key]
            break
    else:
        raise ValueError(f"triviaqa record has no answers/aliases/answer field; it has keys {sorted(doc)}")
    if isinstance(a, dict):
        if "aliases" not in a:
            raise ValueError(f"triviaqa record: field {key!r} is a dict without 'aliases' (keys {sorted(a)}); "
                             "expected lm-eval's raw layout {'aliases': [...], 'value': ...}")
        a = a["aliases"]
    if isinstance(a, str):
        return [a]
    if not isinstance(a, list) or not a or not all(isinstance(x, str) for x in a):
        raise ValueError(f"triviaqa record: field {key!r} must be a non-empty list of strings, got {a!r}")
    return a


def read_triviaqa(path: Path) -> list[dict]:
    """TriviaQA JSON lines, each record's answers checked (`references`); errors name the file and line."""
    records = jsonl_reader("question")(path)
    for lineno, rec in zip(line_numbers(path), records):
        try:
            references(rec)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
    return records


SPECS = [
    TaskSpec(
        "triviaqa", GenerationTask, dict(query=lambda d: f"Question: {d['question']}?\nAnswer:", references=references,
                                        generation_kwargs={"do_sample": False, "temperature": 0.0}),
        files=("triviaqa/triviaqa.jsonl", "triviaqa/triviaqa_llmfoundry.jsonl"), reader=read_triviaqa, version=3.0,
        hub=HubSource("mandarjoshi/trivia_qa", "rc.nocontext", "validation",
                      lambda r: {"question": r["question"], "answers": list(r["answer"]["aliases"])}, fewshot_split="train"),
        lm_eval=LmEvalTemplate(
            doc_to_text="Question: {{question}}?\nAnswer:",
            doc_to_target="{{answers if answers is defined else aliases if aliases is defined else "
            "([answer] if answer is string else answer.aliases if answer is mapping else answer)}}",
        ),
    )
]
