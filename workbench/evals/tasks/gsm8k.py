"""GSM8K (grade-school math), as lm-eval's gsm8k.yaml (version 3): "Question: {question}\nAnswer:", shots from the
train split with their full worked answers, greedy generation until "Question:", then two answer filters scored by
exact match against the reference solution (case ignored; ",", "$", everything up to "#### " and a final "."
removed): `strict-match` takes the number after "#### ", `flexible-extract` the last number in the text.

Local files: `gsm8k/gsm8k_test.jsonl` (+ `gsm8k/gsm8k_train.jsonl` for shots), records `{question, answer}` as in
openai/gsm8k; without them the hub copy.
"""

from pathlib import Path

from workbench.evals.filters import GSM8K_FILTERS
from workbench.evals.tasks.base import GenerationTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import jsonl_reader, line_numbers
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec

_read = jsonl_reader("question", "answer")


def read_gsm8k(path: Path) -> list[dict]:
    """GSM8K JSON lines; every `answer` must be a non-empty string (errors name the file and line)."""
    records = _read(path)
    for lineno, rec in zip(line_numbers(path), records):
        if not isinstance(rec["answer"], str) or not rec["answer"]:
            raise ValueError(f"{path}:{lineno}: field 'answer' must be a non-empty string, got {rec['answer']!r}")
    return records


PROMPT = dict(
    query=lambda d: f"Question: {d['question']}\nAnswer:", references=lambda d: d["answer"],
    until=("Question:", "</s>", "<|im_end|>"), generation_kwargs={"do_sample": False, "temperature": 0.0},
    filters=GSM8K_FILTERS, ignore_case=True, ignore_punctuation=False,
    regexes_to_ignore=(",", "\\$", "(?s).*#### ", "\\.$"),
)

SPECS = [
    TaskSpec(
        "gsm8k", GenerationTask, PROMPT, files=("gsm8k/gsm8k_test.jsonl",), reader=read_gsm8k,
        fewshot_files=("gsm8k/gsm8k_train.jsonl",), version=3.0, num_fewshot=5,  # gsm8k.yaml's num_fewshot
        hub=HubSource("openai/gsm8k", "main", "test", lambda r: {"question": r["question"], "answer": r["answer"]},
                      fewshot_split="train"),
        lm_eval=LmEvalTemplate(doc_to_text="Question: {{question}}\nAnswer:", doc_to_target="{{answer}}"),
    )
]
