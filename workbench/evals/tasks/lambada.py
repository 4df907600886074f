"""LAMBADA (OpenAI's version): predict a passage's last word; as lm-eval's lambada_openai.yaml, the context is
every word but the last, the continuation " " + the last word."""

from workbench.evals.tasks.base import LoglikelihoodTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import jsonl_reader
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec

SPECS = [
    TaskSpec(
        "lambada_openai", LoglikelihoodTask,
        dict(context=lambda d: " ".join(d["text"].split(" ")[:-1]), continuation=lambda d: " " + d["text"].split(" ")[-1]),
        files=("lambada/lambada_test.jsonl", "lambada_openai/lambada_test.jsonl"), reader=jsonl_reader("text"),
        # no training split: shots come from the test split, as in lm-eval
        hub=HubSource("EleutherAI/lambada_openai", "default", "test", lambda r: {"text": r["text"]}),
        lm_eval=LmEvalTemplate(doc_to_text="{{text.split(' ')[:-1]|join(' ')}}",
                               doc_to_target="{{' '+text.split(' ')[-1]}}"),
    )
]
