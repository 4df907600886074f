"""BoolQ, as lm-eval's boolq.yaml: "{passage}\nQuestion: {question}?\nAnswer:", then " no" / " yes"."""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import MC_FIELDS, read_mc_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def query(doc: dict) -> str:
    # llm-foundry's query is "Passage: {passage}\nQuestion: {question}?"
    return doc["query"].removeprefix("Passage: ") + "\nAnswer:"


def from_hub(r: dict) -> dict:
    return {"query": f"Passage: {r['passage']}\nQuestion: {r['question']}?", "choices": ["no", "yes"],
            "gold": int(r["label"])}


SPECS = [
    TaskSpec(
        "boolq", MultipleChoiceTask, dict(MC_FIELDS, query=query, choices=lambda d: ["no", "yes"], acc_norm=False),
        files=("boolq/boolq_llmfoundry.jsonl", "boolq/boolq.jsonl"), reader=read_mc_jsonl, version=2.0,
        hub=HubSource("aps/super_glue", "boolq", "validation", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(
            doc_to_text="{{query[9:] if query.startswith('Passage: ') else query}}\nAnswer:",
            doc_to_choice=["no", "yes"], doc_to_target="gold",
        ),
    )
]
