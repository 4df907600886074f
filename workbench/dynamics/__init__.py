"""Training dynamics: analyses swept over a model's training checkpoints (revisions), and their plots.

    import workbench
    workbench.revisions("demo")                          # ['step0', 'step16', ..., 'step5000']
    df = workbench.sweep("demo", analysis="heads")       # revision, step, tokens, detector, layer, head, score
    plot_head_scores(df, "induction", phases=[2400, 4000])
"""

from __future__ import annotations

from .analyses import ANALYSES, Analysis
from .plots import plot_head_scores, plot_metric_vs_step, plot_vs_pythia
from .sweep import IdenticalRevisionsWarning, revision_position, sweep

__all__ = [
    "ANALYSES", "Analysis", "IdenticalRevisionsWarning", "plot_head_scores", "plot_metric_vs_step", "plot_vs_pythia",
    "revision_position", "sweep",
]  # fmt: skip
