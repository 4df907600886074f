"""PIQA (physical commonsense), as lm-eval's piqa.yaml: "Question: {goal}\nAnswer:", then each solution."""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import MC_FIELDS, read_mc_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def query(doc: dict) -> str:
    # llm-foundry's query is "Question: {goal}\n"
    return "Question: " + doc["query"].removeprefix("Question: ").removesuffix("\n") + "\nAnswer:"


def from_hub(r: dict) -> dict:
    return {"query": f"Question: {r['goal']}\n", "choices": [r["sol1"], r["sol2"]], "gold": int(r["label"])}


SPECS = [
    TaskSpec(
        "piqa", MultipleChoiceTask, dict(MC_FIELDS, query=query),
        files=("piqa/piqa_llmfoundry.jsonl", "piqa/piqa.jsonl"), reader=read_mc_jsonl,
        hub=HubSource("baber/piqa", None, "validation", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(doc_to_text="{{query}}Answer:", doc_to_choice="choices", doc_to_target="gold"),
    )
]
