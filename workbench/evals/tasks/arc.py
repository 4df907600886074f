"""ARC-Easy and ARC-Challenge, as lm-eval's arc_easy.yaml: "Question: {question}\nAnswer:", then each choice.

Also scored with the GPT-3 paper's normalisations (`acc_per_token`, `acc_uncond`), which its ARC figures use.
"""

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource, lettered
from workbench.evals.tasks.readers import MC_FIELDS, read_mc_jsonl
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def query(doc: dict) -> str:
    return "Question: " + doc["query"].removeprefix("Question: ") + "\nAnswer:"


def from_hub(r: dict) -> dict:
    return lettered("Question: " + r["question"], r["choices"], r["answerKey"])


def _spec(name: str, config: str) -> TaskSpec:
    return TaskSpec(
        name, MultipleChoiceTask, dict(MC_FIELDS, query=query, gpt3_norms=True),
        files=(f"{name}/{name}_llmfoundry.jsonl", f"{name}/{name}.jsonl"), reader=read_mc_jsonl,
        hub=HubSource("allenai/ai2_arc", config, "test", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(doc_to_text="{{query}}\nAnswer:", doc_to_choice="choices", doc_to_target="gold"),
    )


SPECS = [_spec("arc_easy", "ARC-Easy"), _spec("arc_challenge", "ARC-Challenge")]
