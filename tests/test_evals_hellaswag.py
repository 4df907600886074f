"""HellaSwag's prompts are lm-eval's: its own `process_docs` (lm_eval/tasks/hellaswag/utils.py) applied to records
with ctx_a / ctx_b gives our queries and choices; the text dump's ctx_a / ctx_b split does not cut at
abbreviations ("u.s.", "e.g.", "a.m.", "dr."), checked on made-up items with known ctx_a / ctx_b written as the
dump writes them, and over the whole dump (where only the documented ambiguous items remain)."""

from __future__ import annotations


import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("lm_eval")

# (activity_label, ctx_a, ctx_b) as in Rowan/hellaswag; ctx_b raw (lower case), as the dataset stores it
ITEMS = [
    ("Roof shingle removal", "A man is sitting on a roof.", "he"),
    ("Travel", "She flies from the u.s. to france with dr. smith.", "they"),
    ("Cooking", "Buy spices (e.g. cumin) at 9 a.m. sharp.", "the cook then"),
    ("Running", "A man runs past mr. jones on st. mary street!", "he waves at the u.s. flag and"),
    ("Home", "[header] How to clean a sink [title] Use vinegar.", ""),
    ("Sports", "Two teams play. Is it over?", "a player from the u.s. team"),
]


def _dump(items) -> str:
    # the text dump: "label: ctx_a ctx_b", the gold index, four endings
    return "".join(f"{a}: {b} {c}".rstrip() + "\n0\n" + "end one.\nend two.\nend three.\nend four.\n"
                   for a, b, c in items)


def _lm_eval_queries(records: list[dict]) -> list[dict]:
    from lm_eval.tasks.hellaswag.utils import process_docs

    ds = datasets.Dataset.from_list([{**r, "label": str(r["label"])} for r in records])
    return list(process_docs(ds))


def test_dump_split_keeps_abbreviations(tmp_path):
    from workbench.evals.tasks.hellaswag import read_hellaswag_text
    from workbench.evals.tasks.registry import TASKS

    path = tmp_path / "hellaswag_val.txt"
    path.write_text(_dump(ITEMS))
    records = read_hellaswag_text(path)
    assert [(r["ctx_a"], r["ctx_b"]) for r in records] == [(b, c) for _, b, c in ITEMS]
    truth = [{"activity_label": a, "ctx_a": b, "ctx_b": c, "endings": ["end one.", "end two.", "end three.",
              "end four."], "label": 0} for a, b, c in ITEMS]
    task = TASKS["hellaswag"].task("hellaswag", records, **TASKS["hellaswag"].prompt)
    for doc, want in zip(records, _lm_eval_queries(truth)):
        assert task.query(doc) == want["query"] and task.choices(doc) == want["choices"]


@pytest.mark.slow
def test_whole_dump_equals_lm_eval_process_docs(shared_data):
    from workbench.evals.tasks.hellaswag import ABBREVIATION, read_hellaswag_text
    from workbench.evals.tasks.registry import TASKS

    path = shared_data / "evals" / "hellaswag" / "hellaswag_val_full.txt.bz2"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    records = read_hellaswag_text(path)
    task = TASKS["hellaswag"].build(path.parents[1])
    theirs = _lm_eval_queries(records)
    assert len(records) == len(theirs) == 10042
    for doc, want in zip(records, theirs):
        assert task.query(doc) == want["query"] and task.choices(doc) == want["choices"]
        assert not (doc["ctx_b"] and ABBREVIATION.search(doc["ctx_a"]))  # never split after an abbreviation
    # the items the dump leaves ambiguous (an abbreviation, then lower-case text, at the end): as documented
    ambiguous = []
    for d in records:
        ctx = (d["ctx_a"] + " " + d["ctx_b"]).strip()
        cut = max(ctx.rfind(". "), ctx.rfind("? "), ctx.rfind("! "))  # the last ". " with no abbreviation rule
        if cut >= 0 and ctx[cut + 2 : cut + 3].islower() and ABBREVIATION.search(ctx[: cut + 1]):
            ambiguous.append(ctx)
    assert len(ambiguous) == 6
