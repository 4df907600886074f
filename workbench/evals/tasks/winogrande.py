"""WinoGrande, scored as lm-eval does ("partial scoring"): the sentence up to the blank, filled with each option,
is a context; the rest of the sentence is the continuation scored after each."""

from workbench.evals.tasks.base import PartialScoringTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import jsonl_reader
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def from_hub(r: dict) -> dict:
    blank = r["sentence"].index("_")
    return {
        "context_options": [r["sentence"][:blank] + r[f"option{i}"] for i in (1, 2)],
        "continuation": r["sentence"][blank + 1 :].strip(),
        "gold": int(r["answer"]) - 1,
    }


SPECS = [
    TaskSpec(
        "winogrande", PartialScoringTask,
        dict(contexts=lambda d: list(d["context_options"]), continuation=lambda d: d["continuation"].strip(),
             gold=lambda d: int(d["gold"])),
        files=("winogrande/winogrande_llmfoundry.jsonl", "winogrande/winogrande.jsonl"),
        reader=jsonl_reader("context_options", "continuation", "gold"),
        hub=HubSource("allenai/winogrande", "winogrande_xl", "validation", from_hub, fewshot_split="train"),
        # as lm-eval's winogrande: doc_to_text gives the gold index (an int: "multiple inputs"), the choices are
        # the contexts, the target the text after the blank
        lm_eval=LmEvalTemplate(doc_to_text="{{gold}}", doc_to_choice="context_options",
                               doc_to_target="{{continuation.strip()}}"),
    )
]
