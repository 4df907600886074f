"""The HTML report: one self-contained page (facts, results, comparison, plots as embedded PNG), no network."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.evals.report.plots import report_figures
from workbench.evals.report.tables import fmt, page
from workbench.figures import figure_to_data_uri

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.facts td { text-align: left; } .warn { color: #a40; } .note { color: #666; font-size: 0.85em; }
"""


def to_html(results: Any, path: str | os.PathLike | None = None, baselines: pd.DataFrame | None = None, *,
            plots: bool = True, max_scaling_plots: int = 6, **compare_kwargs: Any) -> str:
    """One self-contained HTML page: facts, results, comparison, plots as embedded PNG; no network access.

    Args:
        results: an ``EvalResults``.
        path: where to write the page (written atomically); None to only return it.
        baselines, **compare_kwargs: passed to :func:`compare` (default models: :func:`report_models`).
        plots: include the plots.
        max_scaling_plots: at most this many score-against-size plots (one per task).

    Returns:
        The HTML text.
    """
    p = page(results, baselines, **compare_kwargs)
    esc = html.escape
    body = [f"<h1>{esc(p.title)}</h1>", '<table class="facts">']
    body += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in p.facts]
    body += ["</table>", "<h2>Results</h2>", p.table.to_html(index=False, na_rep="", float_format=fmt, escape=True)]
    body += ["<h2>Compared with published results</h2>",
             p.comparison.to_html(index=False, na_rep="", float_format=fmt, escape=True)]
    if p.sources:
        body.append('<p class="note">Sources: ' + esc("; ".join(p.sources)) + ".</p>")
    if plots:
        body.append("<h2>Plots</h2>")
        for caption, fig in report_figures(results, p.table, max_scaling_plots):
            body.append(f'<figure><img alt="{esc(caption)}" src="{figure_to_data_uri(fig)}">'
                        f"<figcaption>{esc(caption)}</figcaption></figure>")
    if p.warnings:
        items = "".join(f'<li class="warn">{esc(str(w))}</li>' for w in p.warnings)
        body.append(f"<h2>Warnings</h2><ul>{items}</ul>")
    head = f'<head><meta charset="utf-8"><title>{esc(p.title)}</title><style>{CSS}</style></head>'
    text = f'<!DOCTYPE html>\n<html lang="en">{head}\n<body>\n' + "\n".join(body) + "\n</body></html>\n"
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return text
