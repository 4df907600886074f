"""Reports on an evaluation: side-by-side tables with published results, plots, HTML and Markdown pages.

- `tables`: `compare` (the run beside the published baselines), `model_info`, `report_models`, `page`.
- `plots`: `plot_scaling`, `plot_tasks`, `plot_learning_curve`, `plot` (matplotlib, `workbench.figures`).
- `markdown`: `to_markdown`; `html`: `to_html` (one self-contained page).

Every function takes an ``EvalResults`` (``workbench.evals.results``) or any object with ``table()`` and a
``config`` (see `tables`).
"""

from workbench.evals.report.html import CSS, to_html
from workbench.evals.report.markdown import to_markdown
from workbench.evals.report.plots import (
    FAMILY_LABELS,
    LOWER_IS_BETTER,
    PLOT_KINDS,
    SCALING_CURVES,
    SCALING_POINTS,
    plot,
    plot_learning_curve,
    plot_scaling,
    plot_tasks,
    report_figures,
)
from workbench.evals.report.tables import COMPARE_FAMILIES, Page, compare, model_info, page, report_models, results_table
from workbench.figures import figure_to_data_uri

__all__ = [
    "COMPARE_FAMILIES", "CSS", "FAMILY_LABELS", "LOWER_IS_BETTER", "PLOT_KINDS", "Page", "SCALING_CURVES",
    "SCALING_POINTS", "compare", "figure_to_data_uri", "model_info", "page", "plot", "plot_learning_curve",
    "plot_scaling", "plot_tasks", "report_figures", "report_models", "results_table", "to_html", "to_markdown",
]
