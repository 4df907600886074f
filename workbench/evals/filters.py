"""lm-eval's answer-extraction filters for generation tasks (lm_eval/filters/): a task's `filter_list` is a list of
named pipelines, each turning a document's generations into the answer its metric scores.

    pipeline = [("regex", {"regex_pattern": "#### (\\\\-?[0-9\\\\.\\\\,]+)"}), ("take_first", {})]
    apply_pipeline(pipeline, ["... #### 42"])   # -> "42"

Steps (lm-eval's names and arguments): `regex` (regex_pattern, group_select=0, fallback="[invalid]"),
`take_first`, `remove_whitespace` (strip), `lowercase`, `uppercase`. GSM8K's two pipelines are `GSM8K_FILTERS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

Step = tuple[str, dict[str, Any]]
Pipeline = Sequence[Step]

# lm-eval's gsm8k.yaml filter_list
GSM8K_FILTERS: dict[str, list[Step]] = {
    "strict-match": [("regex", {"regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}), ("take_first", {})],
    "flexible-extract": [("regex", {"group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"}),
                         ("take_first", {})],
}
# lm-eval's triviaqa.yaml filter_list
TRIVIAQA_FILTERS: dict[str, list[Step]] = {"remove_whitespace": [("remove_whitespace", {}), ("take_first", {})]}


def regex(resps: list[str], regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0,
          fallback: str = "[invalid]") -> list[str]:
    """lm-eval's `RegexFilter`: the `group_select`-th match of each response (the first non-empty group of a
    multi-group pattern), stripped; `fallback` where nothing matches."""
    pattern, out = re.compile(regex_pattern), []
    for resp in resps:
        matches = pattern.findall(resp if isinstance(resp, str) else "")
        if not matches:
            out.append(fallback)
            continue
        match = matches[group_select]
        if isinstance(match, tuple):
            match = next((m for m in match if m), fallback)
        out.append(match.strip())
    return out


STEPS = {
    "regex": regex,
    "remove_whitespace": lambda resps: [r.strip() for r in resps],
    "lowercase": lambda resps: [r.lower() for r in resps],
    "uppercase": lambda resps: [r.upper() for r in resps],
}


def check_pipeline(name: str, pipeline: Pipeline) -> None:
    """Raise ValueError naming the filter and step when `pipeline` has an unknown step or bad arguments."""
    for i, (step, kwargs) in enumerate(pipeline):
        if step != "take_first" and step not in STEPS:
            raise ValueError(f"filter {name!r} step {i}: unknown function {step!r}; allowed: take_first, "
                             + ", ".join(STEPS))
        if step == "regex":
            bad = set(kwargs) - {"regex_pattern", "group_select", "fallback"}
            if bad:
                raise ValueError(f"filter {name!r} step {i}: regex takes regex_pattern, group_select, fallback; "
                                 f"got {sorted(bad)}")
            try:
                re.compile(kwargs.get("regex_pattern", ""))
            except re.error as err:
                raise ValueError(f"filter {name!r} step {i}: bad regex_pattern ({err})") from None


def apply_pipeline(pipeline: Pipeline, resps: list[str]) -> Any:
    """One document's generations (`resps`, one per repeat) through a pipeline.

    Returns:
        A list of strings, or one string after `take_first` (lm-eval's `filtered_resps` entry).
    """
    out: Any = list(resps)
    for step, kwargs in pipeline:
        out = out[0] if step == "take_first" else STEPS[step](out, **kwargs)
    return out
