"""TriviaQA (no context), as lm-eval's triviaqa.yaml: "Question: {question}?\nAnswer:", greedy generation until
"\n", "." or ",", scored by exact match (case and punctuation ignored) against any alias."""

from workbench.evals.tasks.base import GenerationTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import jsonl_reader
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def references(doc: dict) -> list[str]:
    a = doc.get("answers", doc.get("aliases", doc.get("answer")))
    return [a] if isinstance(a, str) else list(a)


SPECS = [
    TaskSpec(
        "triviaqa", GenerationTask, dict(query=lambda d: f"Question: {d['question']}?\nAnswer:", references=references),
        files=("triviaqa/triviaqa.jsonl", "triviaqa/triviaqa_llmfoundry.jsonl"), reader=jsonl_reader("question"),
        hub=HubSource("mandarjoshi/trivia_qa", "rc.nocontext", "validation",
                      lambda r: {"question": r["question"], "answers": list(r["answer"]["aliases"])}, fewshot_split="train"),
        lm_eval=LmEvalTemplate(
            doc_to_text="Question: {{question}}?\nAnswer:",
            doc_to_target="{{answers if answers is defined else aliases if aliases is defined else "
            "([answer] if answer is string else answer)}}",
        ),
    )
]
