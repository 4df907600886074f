"""HellaSwag, as lm-eval's hellaswag.yaml: "{activity_label}: {ctx_a} {ctx_b capitalised}", then each ending,
all through lm-eval's text cleaning (`preprocess`); queries and choices equal lm-eval's `process_docs` on the same
records (tests/test_evals_hellaswag.py, all 10,042 validation items).

Which requests can still differ from lm-eval's: none from the hub copy (true ctx_a / ctx_b); from the local text
dump, whose ctx_a / ctx_b split is reconstructed (`read_hellaswag_text`), at most the 6 items (24 of 40,168
requests) whose context ends in an abbreviation followed by lower-case text."""

from __future__ import annotations

import bz2
import re
from pathlib import Path

from workbench.evals.tasks.base import MultipleChoiceTask
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.readers import Record
from workbench.evals.tasks.spec import LmEvalTemplate, TaskSpec


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag text cleaning (lm_eval/tasks/hellaswag/utils.py: preprocess)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # WikiHow artefact
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag_text(path: Path) -> list[Record]:
    """The HellaSwag text dump (6 lines per item: `label: ctx`, gold, 4 endings) -> lm-eval-like raw records.

    The dump joins ctx_a and ctx_b (`ctx = ctx_a + " " + ctx_b`, ctx_b not capitalised). lm-eval capitalises
    ctx_b (`str.capitalize`: first letter up, the rest down), so the split matters. ctx_b is recovered as the text
    after the last sentence end when that text starts in lower case (ActivityNet items: "... on a roof. he");
    otherwise ctx_b is taken as empty. A sentence end is ". ", "? " or "! " not closing an abbreviation
    ("u.s.", "e.g.", "a.m.", "dr.", "mr." ...: `ABBREVIATION`), so "born in the u.s. or one born ..." is not cut.

    What can still differ from lm-eval on the real ctx_a / ctx_b (the hub copy, read when the dump is absent, has
    them): the 6 of 10,042 validation items whose context ends in an abbreviation followed by lower-case text
    ("u.s. nationals.", "dr. brown's", "(e.g. toilet paper", "10 a.m. to 10 p.m.", "9 a.m.-6 p.m. ct.", "the u.s.
    or one born"): their ctx_b is taken as empty here, which is right unless the true ctx_b starts right after the
    abbreviation; so at most those 6 items (24 of 40,168 requests) can differ.
    """
    with bz2.open(path, "rt", encoding="utf-8") if path.suffix == ".bz2" else open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6 (label: ctx, gold, 4 endings)")
    out = []
    for i in range(0, len(lines), 6):
        head = lines[i]
        if ": " not in head:
            raise ValueError(f"{path}:{i + 1}: expected 'activity_label: context', got {head[:60]!r}")
        label, ctx = head.split(": ", 1)
        try:
            gold = int(lines[i + 1])
        except ValueError:
            raise ValueError(f"{path}:{i + 2}: gold {lines[i + 1]!r} is not an integer 0-3") from None
        cut = _last_sentence_end(ctx)
        tail = ctx[cut + 2 :] if cut >= 0 else ""
        if tail[:1].islower():
            ctx_a, ctx_b = ctx[: cut + 1], tail
        else:
            ctx_a, ctx_b = ctx, ""
        out.append(
            {"activity_label": label, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": lines[i + 2 : i + 6], "label": str(gold)}
        )
    return out


# words ending in "." that do not end a sentence: dotted initialisms ("u.s.", "e.g.", "a.m.") and titles / units
ABBREVIATION = re.compile(r"(?:^|[\s(\-])(?:[a-z]\.){2,}$|(?:^|[\s(])(?:dr|mr|mrs|ms|st|jr|sr|vs|etc|no|inc|ft|mt|"
                          r"approx|lbs|oz)\.$", re.I)


def _last_sentence_end(ctx: str) -> int:
    """Index of the punctuation of the last sentence end (". ", "? ", "! ") not closing an abbreviation; -1 if none."""
    for m in reversed(list(re.finditer(r"[.?!] ", ctx))):
        if ctx[m.start()] != "." or not ABBREVIATION.search(ctx[: m.start() + 1]):
            return m.start()
    return -1


def query(doc: dict) -> str:
    return hellaswag_preprocess(doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize())


def from_hub(r: dict) -> dict:
    return {k: r[k] for k in ("activity_label", "ctx_a", "ctx_b", "endings")} | {"label": int(r["label"])}


SPECS = [
    TaskSpec(
        "hellaswag", MultipleChoiceTask,
        dict(query=query, choices=lambda d: [hellaswag_preprocess(e) for e in d["endings"]],
             gold=lambda d: int(d["label"])),
        files=("hellaswag/hellaswag_val_full.txt.bz2", "hellaswag/hellaswag_val.txt"), reader=read_hellaswag_text,
        hub=HubSource("Rowan/hellaswag", None, "validation", from_hub, fewshot_split="train"),
        lm_eval=LmEvalTemplate(doc_to_text="{{query}}", doc_to_choice="choices", doc_to_target="{{label}}",
                               process_docs="lm_eval.tasks.hellaswag.utils:process_docs"),
    )
]
