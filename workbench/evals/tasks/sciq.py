"""SciQ, as lm-eval's sciq.yaml: "{support}\nQuestion: {question}\nAnswer:", then each of the four answers."""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import MC_FIELDS, read_mc_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def query(doc: dict) -> str:
    q = doc["query"]
    return q if q.rstrip().endswith("Answer:") else q.rstrip() + "\nAnswer:"


def from_hub(r: dict) -> dict:
    return {"query": f"{r['support'].lstrip()}\nQuestion: {r['question']}\nAnswer:",
            "choices": [r["distractor1"], r["distractor2"], r["distractor3"], r["correct_answer"]], "gold": 3}


SPECS = [
    TaskSpec(
        "sciq", MultipleChoiceTask, dict(MC_FIELDS, query=query),
        files=("sciq/sciq_llmfoundry.jsonl", "sciq/sciq.jsonl"), reader=read_mc_jsonl,
        hub=HubSource("allenai/sciq", None, "test", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(
            doc_to_text="{{query if query.rstrip().endswith('Answer:') else query.rstrip() ~ '\\nAnswer:'}}",
            doc_to_choice="choices", doc_to_target="gold",
        ),
    )
]
