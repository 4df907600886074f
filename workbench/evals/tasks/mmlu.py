"""MMLU (hendrycksTest): 57 subjects and the group "mmlu", as lm-eval's mmlu/default template: a description,
the five dev-set examples in order (first-n), "{question}\nA. ...\nD. ...\nAnswer:", then " A" ... " D".

Groups as lm-eval's: "mmlu" holds the four categories "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences",
"mmlu_other" (lm-eval's SUBJECTS table in tasks/mmlu/_generate_configs.py), each scored as the mean over all its
documents (weight_by_size), version 2; subjects are shown by their lm-eval alias ("anatomy")."""

from __future__ import annotations

import csv
from pathlib import Path

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import Record
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec

MMLU_SUBJECTS = (
    "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology college_chemistry "
    "college_computer_science college_mathematics college_medicine college_physics computer_security "
    "conceptual_physics econometrics electrical_engineering elementary_mathematics formal_logic global_facts "
    "high_school_biology high_school_chemistry high_school_computer_science high_school_european_history "
    "high_school_geography high_school_government_and_politics high_school_macroeconomics high_school_mathematics "
    "high_school_microeconomics high_school_physics high_school_psychology high_school_statistics "
    "high_school_us_history high_school_world_history human_aging human_sexuality international_law jurisprudence "
    "logical_fallacies machine_learning management marketing medical_genetics miscellaneous moral_disputes "
    "moral_scenarios nutrition philosophy prehistory professional_accounting professional_law professional_medicine "
    "professional_psychology public_relations security_studies sociology us_foreign_policy virology world_religions"
).split()
LETTERS = ["A", "B", "C", "D"]
# lm-eval's category of each subject
_CATEGORY_SUBJECTS = {
    "stem": "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
    "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
    "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
    "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory "
    "professional_law world_religions",
}
MMLU_CATEGORY = {s: c for c, subjects in _CATEGORY_SUBJECTS.items() for s in subjects.split()}
# lm-eval lists the categories in this order under "mmlu" (tasks/mmlu/default/_mmlu.yaml)
GROUP_META = {"mmlu": {"alias": "mmlu", "version": 2}} | {
    f"mmlu_{c}": {"alias": c, "version": 2} for c in ("stem", "other", "social_sciences", "humanities")}


def read_mmlu_csv(path: Path) -> list[Record]:
    """MMLU CSV with header question,choice0..choice3,answer -> `{question, choices[4], answer}` records."""
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        need = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in need):
            raise ValueError(f"{path}: expected CSV header {','.join(need)}, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, 2):
            try:
                answer = int(row["answer"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: answer {row['answer']!r} is not an integer 0-3") from None
            out.append({"question": row["question"], "choices": [row[f"choice{i}"] for i in range(4)], "answer": answer})
    return out


def query(doc: dict) -> str:
    return doc["question"].strip() + "".join(f"\n{x}. {c}" for x, c in zip(LETTERS, doc["choices"])) + "\nAnswer:"


def from_hub(r: dict) -> dict:
    return {"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"])}


def _spec(subject: str) -> TaskSpec:
    description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return TaskSpec(
        f"mmlu_{subject}", MultipleChoiceTask,
        dict(query=query, choices=lambda d: LETTERS, gold=lambda d: int(d["answer"]), acc_norm=False,
             description=description, sampler="first_n"),
        files=(f"mmlu/test/{subject}_test.csv",), reader=read_mmlu_csv, fewshot_files=(f"mmlu/dev/{subject}_dev.csv",),
        hub=HubSource("cais/mmlu", subject, "test", from_hub, fewshot_split="dev"),
        lm_eval=LmEvalTemplate(
            doc_to_text="{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
            "D. {{choices[3]}}\nAnswer:",
            doc_to_choice=LETTERS, doc_to_target="answer",
        ),
        group=("mmlu", f"mmlu_{MMLU_CATEGORY[subject]}"), alias=subject,
    )


SPECS = [_spec(s) for s in MMLU_SUBJECTS]
