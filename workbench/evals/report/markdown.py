"""The Markdown report: the model's facts, its results, the comparison with published results, warnings."""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.evals.report.tables import fmt, page


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def to_markdown(results: Any, baselines: pd.DataFrame | None = None, **compare_kwargs: Any) -> str:
    """A Markdown report: the model's facts, its results table, the comparison with published results.

    Args:
        results: an ``EvalResults``.
        baselines, **compare_kwargs: passed to :func:`compare`; without ``models=``, the models of
            :func:`report_models` (nearest in size per family, and GPT-J-6B, GPT-NeoX-20B, GPT-3 175B).

    Returns:
        The Markdown text.
    """
    p = page(results, baselines, **compare_kwargs)
    parts = [f"# {p.title}", ""]
    parts += [f"- **{key}**: {value}" for key, value in p.facts]
    parts += ["", "## Results", "", _markdown_table(p.table), ""]
    parts += ["## Compared with published results", "", _markdown_table(p.comparison), ""]
    if p.sources:
        parts += ["Sources: " + "; ".join(p.sources) + ".", ""]
    if p.warnings:
        parts += ["## Warnings", ""] + [f"- {w}" for w in p.warnings] + [""]
    return "\n".join(parts)
