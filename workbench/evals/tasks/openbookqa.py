"""OpenBookQA, as lm-eval's openbookqa.yaml: the question stem alone, then each choice (GPT-3 norms scored too)."""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource, lettered
from workbench.evals.tasks.readers import MC_FIELDS, read_mc_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def query(doc: dict) -> str:
    return doc["query"].removeprefix("Question: ")


def from_hub(r: dict) -> dict:
    return lettered(r["question_stem"], r["choices"], r["answerKey"])


SPECS = [
    TaskSpec(
        "openbookqa", MultipleChoiceTask, dict(MC_FIELDS, query=query, gpt3_norms=True),
        files=("openbookqa/openbookqa_llmfoundry.jsonl", "openbookqa/openbookqa.jsonl"), reader=read_mc_jsonl,
        hub=HubSource("allenai/openbookqa", "main", "test", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(
            doc_to_text="{{query[10:] if query.startswith('Question: ') else query}}",
            doc_to_choice="choices", doc_to_target="gold",
        ),
    )
]
